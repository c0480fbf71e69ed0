"""Wall time of `flexaudit demo --quick` and `flexaudit demo`, each in a fresh work directory and a fresh
privacy home, with the demo's own per-phase seconds.

    python benchmarks/demo_time.py [--only quick|full] > demo_time.json

Targets (issue 2): the full demo under 600 s and the quick one under 120 s on the project's 2-core machine.
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

TARGET_SECONDS = {"quick": 120, "full": 600}


def time_demo(kind: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"demo-{kind}-") as tmp:
        workdir, home = Path(tmp) / "demo", Path(tmp) / "home"
        command = [sys.executable, "-m", "flexaudit", "demo", "--workdir", str(workdir), "--json"]
        if kind == "quick":
            command.append("--quick")
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "FLEXAUDIT_HOME": str(home)})
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"demo {kind} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        phases = json.loads(done.stdout)["seconds"]
    return {"wall_seconds": round(wall, 1), "target_seconds": TARGET_SECONDS[kind],
            "meets_target": wall < TARGET_SECONDS[kind], "phases_seconds": {k: round(v, 1) for k, v in phases.items()}}


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
