"""Measure the method's open choices on the demo data; the defaults in flexaudit follow these numbers.

For each variant of expert training (router initialisation, router bias, public negatives for the router) it
trains the demo's experts against one anchor, merges them at every top-k, and evaluates held-out perplexity
per domain for the merged pool, each expert alone and the pool with each expert opted out. It prints JSON.

    python benchmarks/method_choices.py --workdir demo-output --variants all > choices.json

--workdir must hold a finished demo (data/ and anchor/ are reused; experts are retrained per variant under
<workdir>/choices/). On 2 CPU cores each variant takes a few minutes with the small preset.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from flexaudit.data import load_documents
from flexaudit.demo import EXPERT_DOMAINS, Row, _criteria
from flexaudit.moe.anchor import load_anchor, local_dir
from flexaudit.moe.evaluate import perplexity
from flexaudit.moe.expert import ExpertOptions, compose, load_package
from flexaudit.moe.merge import remove_experts
from flexaudit.moe.router_tuning import proxy_corpus, tune_router
from flexaudit.privacy.expert_training import train_expert

VARIANTS = {
    # name: (changes to ExpertOptions, router negatives from public data?, router tuning after merge?)
    "method": ({}, False, False),
    "method+bias": ({"router_bias": True}, False, False),
    "method+random-init": ({"router_init": "random"}, False, False),
    "method+rt": ({}, False, True),
    "negatives": ({"anchor_weight": 0.0}, True, False),
    "negatives+rt": ({"anchor_weight": 0.0}, True, True),
    "negatives+anchor": ({"anchor_weight": 1.0}, True, False),
    "negatives+anchor+rt": ({"anchor_weight": 1.0}, True, True),
    "negatives+anchor+random-init": ({"anchor_weight": 1.0, "router_init": "random"}, True, False),
    "negatives+anchor+embedder-init": ({"anchor_weight": 1.0, "router_init": "embedder"}, True, False),
    "negatives+anchor3": ({"anchor_weight": 3.0}, True, False),
    "negatives+anchor+rows8": ({"anchor_weight": 1.0, "public_rows": 8}, True, False),
    "negatives+bias": ({"router_bias": True, "anchor_weight": 0.0}, True, False),
    "negatives+random-init": ({"router_init": "random", "anchor_weight": 0.0}, True, False),
    "negatives+embedder-init": ({"router_init": "embedder", "anchor_weight": 0.0}, True, False),
}


def pool_table(alone: dict[str, Row], pool, score, domains: list[str]) -> dict:
    """The merged pool and the pool with each expert opted out (slot i+1 = EXPERT_DOMAINS[i]), scored with
    `score(model) -> {domain: perplexity}`, and the method's claims checked against `alone` (the anchor row and
    each expert alone)."""
    table = dict(alone)
    table["merged pool"] = Row("merged pool", "pool", score(pool))
    for slot, d in enumerate(EXPERT_DOMAINS, start=1):
        table[f"pool without {d}"] = Row(f"pool without {d}", "opt-out", score(remove_experts(pool, [slot])))
    checks = _criteria(table, domains, list(EXPERT_DOMAINS))
    return {
        "rows": {label: r.perplexity for label, r in table.items() if r.kind in ("pool", "opt-out")},
        "claims_passed": sum(c["passed"] for c in checks),
        "claims": len(checks),
        "failed": [f"{c['claim']}: {c['measured']}" for c in checks if not c["passed"]],
        "mean_pool_perplexity": round(sum(table["merged pool"].perplexity.values()) / len(domains), 3),
    }


def evaluate_variant(workdir: Path, name: str, *, steps: int, eval_docs: int, top_ks: list[int], reuse: bool) -> dict:
    changes, negatives, rt = VARIANTS[name]
    options = replace(ExpertOptions(steps=steps), **changes)
    anchor = load_anchor(workdir / "anchor")
    began = time.perf_counter()
    packages = []
    for d in EXPERT_DOMAINS:
        out = workdir / "choices" / name / d
        if reuse and (out / "manifest.json").is_file():
            packages.append(load_package(out, anchor=anchor))
            continue
        train_expert(anchor_dir=anchor.directory, data=workdir / "data" / f"{d}.jsonl", name=d, out=out,
                     options=options, subject_field=None if d == "code" else "subject",
                     public_data=workdir / "data" / "public.jsonl" if negatives else None,
                     overwrite=True, home=workdir / "owners" / d)
        packages.append(load_package(out, anchor=anchor))
    train_seconds = time.perf_counter() - began
    holdout = {"public": local_dir(anchor.directory) / "holdout.jsonl"}
    holdout |= {d: local_dir(workdir / "choices" / name / d) / "holdout.jsonl" for d in EXPERT_DOMAINS}
    texts = {d: [doc.text for doc in load_documents(p)][:eval_docs] for d, p in holdout.items()}

    def ppl(model) -> dict[str, float]:
        return {d: round(perplexity(model, anchor.tokenizer, t).perplexity, 3) for d, t in texts.items()}

    rows = {"anchor": Row("anchor", "anchor", ppl(anchor.model))}
    for d, p in zip(EXPERT_DOMAINS, packages):
        rows[f"anchor + {d}"] = Row(f"anchor + {d}", "expert", ppl(compose(anchor, [p], top_k=2)))
    by_k = {}
    if rt:
        sources = proxy_corpus(anchor, packages, public_texts=[d.text for d in load_documents(workdir / "data" / "public.jsonl")])
    for k in top_ks:
        pool = tune_router(anchor, packages, sources, top_k=k)[0] if rt else compose(anchor, packages, top_k=k)
        by_k[k] = pool_table(rows, pool, ppl, list(texts))
    return {
        "options": {**changes, "public_negatives": negatives, "router_tuning": rt, "steps": steps},
        "train_seconds": round(train_seconds, 1),
        "alone": {label: r.perplexity for label, r in rows.items()},
        "top_k": by_k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--variants", default="all", help="comma-separated names, or 'all': " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-docs", type=int, default=100)
    parser.add_argument("--top-k", default="1,2,3,4")
    parser.add_argument("--reuse", action="store_true", help="reuse experts already trained for a variant")
    args = parser.parse_args()
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    top_ks = [int(k) for k in args.top_k.split(",")]
    results = {}
    for name in names:
        try:
            results[name] = evaluate_variant(args.workdir, name, steps=args.steps, eval_docs=args.eval_docs, top_ks=top_ks,
                                             reuse=args.reuse)
        except Exception as exc:  # e.g. the embedder extra not installed: record it, go on
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    json.dump({"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()},
               "workdir": str(args.workdir), "variants": results}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
