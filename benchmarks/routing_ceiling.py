"""How good can the merged pool's routing get at this scale? Upper bounds that no fix to the router can beat.

The method's claims (the pool within 10% of each expert alone; opting one expert out moves the other domains by
less than 5%) need the router to send each domain's tokens to its own expert. The router is a linear function of
the anchor's hidden state at each layer. This benchmark measures, on a finished demo:

  probe          a linear classifier per layer trained with every domain's labels (information no owner has)
                 on the anchor's router inputs: held-out token accuracy per domain. No router row, however
                 trained, separates the domains better than this.
  one_vs_public  per owner, the classifier an owner can train alone (its domain against public text): the share
                 of every other domain's tokens it claims.
  pool_routing   in the merged pool: the share of each domain's tokens whose top-k includes each expert.
  oracle_tuning  the pool with its router rows tuned jointly on the owners' real training data (not offered by
                 flexaudit: it would pool private data), with the demo's table and claims (beside "merged", the
                 pool as merged; "alone" holds the anchor and each expert alone, scored once for both). Any router-only fix,
                 such as `merge --tune-router`, is bounded by this.

    python benchmarks/routing_ceiling.py --workdir demo-output > ceiling.json

A few minutes on 2 CPU cores with the small preset. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from method_choices import pool_table  # this folder is on sys.path when run as a script

from flexaudit.data import load_documents
from flexaudit.demo import EXPERT_DOMAINS, Row
from flexaudit.moe.anchor import load_anchor, local_dir
from flexaudit.moe.evaluate import perplexity
from flexaudit.moe.expert import compose, load_package
from flexaudit.moe.router_tuning import RouterTuning, tune_router
from flexaudit.moe.tokenizer import encode_documents

DOMAINS = ("public", *EXPERT_DOMAINS)


def _texts(workdir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(training texts, held-out texts) per domain: the owners' own member/holdout split, the anchor's for public."""
    holdout_files = {"public": local_dir(workdir / "anchor") / "holdout.jsonl"}
    holdout_files |= {d: local_dir(workdir / "experts" / d) / "holdout.jsonl" for d in EXPERT_DOMAINS}
    held = {d: [doc.text for doc in load_documents(p)] for d, p in holdout_files.items()}
    train = {}
    for d in DOMAINS:
        unseen = set(held[d])
        train[d] = [doc.text for doc in load_documents(workdir / "data" / f"{d}.jsonl") if doc.text not in unseen]
    return train, held


@torch.no_grad()
def _router_inputs(model, tokenizer, texts: list[str]) -> list[torch.Tensor]:
    """Per layer, the router inputs of every token of `texts` (first context window of each): (N, H)."""
    per_layer = [[] for _ in model.model.layers]
    for ids in encode_documents(tokenizer, texts):
        _, inputs = model(torch.tensor([ids[: model.config.max_seq_len]]), return_moe_inputs=True)
        for layer, h in enumerate(inputs):
            per_layer[layer].append(h[0])
    return [torch.cat(h) for h in per_layer]


