"""Inference over a merged pool: each expert run on its routed tokens only, against every expert on every token
(run on demand; prints JSON).

    python benchmarks/routed_inference.py [--device cpu|cuda] [--experts 7] [--top-k 5] [--hidden 512]
                                          [--ffn 1376] [--layers 2] [--tokens 8192] [--repeats 3]

A merged FlexOlmo selects top-k of its experts per token (the released FlexOlmo-7x7B-1T: 5 of 7; the paper's
8-expert model 4 of 8; reference/flexolmo.md). Training runs every expert on every token (flexaudit.moe.model.MoE:
its training models are top-2 of 2, and Opacus needs whole batches); inference (evaluation, routing traces, scoring
with flexaudit's own model) runs each expert on the tokens routed to it. This measures both on one model built from
a config (random weights, router rows drawn with unit scale so that routing is decisive; no parameter needs a
gradient, so neither path builds a graph), with and without one expert opted out (best of alternating passes), and
checks that both give the same logits. The fp32 matmul peak is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def main() -> None:
    import torch

    from flexaudit.machine import matmul_peak
    from flexaudit.moe import model as moe_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--experts", type=int, default=7)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=1376)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per forward pass (whole sequences)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (best of)")
    args = ap.parse_args()
    device = torch.device(args.device)
    peak_before = matmul_peak(repeats=3)
    torch.manual_seed(0)
    cfg = moe_model.ModelConfig(vocab_size=4096, hidden_size=args.hidden, intermediate_size=args.ffn,
                                num_layers=args.layers, num_heads=8, max_seq_len=args.seq_len,
                                num_experts=args.experts, top_k=args.top_k)
    model = moe_model.FlexOlmo(cfg).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        for layer in model.model.layers:
            for row in layer.mlp.gate.rows:
                row.weight.normal_(std=1.0)
    ids = torch.randint(0, cfg.vocab_size, (max(1, args.tokens // args.seq_len), args.seq_len), device=device)

    def forward(every_token: bool) -> tuple[float, torch.Tensor]:
        # grad mode on selects the training path (every expert on every token); no parameter needs a gradient,
        # so no graph is built either way
        with torch.set_grad_enabled(every_token):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            began = time.perf_counter()
            logits = model(ids)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return time.perf_counter() - began, logits

    def timed() -> dict[bool, tuple[float, torch.Tensor]]:
        """Best of --repeats passes each way, alternating, so that a busy moment costs both alike."""
        best = {}
        for _ in range(args.repeats):
            for every_token in (True, False):
                seconds, logits = forward(every_token)
                if every_token not in best or seconds < best[every_token][0]:
                    best[every_token] = (seconds, logits)
        return best

    out = {"device": str(device), "config": {"experts": args.experts, "top_k": args.top_k, "hidden": args.hidden,
                                              "ffn": args.ffn, "layers": args.layers},
           "tokens_per_pass": ids.numel(), "threads": torch.get_num_threads(), "runs": {}}
    for label, masked in (("pool", []), ("pool with expert 1 opted out", [1])):
        model.mask_experts(masked)
        best = timed()
        (every, every_logits), (routed, routed_logits) = best[True], best[False]
        out["runs"][label] = {
            "every_expert_tokens_per_s": round(ids.numel() / every), "routed_tokens_per_s": round(ids.numel() / routed),
            "speed_up": round(every / routed, 2),
            "max_logit_difference": float((every_logits - routed_logits).abs().max()),
        }
    out["matmul_peak_gflops"] = {"before": round(peak_before / 1e9, 1), "after": round(matmul_peak(repeats=3) / 1e9, 1)}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
