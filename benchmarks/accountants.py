"""Accountant speed: epsilon per accountant and step count, and the noise search. JSON on stdout.

Target (issue 3): PRV epsilon for thousands of steps well under a second; a PRV noise search a few
seconds. Run on demand:

    python benchmarks/accountants.py [--out benchmarks/results/accountants.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def _timed(fn, repeats: int = 3) -> tuple[float, float]:
    best, value = float("inf"), float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return value, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from flexaudit.privacy import accountants as acc
    from flexaudit.privacy import epsilon, noise_multiplier_for

    epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=1, delta=1e-5, accountant="rdp")  # imports
    rows = []
    for steps in (100, 1_000, 10_000, 100_000):
        for name in ("prv", "rdp", "pld"):
            acc._rdp_one_step.cache_clear()  # time a cold (sigma, q) each repeat, as a new run would
            kw = dict(sample_rate=0.01, noise_multiplier=1.0, steps=steps, delta=1e-6, accountant=name)
            value, seconds = _timed(lambda: (acc._rdp_one_step.cache_clear(), epsilon(**kw))[1])
            rows.append({"what": "epsilon", "accountant": name, "sample_rate": 0.01, "noise_multiplier": 1.0,
                         "steps": steps, "delta": 1e-6, "epsilon": value, "seconds": seconds})
    for name in ("rdp", "prv", "pld"):
        kw = dict(target_epsilon=8.0, sample_rate=0.04, steps=2000, delta=1e-5, accountant=name)
        value, seconds = _timed(lambda: noise_multiplier_for(**kw), repeats=1)
        rows.append({"what": "noise_multiplier_for", **kw, "noise_multiplier": value, "seconds": seconds})
    prv_1000 = next(r for r in rows if r["what"] == "epsilon" and r["accountant"] == "prv" and r["steps"] == 1000)
    report = {
        "benchmark": "accountants",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "libraries": {name: acc.create_accountant(name).library_version() for name in ("prv", "pld")},
        "target": {"prv_epsilon_1000_steps_seconds_max": 1.0, "measured": prv_1000["seconds"],
                   "met": prv_1000["seconds"] < 1.0},
        "rows": rows,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
