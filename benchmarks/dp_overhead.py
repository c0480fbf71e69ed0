"""Step time and peak memory of DP-SGD expert training over non-DP training, same logical batch and model.

    python benchmarks/dp_overhead.py [--steps 15] > dp_overhead.json

For each preset and sequence length, one child process per mode times optimizer steps on the same
batch: B units of T tokens (one window each). Non-DP: forward, backward, AdamW. DP: the same with
per-sample gradients (flexaudit's fused functions, and Opacus' hooks for comparison), per-unit clipping,
Gaussian noise, AdamW (flexaudit.privacy.dpsgd). The ratio is DP step time / non-DP step time; the
target is at most 1.15. Peak memory is the child's maximum
resident set size (ru_maxrss), which includes the Python and torch runtime (about the same in both).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

import torch

CHILD = r"""
import json, resource, sys, time, torch
from flexaudit.anchor import PRESETS
from flexaudit.expert import upcycle
from flexaudit.model import FlexOlmo, causal_lm_loss
from flexaudit.privacy.dpsgd import DPSettings, private_gradient
preset, seq_len, batch, steps, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
p = PRESETS[preset]
cfg = p.model_config(p.vocab_size).replace(max_seq_len=max(seq_len, p.seq_len))
torch.manual_seed(0)
model = upcycle(FlexOlmo(cfg), torch.randn(cfg.num_layers, cfg.hidden_size) * 0.01, router_bias=False)
model.freeze_anchor()
params = [q for q in model.parameters() if q.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
rows = torch.randint(2, cfg.vocab_size, (batch, seq_len + 1))
if mode.startswith("dp"):
    from flexaudit.privacy.dpsgd import PerSampleEngine
    engine = PerSampleEngine(model, mode.removeprefix("dp-"))
    dp = DPSettings(noise_multiplier=1.0, sample_rate=batch / 10_000, max_grad_norm=1.0, delta=1e-6,
                    unit="document", accountant="prv", units=10_000, physical_batch_size=batch)
    unit_rows = [[r.tolist()] for r in rows]
    tokens = [seq_len] * batch
    noise = torch.Generator().manual_seed(0)
    def step():
        private_gradient(engine, unit_rows, list(range(batch)), dp, noise, params, tokens, 0)
        opt.step(); opt.zero_grad(set_to_none=True)
else:
    mask = torch.ones_like(rows, dtype=torch.bool)
    def step():
        causal_lm_loss(model, rows, mask).backward()
        opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
seconds = (time.perf_counter() - t) / steps
print(json.dumps({"seconds_per_step": seconds, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(preset: str, seq_len: int, batch: int, steps: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, preset, str(seq_len), str(batch), str(steps), mode],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16, help="units (sequences) per logical batch")
    args = parser.parse_args()
    configs = [("tiny", 32), ("tiny", 64), ("small", 64), ("small", 128)]
    results = []
    for preset, seq_len in configs:
        base = measure(preset, seq_len, args.batch, args.steps, "plain")
        row = {"preset": preset, "seq_len": seq_len, "batch": args.batch, "non_dp": base}
        for engine in ("fused", "opacus"):
            dp = measure(preset, seq_len, args.batch, args.steps, f"dp-{engine}")
            row[f"dp_{engine}"] = {
                **dp,
                "step_time_ratio": round(dp["seconds_per_step"] / base["seconds_per_step"], 3),
                "peak_memory_ratio": round(dp["max_rss_mib"] / base["max_rss_mib"], 3),
            }
        results.append(row)
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "target_ratio": 1.15,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
