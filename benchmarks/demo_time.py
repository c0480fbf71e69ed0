"""Wall time of `flexaudit demo --quick` and `flexaudit demo`, each in a fresh work directory and a fresh
privacy home, with the demo's own per-phase seconds and the fp32 matmul peak measured around each run.

    python benchmarks/demo_time.py [--only quick|full] > demo_time.json

    python benchmarks/demo_time.py --only quick --isa sse4.2     # as on a machine without AVX
    python benchmarks/demo_time.py --only quick --isa native --isa blas-sse4.2   # and the fit at 110 GFLOP/s

Targets (issue 14): the full demo at most 360 s and the quick one at most 90 s on a 2-core machine whose fp32
matmul peak is 110 GFLOP/s. Machines differ up to 3x, so each run is judged against its target scaled by the
peak measured just before it (a 230 GFLOP/s machine must finish the full demo within 360 * 110 / 230 = 172 s);
a peak that drops during the run means other work was competing for the cores.

Scaling by the peak assumes every second of the demo is matrix arithmetic; much of it is not (Python, tokenising,
reports). `--isa` measures instead: it caps the vector instructions torch, MKL and oneDNN may use (their own
environment switches, set for the demo and for the peak measured around it), so this machine runs with the lower
peak of an older or narrower CPU while its clock and everything else stay as they are. Several ISAs give the
demo's time as a function of the peak measured with each: with two or more runs of one demo the output has
the fit wall = a + b / peak (least squares; the peak is the mean of the two measured around a run) and its value
at 110 GFLOP/s.
Each run is also printed to stderr as one JSON line when it ends, so a long series interrupted keeps its runs.

The ISAs: `avx2` and `sse4.2` cap everything. `sse4.2` also sets ATen to its `default` kernels, which have no
vector code at all, as on a CPU without AVX2 (Sandy or Ivy Bridge reach 110 GFLOP/s on two cores with AVX). Against
this machine's AVX-512 kernels, products of two 200k-element tensors (most of a step's element-wise work, bound by
memory) run 1.2-1.4x slower there, reductions 3-4x, a cross-entropy over the anchor's logits 3.3x (20.8 ms forward
and backward against 6.3). `blas-sse4.2` caps only the matrix products (MKL and oneDNN at SSE4.2: a peak of 60-80
GFLOP/s on this machine, below the reference's) and leaves ATen's element-wise kernels at AVX2: a CPU with AVX2
whose arithmetic units are few or slow. Measured on `--quick` (session 18): at the same peak the two differ by
about 8%.
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

import numpy as np

REFERENCE_GFLOPS = 110.0
TARGET_SECONDS = {"quick": 90, "full": 360}  # on the reference machine
# Vector instructions torch (ATen's kernels), MKL and oneDNN (their matrix products) may use, capped by the
# switches each reads at start-up: the demo and every peak measured for it run under the same caps.
ISA = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse4.2": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "blas-sse4.2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
_PEAK = "from flexaudit.machine import matmul_peak; print(matmul_peak() / 1e9)"


def peak_gflops(env: dict[str, str]) -> float:
    """The fp32 matmul peak in a fresh process under `env` (the caps take effect only when torch loads)."""
    done = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip())


def time_demo(kind: str, isa: str = "native") -> dict:
    with tempfile.TemporaryDirectory(prefix=f"demo-{kind}-") as tmp:
        workdir, home = Path(tmp) / "demo", Path(tmp) / "home"
        command = [sys.executable, "-m", "flexaudit", "demo", "--workdir", str(workdir), "--json"]
        if kind == "quick":
            command.append("--quick")
        env = {**os.environ, **ISA[isa], "FLEXAUDIT_HOME": str(home)}
        before = peak_gflops(env)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        after = peak_gflops(env)
        if done.returncode != 0:
            raise SystemExit(f"demo {kind} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        result = json.loads(done.stdout)
    target = TARGET_SECONDS[kind] * REFERENCE_GFLOPS / before
    return {"isa": isa, "wall_seconds": round(wall, 1), "matmul_gflops_before": round(before, 1),
            "matmul_gflops_after": round(after, 1),
            "demo_matmul_gflops": result.get("machine", {}), "target_seconds_here": round(target, 1),
            "target_seconds_at_110_gflops": TARGET_SECONDS[kind], "meets_target": wall <= target,
            "seconds_scaled_to_110_gflops": round(wall * before / REFERENCE_GFLOPS, 1),
            "phases_seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
            "job_seconds": result.get("job_seconds", {})}  # each owner's training and audit, side by side


def fit_at_reference(runs: list[dict]) -> dict | None:
    """wall = a + b / peak by least squares over runs of one demo (peak: the mean of the two measured around
    each run), and its value at REFERENCE_GFLOPS; None with fewer than two distinct peaks."""
    inverse_peaks = [2 / (r["matmul_gflops_before"] + r["matmul_gflops_after"]) for r in runs]
    if len(set(inverse_peaks)) < 2:
        return None
    b, a = np.polyfit(inverse_peaks, [r["wall_seconds"] for r in runs], 1)
    return {"isas": [r["isa"] for r in runs], "a_seconds": round(float(a), 1), "b_gflop": round(float(b), 1),
            "seconds_at_110_gflops": round(float(a + b / REFERENCE_GFLOPS), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(TARGET_SECONDS), help="time one of the two")
    parser.add_argument("--isa", choices=list(ISA), action="append",
                        help="cap the vector instructions (repeatable: one run per ISA; default native)")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["quick", "full"]
    isas = args.isa or ["native"]
    # read before the runs, so that nothing after them can fail (OMP_NUM_THREADS may be set but empty)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "torch_threads": int(threads) if threads.isdigit() and int(threads) > 0 else None}
    results = {}
    for kind in kinds:
        for isa in isas:
            name = kind if isas == ["native"] else f"{kind} {isa}"
            results[name] = time_demo(kind, isa)
            print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)  # each run as it ends
    fits = {kind: fit for kind in kinds
            if (fit := fit_at_reference([r for name, r in results.items() if name.split()[0] == kind]))}
    print(json.dumps({"machine": machine, "results": results, **({"fits": fits} if fits else {})}, indent=2))


if __name__ == "__main__":
    main()
