"""Step time and peak memory of DP-SGD expert training over non-DP training, same logical batch and model.

    python benchmarks/dp_overhead.py [--steps 20] > dp_overhead.json

For each preset and sequence length: B units of T tokens (one window each) through the expert-training
model. Non-DP: forward, backward, AdamW. DP: the same with per-sample gradients, per-unit clipping,
Gaussian noise and AdamW (flexaudit.privacy.dpsgd), with flexaudit's fused per-sample functions (the
default) and with Opacus' hooks for comparison. The target is a step-time ratio of at most 1.15.

Timing: one process holds a non-DP and a DP copy of the model and alternates their steps, so both see the
same machine load; the ratio is of the median step times. Peak memory: each mode runs alone in a child
process and reports its maximum resident set size (which includes the Python and torch runtime).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

import torch

CHILD = r"""
import json, resource, statistics, sys, time, torch
from flexaudit.moe.anchor import PRESETS
from flexaudit.moe.expert import upcycle
from flexaudit.moe.model import FlexOlmo, causal_lm_loss
from flexaudit.privacy.dpsgd import DPSettings, PerSampleEngine, private_gradient

preset, seq_len, batch, steps, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(",")
p = PRESETS[preset]
cfg = p.model_config(p.vocab_size).replace(max_seq_len=max(seq_len, p.seq_len))
rows = torch.randint(2, cfg.vocab_size, (batch, seq_len + 1), generator=torch.Generator().manual_seed(1))

def make_step(mode):
    torch.manual_seed(0)
    model = upcycle(FlexOlmo(cfg), torch.randn(cfg.num_layers, cfg.hidden_size) * 0.01, router_bias=False)
    model.freeze_anchor()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    if mode == "plain":
        mask = torch.ones_like(rows, dtype=torch.bool)
        def step():
            causal_lm_loss(model, rows, mask).backward()
            opt.step(); opt.zero_grad(set_to_none=True)
        return step
    engine = PerSampleEngine(model, mode.removeprefix("dp-"))
    dp = DPSettings(noise_multiplier=1.0, sample_rate=batch / 10_000, max_grad_norm=1.0, delta=1e-6,
                    unit="document", accountant="prv", units=10_000, physical_batch_size=batch)
    unit_rows, tokens, noise = [[r.tolist()] for r in rows], [seq_len] * batch, torch.Generator().manual_seed(0)
    def step():
        private_gradient(engine, unit_rows, list(range(batch)), dp, noise, params, tokens, 0)
        opt.step(); opt.zero_grad(set_to_none=True)
    return step

fns = {m: make_step(m) for m in modes}
times = {m: [] for m in modes}
for i in range(steps + 3):
    for m, fn in fns.items():
        t = time.perf_counter(); fn(); dt = time.perf_counter() - t
        if i >= 3:
            times[m].append(dt)
print(json.dumps({"median_seconds": {m: statistics.median(v) for m, v in times.items()},
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(preset: str, seq_len: int, batch: int, steps: int, modes: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, preset, str(seq_len), str(batch), str(steps), ",".join(modes)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="units (sequences) per logical batch")
    args = parser.parse_args()
    configs = [("tiny", 32), ("tiny", 64), ("small", 64), ("small", 128)]
    engines = ["dp-fused", "dp-opacus"]
    results = []
    for preset, seq_len in configs:
        timing = child(preset, seq_len, args.batch, args.steps, ["plain", *engines])["median_seconds"]
        memory = {m: child(preset, seq_len, args.batch, 5, [m])["max_rss_mib"] for m in ["plain", *engines]}
        row = {"preset": preset, "seq_len": seq_len, "batch": args.batch,
               "non_dp": {"seconds_per_step": round(timing["plain"], 5), "max_rss_mib": round(memory["plain"], 1)}}
        for m in engines:
            row[m.replace("-", "_")] = {
                "seconds_per_step": round(timing[m], 5),
                "max_rss_mib": round(memory[m], 1),
                "step_time_ratio": round(timing[m] / timing["plain"], 3),
                "peak_memory_ratio": round(memory[m] / memory["plain"], 3),
            }
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "target_ratio": 1.15,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
