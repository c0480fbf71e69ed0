"""How fast this machine multiplies matrices: the yardstick every reported time is given with.

Timings of the same work differ up to 3x between 2-core machines; the fp32 matrix-multiply peak measured in the
same run (as benchmarks/training_throughput.py does) says which kind of machine a time was taken on, and
whether other work was competing for the cores at that moment.
"""

from __future__ import annotations

import time


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n fp32 matrix product on torch's current threads (2 n^3 FLOPs each), after 3 warm-ups.

    Takes about 2 n^3 (repeats + 3) / peak seconds: 0.3 s at n=2048, repeats=3 on a 230 GFLOP/s machine."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - began)
