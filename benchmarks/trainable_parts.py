"""Which of the anchor's parameters carry what an owner's expert learns: the anchor fine-tuned on one owner's
member documents with only one group of parameters trained, beside the owner's expert (which trains only its FFN
and router row, the method's rule) and the dense fine-tune (every parameter).

Each fine-tune repeats the expert's recorded schedule (steps, batch, sequence length, learning rate, warm-up,
seed) on the expert's member documents, as `flexaudit baseline dense` does, and is scored on the expert's
held-out documents (what it learned of the domain; the anchor's own perplexity there is the baseline of every
ratio) and on its first members (what it memorised: `members_perplexity`, and `held_out_over_members`, the gap
a membership or extraction attack feeds on). It prints JSON.

    python benchmarks/trainable_parts.py --workdir demo-output --domains code clinical > parts.json
    python benchmarks/trainable_parts.py --workdir demo-output --domains finance-leaky > leaky.json

The first measured why the code expert stayed below 2x before session 17 and the second which parameters hold
the careless owner's records (README, Limits). --workdir must hold a finished demo (its anchor and experts are
read; nothing there is changed). On 2 CPU cores each fine-tune of the quick demo takes 5-10 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from flexaudit.data import load_documents
from flexaudit.machine import matmul_peak
from flexaudit.moe.anchor import load_anchor, local_dir
from flexaudit.moe.dense import expert_schedule, fine_tune, member_texts
from flexaudit.moe.evaluate import perplexity
from flexaudit.moe.expert import compose, load_package

# name: which parameters train (by their name in the model)
PARTS = {
    "every parameter (dense fine-tune)": lambda name: True,
    "embeddings and output head": lambda name: name.startswith(("model.embed_tokens.", "lm_head.")),
    "FFN": lambda name: ".mlp.experts." in name,
    "attention": lambda name: ".self_attn." in name,
    "norms": lambda name: "norm." in name,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--domains", nargs="+", default=["code", "clinical", "finance"])
    ap.add_argument("--eval-documents", type=int, default=30)
    args = ap.parse_args()
    peak_before = matmul_peak(repeats=3)
    anchor = load_anchor(args.workdir / "anchor")
    out = {"workdir": str(args.workdir), "threads": torch.get_num_threads(), "python": platform.python_version(),
           "torch": torch.__version__, "domains": {}}
    for domain in args.domains:
        expert_dir = args.workdir / "experts" / domain
        package = load_package(expert_dir, anchor=anchor)
        settings = expert_schedule(package.manifest)
        texts = member_texts(local_dir(expert_dir))
        held_out = [d.text for d in load_documents(local_dir(expert_dir) / "holdout.jsonl")][: args.eval_documents]
        members = texts[: args.eval_documents]

        def scores(model, base: float | None) -> dict:
            ppl = perplexity(model, anchor.tokenizer, held_out).perplexity
            on_members = perplexity(model, anchor.tokenizer, members).perplexity
            return {"perplexity": round(ppl, 2), **({"anchor_over_it": round(base / ppl, 2)} if base else {}),
                    "members_perplexity": round(on_members, 2), "held_out_over_members": round(ppl / on_members, 2)}

        rows = {"anchor": scores(anchor.model, None)}
        base = rows["anchor"]["perplexity"]
        rows["expert (FFN and router row, the method)"] = scores(compose(anchor, [package], top_k=2), base)
        for part, trains in PARTS.items():
            began = time.perf_counter()
            with tempfile.TemporaryDirectory() as scratch:
                model, _ = fine_tune(anchor, texts, settings, trainable=trains, checkpoint_dir=Path(scratch),
                                     identity={"benchmark": "trainable_parts", "part": part})
            rows[part] = {**scores(model, base),
                          "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                          "seconds": round(time.perf_counter() - began, 1)}
        out["domains"][domain] = {"steps": settings.steps, "members": len(texts), "held_out": len(held_out),
                                  "members_scored": len(members),
                                  "rows": rows}
    out["matmul_peak_gflops"] = {"before": round(peak_before / 1e9, 1), "after": round(matmul_peak(repeats=3) / 1e9, 1)}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
