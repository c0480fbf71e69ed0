"""Scoring and decoding split over the processes of a torch.distributed job (torchrun), results on every process.

A `CausalLM` whose `shard` is set (`Shard.of_process_group()`) is one replica of a model that every process of
the default process group holds. `score_texts`, `generate` and the probabilistic attack's suffix scoring then
plan their batches exactly as one process would (longest first, packed by the row limit and the token budget),
each process runs every size-th batch of that plan, and every item's result is gathered on every process. Each
batch is therefore the batch a single process runs, with the same rows and padding, so the results equal a
single-process run's (bit for bit on the same hardware and thread count), and everything computed from them
(metrics, reports) is the same on every process. The attacks themselves need no change.

Progress shows the whole job: the batches advance a `Tally` as they would advance the progress task in one
process; after each round of batches (one per process) the processes add up their tallies with one small
all-reduce, and every process advances its task by that sum.

Results travel as numpy arrays in .npz bytes (loaded with allow_pickle=False), never pickle. This module uses
torch.distributed directly and nothing of flexaudit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .batching import DEFAULT_BATCH_TOKENS, plan_batches, run_batches


@dataclass(frozen=True)
class Shard:
    """This process's place among `size` processes that each hold a replica of the model: rank 0..size-1."""

    rank: int
    size: int

    @classmethod
    def of_process_group(cls) -> "Shard | None":
        """The default torch.distributed process group's shard for this process; None without a group or with
        one process (then nothing is split)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls(rank=dist.get_rank(), size=dist.get_world_size())

    def _device(self) -> torch.device:
        import torch.distributed as dist

        # NCCL moves tensors between GPUs only; gloo between CPUs
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def tally(self, task: Any) -> "Tally":
        """What the caller's batches advance instead of `task` (see `run_batches`)."""
        return Tally(task)

    def run_batches(self, widths: Sequence[int], run: Callable[[int, int], None], *, max_rows: int,
                    max_tokens: int | None = DEFAULT_BATCH_TOKENS, what: str = "batch", tally: "Tally") -> None:
        """This process's part of `run_batches(widths, run, ...)`: the same plan, batch k run where
        k % size == rank (with the same halving on out-of-memory inside a batch). `run` advances `tally` as it
        would advance its progress task in one process; after each round (one batch per process) the processes
        add up their tallies with one small all-reduce, which also keeps them in step, and every process
        advances the task by the sum, so the bar shows the whole job."""
        plan = plan_batches(widths, max_rows=max_rows, max_tokens=max_tokens)
        for r in range(-(-len(plan) // self.size)):
            k = r * self.size + self.rank
            if k < len(plan):
                start, stop = plan[k]
                run_batches(widths[start:stop], lambda a, b, s=start: run(s + a, s + b), max_rows=max_rows,
                            max_tokens=max_tokens, what=what)
            tally.flush(self._device())

    def gather(self, results: dict[int, tuple]) -> dict[int, tuple]:
        """Every process's {item: tuple of arrays (or None)} merged, on every process."""
        import torch.distributed as dist

        payload = _pack(results)
        device = self._device()
        size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
        sizes = [torch.zeros_like(size) for _ in range(self.size)]
        dist.all_gather(sizes, size)
        longest = int(max(s.item() for s in sizes))
        buffer = torch.zeros(longest, dtype=torch.uint8, device=device)
        buffer[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
        buffers = [torch.empty_like(buffer) for _ in range(self.size)]
        dist.all_gather(buffers, buffer)
        merged: dict[int, tuple] = {}
        for n, b in zip(sizes, buffers):
            merged.update(_unpack(b[: int(n.item())].cpu().numpy().tobytes()))
        return merged


def run_batches_on(shard: Shard | None, widths: Sequence[int], run: Callable[[int, int], None],
                   results: dict[int, tuple], *, max_rows: int, max_tokens: int | None = DEFAULT_BATCH_TOKENS,
                   what: str = "batch", task: Any, tally: Any) -> dict[int, tuple]:
    """`run_batches` in this process (shard None), or this process's part of it and then every process's results
    (`Shard.run_batches`, `Shard.gather`): `results`, which `run` fills with {item: tuple of arrays}, complete
    on every process. The batches run under inference mode (every caller scores or decodes), and the progress
    `task` is closed when they are done or one fails; `tally` is what `run` advances (`Shard.tally` of the task,
    or the task itself)."""
    try:
        with torch.inference_mode():
            if shard is None:
                run_batches(widths, run, max_rows=max_rows, max_tokens=max_tokens, what=what)
                return results
            shard.run_batches(widths, run, max_rows=max_rows, max_tokens=max_tokens, what=what, tally=tally)
            return shard.gather(results)
    finally:
        task.close()


class Tally:
    """A progress task's stand-in on one process: counts the items (and tokens, if given) its batches finish
    until `flush` adds every process's counts to the real task."""

    def __init__(self, task: Any) -> None:
        self.task, self.items, self.tokens = task, 0, None

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.items += n
        if "tokens" in fields:
            self.tokens = (self.tokens or 0) + int(fields["tokens"])

    def close(self) -> None:
        pass

    def flush(self, device: torch.device) -> None:
        """Collective: every process's counts since the last flush summed, and the task advanced by them."""
        import torch.distributed as dist

        t = torch.tensor([self.items, self.tokens or 0, self.tokens is not None], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        items, tokens, with_tokens = t.cpu().tolist()
        self.task.advance(int(items), **({"tokens": int(tokens)} if with_tokens else {}))
        self.items, self.tokens = 0, None


def _pack(results: dict[int, tuple]) -> bytes:
    """{item: (array | None, ...)} as .npz bytes: key "i.j" per array, "items" and "arity" for the layout."""
    arrays: dict[str, np.ndarray] = {}
    arity = max((len(v) for v in results.values()), default=0)
    for i, values in results.items():
        for j, a in enumerate(values):
            if a is not None:
                arrays[f"{i}.{j}"] = np.asarray(a)
    buffer = io.BytesIO()
    np.savez(buffer, items=np.asarray(sorted(results), dtype=np.int64), arity=np.asarray(arity), **arrays)
    return buffer.getvalue()


def _unpack(payload: bytes) -> dict[int, tuple]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        arity = int(z["arity"])
        return {int(i): tuple(z[f"{i}.{j}"] if f"{i}.{j}" in z.files else None for j in range(arity))
                for i in z["items"]}

