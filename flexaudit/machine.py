"""How fast this machine multiplies matrices: the yardstick every reported time is given with.

Timings of the same work differ up to 3x between 2-core machines; the fp32 matrix-multiply peak measured in the
same run (as benchmarks/training_throughput.py does) says which kind of machine a time was taken on, and
whether other work was competing for the cores at that moment.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def matmul_peak(n: int = 2048, repeats: int = 10, *, device: "str | torch.device" = "cpu",
                dtype: "torch.dtype | None" = None) -> float:
    """FLOP/s of an n x n matrix product (2 n^3 FLOPs each) on `device` in `dtype` (float32 by default), on torch's
    current threads for the CPU, after 3 warm-ups; a GPU is synchronised around the timed products.

    Takes about 2 n^3 (repeats + 3) / peak seconds: 0.3 s at n=2048, repeats=3 on a 230 GFLOP/s machine."""
    import torch

    device = torch.device(device)
    dtype = torch.float32 if dtype is None else dtype
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - began)
