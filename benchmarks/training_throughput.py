"""Training throughput per preset, as tokens/s and as a fraction of this machine's matrix-multiply peak.

    python benchmarks/training_throughput.py [--steps 20] > throughput.json

For each preset it times optimizer steps of (a) anchor pretraining (every parameter trained) and (b) expert
training (2 experts, only slot 1 trained, the anchor frozen), and counts the floating-point work of a step
analytically (2 FLOPs per multiply-add; backward = 2x forward for trained weights, 1x for frozen ones, whose
weight gradients are skipped). The peak is a large fp32 matmul timed in the same run on the same threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from flexaudit.machine import matmul_peak
from flexaudit.moe.anchor import PRESETS
from flexaudit.moe.expert import upcycle
from flexaudit.moe.model import FlexOlmo, causal_lm_loss


def forward_flops_per_token(cfg, seq_len: int) -> tuple[float, float]:
    """(FLOPs in weights every expert slot touches, FLOPs of one expert) per token, forward only."""
    H, I, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    kv = cfg.num_kv_heads * cfg.head_dim
    attention = 2 * (H * H + 2 * H * kv + H * H) + 2 * 2 * seq_len * H  # projections + scores and values (causal ~ half, counted full)
    expert = 2 * 3 * H * I
    router = 2 * H * cfg.num_experts
    shared = L * (attention + router) + 2 * H * V  # + LM head
    return shared, L * expert


def time_steps(model: FlexOlmo, batch: torch.Tensor, steps: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    mask = torch.ones_like(batch, dtype=torch.bool)
    for i in range(steps + 3):
        if i == 3:
            began = time.perf_counter()
        loss = causal_lm_loss(model, batch, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args()
    peak = matmul_peak()
    results = {}
    for name in args.presets.split(","):
        preset = PRESETS[name]
        cfg = preset.model_config(preset.vocab_size)
        torch.manual_seed(0)
        batch = torch.randint(0, cfg.vocab_size, (preset.batch_size, preset.seq_len + 1))
        tokens = preset.batch_size * preset.seq_len
        shared, expert = forward_flops_per_token(cfg, preset.seq_len)

        anchor = FlexOlmo(cfg)
        anchor_seconds = time_steps(anchor, batch, args.steps)
        anchor_flops = 3 * (shared + expert) * tokens  # forward + 2x backward, all weights trained

        training = upcycle(anchor, torch.zeros(cfg.num_layers, cfg.hidden_size), router_bias=False)
        training.freeze_anchor()
        expert_seconds = time_steps(training, batch, args.steps)
        # frozen weights: forward + input-gradient backward (2x); the trained expert: 3x; the frozen expert: 2x
        expert_flops = (2 * shared + 2 * expert + 3 * expert) * tokens

        results[name] = {
            "parameters": anchor.num_parameters(),
            "tokens_per_step": tokens,
            "anchor_pretraining": {
                "seconds_per_step": round(anchor_seconds, 4),
                "tokens_per_second": round(tokens / anchor_seconds),
                "fraction_of_matmul_peak": round(anchor_flops / anchor_seconds / peak, 3),
            },
            "expert_training": {
                "seconds_per_step": round(expert_seconds, 4),
                "tokens_per_second": round(tokens / expert_seconds),
                "fraction_of_matmul_peak": round(expert_flops / expert_seconds / peak, 3),
            },
        }
    print(json.dumps({
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine()},
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "presets": results,
    }, indent=2))


if __name__ == "__main__":
    main()