def _fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int):
    """Multinomial logistic regression (standardised inputs, small L2), fitted with L-BFGS."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")
    xs = (x - mean) / std

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w + b, y) + 1e-4 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: ((z - mean) / std) @ w.detach() + b.detach()


def probes(anchor, train: dict, held: dict, *, documents: int) -> dict:
    feats_train = {d: _router_inputs(anchor.model, anchor.tokenizer, train[d][:documents]) for d in DOMAINS}
    feats_held = {d: _router_inputs(anchor.model, anchor.tokenizer, held[d][:documents]) for d in DOMAINS}
    out = {"probe": {}, "one_vs_public": {}}
    for layer in range(anchor.config.num_layers):
        x = torch.cat([feats_train[d][layer] for d in DOMAINS])
        y = torch.cat([torch.full((len(feats_train[d][layer]),), i) for i, d in enumerate(DOMAINS)])
        classify = _fit_linear(x, y, len(DOMAINS))
        out["probe"][f"layer {layer}"] = {
            d: round((classify(feats_held[d][layer]).argmax(-1) == i).float().mean().item(), 3) for i, d in enumerate(DOMAINS)
        }
        claims = {}
        for owner in EXPERT_DOMAINS:
            pub, own = feats_train["public"][layer], feats_train[owner][layer]
            labels = torch.cat((torch.zeros(len(pub), dtype=torch.long), torch.ones(len(own), dtype=torch.long)))
            mine = _fit_linear(torch.cat((pub, own)), labels, 2)
            claims[owner] = {d: round((mine(feats_held[d][layer]).argmax(-1) == 1).float().mean().item(), 3) for d in DOMAINS}
        out["one_vs_public"][f"layer {layer}"] = claims
    return out


@torch.no_grad()
def pool_routing(pool, tokenizer, held: dict, names: list[str], *, documents: int) -> dict:
    """Per domain and layer: the share of tokens whose top-k includes each expert."""
    out = {}
    for d in DOMAINS:
        shares = None
        count = 0
        for ids in encode_documents(tokenizer, held[d][:documents]):
            _, inputs = pool(torch.tensor([ids[: pool.config.max_seq_len]]), return_moe_inputs=True)
            chosen = torch.stack([layer.mlp.routing_weights(h)[0] > 0 for layer, h in zip(pool.model.layers, inputs)])  # (L, T, E)
            shares = chosen.sum(1) if shares is None else shares + chosen.sum(1)
            count += chosen.shape[1]
        out[d] = {f"layer {i}": dict(zip(names, (shares[i] / count).round(decimals=3).tolist())) for i in range(len(shares))}
    return out


def scorer(anchor, held: dict, *, documents: int):
    """score(model) -> held-out perplexity per domain."""
    texts = {d: held[d][:documents] for d in DOMAINS}
    return lambda model: {d: round(perplexity(model, anchor.tokenizer, t).perplexity, 3) for d, t in texts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a finished `flexaudit demo` directory")
    parser.add_argument("--documents", type=int, default=100, help="documents per domain for probes and tables")
    parser.add_argument("--tuning-steps", type=int, default=600)
    args = parser.parse_args()
    began = time.perf_counter()
    anchor = load_anchor(args.workdir / "anchor")
    packages = [load_package(args.workdir / "experts" / d, anchor=anchor) for d in EXPERT_DOMAINS]
    train, held = _texts(args.workdir)
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
              "workdir": str(args.workdir), "documents": args.documents}
    result |= probes(anchor, train, held, documents=args.documents)
    pool = compose(anchor, packages, top_k=2)
    result["pool_routing"] = pool_routing(pool, anchor.tokenizer, held, ["public", *EXPERT_DOMAINS], documents=args.documents)
    score = scorer(anchor, held, documents=args.documents)
    alone = {"anchor": Row("anchor", "anchor", score(anchor.model))}
    for d, p in zip(EXPERT_DOMAINS, packages):
        alone[f"anchor + {d}"] = Row(f"anchor + {d}", "expert", score(compose(anchor, [p], top_k=2)))
    result["alone"] = {label: r.perplexity for label, r in alone.items()}
    result["merged"] = pool_table(alone, pool, score, list(DOMAINS))
    # The owners' real training data as the tuning set: an upper bound, never something flexaudit does.
    sources = [encode_documents(anchor.tokenizer, train[d][:400]) for d in DOMAINS]
    tuning = RouterTuning(steps=args.tuning_steps)
    tuned, record = tune_router(anchor, packages, sources, top_k=2, tuning=tuning)
    result["oracle_tuning"] = {"steps": tuning.steps, "lr": tuning.lr, "loss_first": record["loss_first"],
                               "loss_last": record["loss_last"]}
    result["oracle_tuning"] |= pool_table(alone, tuned, score, list(DOMAINS))
    result["seconds"] = round(time.perf_counter() - began, 1)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
