"""Where models run and in which precision: `--device auto|cpu|cuda|cuda:N`, `--dtype float32|bfloat16|float16`.

Every function that runs a model takes a `Placement`. CPU float32 is the default, never the assumption: weights
are read straight into the placement's dtype and device (flexaudit.moe.checkpoint), and training keeps the
parameters it updates in float32 (the optimizer's master copy) while the frozen anchor and the activations use
the placement's dtype under autocast, the usual mixed-precision recipe (Micikevicius et al. 2018, §3).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from flexaudit.errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """`auto`: the first CUDA device when one is usable, else the CPU. An unusable request is one line."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = 0 if spec == "cuda" else spec.removeprefix("cuda:")
        if not str(index).isdigit():
            raise InputError(f"unknown device {spec!r}: choose {DEVICE_CHOICES}")
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: this machine has no usable CUDA GPU; use --device cpu (or auto)")
        if int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
        return torch.device(f"cuda:{int(index)}")
    raise InputError(f"unknown device {spec!r}: choose {DEVICE_CHOICES}")


def resolve_dtype(spec: str | torch.dtype | None = "float32") -> torch.dtype:
    if isinstance(spec, torch.dtype):
        if spec not in DTYPES.values():
            raise InputError(f"unsupported dtype {spec}: choose {', '.join(DTYPES)}")
        return spec
    name = (spec or "float32").strip().lower().removeprefix("torch.")
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    name = aliases.get(name, name)
    if name not in DTYPES:
        raise InputError(f"unknown dtype {spec!r}: choose {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Placement:
    """A device and a compute dtype. `Placement()` is CPU float32."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "float32") -> "Placement":
        """From command-line spellings; raises InputError for an unknown or unusable device or dtype."""
        placement = cls(resolve_device(device), resolve_dtype(dtype))
        if placement.device.type == "cpu" and placement.dtype == torch.float16:
            # CPU kernels for float16 matmuls are slow and some are missing; bfloat16 has the same memory cost
            raise InputError("--dtype float16 needs a CUDA device; on the CPU use bfloat16 (or float32)")
        return placement

    @property
    def half(self) -> bool:
        return self.dtype != torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for training: matmuls in the placement's dtype, float32 master weights."""
        if not self.half:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        return f"{self.device} {dtype_name(self.dtype)}"


CPU_FLOAT32 = Placement()


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or host allocator) out-of-memory error: the caller may retry with a smaller batch."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and ("out of memory" in text or "can't allocate memory" in text
                                                             or isinstance(exc, MemoryError))

