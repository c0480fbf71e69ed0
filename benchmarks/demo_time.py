"""Wall time of `flexaudit demo --quick` and `flexaudit demo`, each in a fresh work directory and a fresh
privacy home, with the demo's own per-phase seconds and the fp32 matmul peak measured around each run.

    python benchmarks/demo_time.py [--only quick|full] > demo_time.json

Targets (issue 14): the full demo at most 360 s and the quick one at most 90 s on a 2-core machine whose fp32
matmul peak is 110 GFLOP/s. Machines differ up to 3x, so each run is judged against its target scaled by the
peak measured just before it (a 230 GFLOP/s machine must finish the full demo within 360 * 110 / 230 = 172 s);
a peak that drops during the run means other work was competing for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flexaudit.machine import matmul_peak

REFERENCE_GFLOPS = 110.0
TARGET_SECONDS = {"quick": 90, "full": 360}  # on the reference machine


def time_demo(kind: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"demo-{kind}-") as tmp:
        workdir, home = Path(tmp) / "demo", Path(tmp) / "home"
        command = [sys.executable, "-m", "flexaudit", "demo", "--workdir", str(workdir), "--json"]
        if kind == "quick":
            command.append("--quick")
        before = matmul_peak() / 1e9
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "FLEXAUDIT_HOME": str(home)})
        wall = time.perf_counter() - started
        after = matmul_peak() / 1e9
        if done.returncode != 0:
            raise SystemExit(f"demo {kind} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        result = json.loads(done.stdout)
    target = TARGET_SECONDS[kind] * REFERENCE_GFLOPS / before
    return {"wall_seconds": round(wall, 1), "matmul_gflops_before": round(before, 1), "matmul_gflops_after": round(after, 1),
            "demo_matmul_gflops": result.get("machine", {}), "target_seconds_here": round(target, 1),
            "target_seconds_at_110_gflops": TARGET_SECONDS[kind], "meets_target": wall <= target,
            "seconds_scaled_to_110_gflops": round(wall * before / REFERENCE_GFLOPS, 1),
            "phases_seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
            "job_seconds": result.get("job_seconds", {})}  # each owner's training and audit, side by side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(TARGET_SECONDS), help="time one of the two")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["quick", "full"]
    results = {kind: time_demo(kind) for kind in kinds}
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "torch_threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None}
    print(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
