"""Several processes, one job: the little flexaudit needs from torch.distributed, in one place.

    torchrun --nproc-per-node 2 -m flexaudit expert train ...     # one process per GPU (or CPU share)

torchrun starts the processes and sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address); `session`
joins them into PyTorch's default process group (gloo for the CPU, NCCL for CUDA) for the length of a command
and tears it down after. The engines are PyTorch's own: DistributedDataParallel and FSDP2 (`fully_shard`) for
ordinary training (flexaudit.moe.training), plain collectives for DP-SGD's clipped sums
(flexaudit.privacy.dpsgd) and for splitting an audit's batches (attacks.sharding).

The rules every multi-process path follows:
  * The logical batch of step s is the same as in one process (a pure function of data, seed and s); rank r
    takes the contiguous share `World.share`, and gradients are summed so one and N processes compute the same
    update, up to the order of float32 additions.
  * Rank 0 alone writes (checkpoints, packages, the ledger, reports); `World.on_main` runs such work on rank 0
    and hands its result, or its error, to every rank, so no rank goes on after rank 0 failed. State moves
    between processes as JSON or safetensors bytes, never pickle.
  * Checkpoints hold full (unsharded) tensors, so a run killed with N processes resumes with any number.
  * Without torchrun (or with one process) there is no process group and every helper is a no-op: `SINGLE`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from flexaudit import errors
from flexaudit.errors import FlexauditError, InputError
from flexaudit.progress import NULL_PROGRESS, Progress

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes torchrun started for this job (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def local_device(spec: str | None) -> str:
    """The --device of this process. Under torchrun with several processes each process takes the GPU numbered
    by its LOCAL_RANK, so `auto` (with GPUs) and `cuda` mean cuda:LOCAL_RANK; an explicit cuda:N would put
    every process on one GPU and is refused. Without torchrun the spec is returned unchanged."""
    spec = (spec or "auto").strip().lower()
    if launched_processes() <= 1:
        return spec
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "cuda" or (spec == "auto" and torch.cuda.is_available()):
        return f"cuda:{local}"
    if spec.startswith("cuda:"):
        raise InputError(f"--device {spec} under torchrun: every process takes the GPU of its LOCAL_RANK; pass "
                         "--device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
    return spec


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank (0..size-1) among `size` processes. `SINGLE` without torchrun."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n items: [n*r//size, n*(r+1)//size). Shares differ by at most one
        item and cover 0..n-1 in order."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def progress(self, progress: Progress) -> Progress:
        """Only rank 0 shows progress (the callers report whole-job figures)."""
        return progress if self.main else NULL_PROGRESS

    # --- collectives (no-ops in one process) ------------------------------------------------------------
    def _device(self) -> torch.device:
        """Where a collective's tensor must live: NCCL talks to GPUs only, gloo to the CPU."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over every rank, in place; returns it."""
        if not self.distributed:
            return tensor
        device = self._device()
        if tensor.device == device:
            dist.all_reduce(tensor)
        else:
            moved = tensor.to(device)
            dist.all_reduce(moved)
            tensor.copy_(moved)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's `tensor` on every rank, in place; returns it."""
        if not self.distributed:
            return tensor
        device = self._device()
        moved = tensor if tensor.device == device else tensor.to(device)
        dist.broadcast(moved, src=0)
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes on every rank (other ranks pass None)."""
        if not self.distributed:
            return data or b""
        device = self._device()
        size = torch.tensor([len(data) if self.main else 0], dtype=torch.int64, device=device)
        dist.broadcast(size, src=0)
        n = int(size.item())
        if n == 0:
            return b""
        if self.main:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
        else:
            buffer = torch.empty(n, dtype=torch.uint8, device=device)
        dist.broadcast(buffer, src=0)
        return data if self.main else buffer.cpu().numpy().tobytes()

    def broadcast_json(self, value: Any = None) -> Any:
        """Rank 0's JSON-serialisable value on every rank."""
        if not self.distributed:
            return value
        payload = json.dumps(value).encode("utf-8") if self.main else None
        return json.loads(self.broadcast_bytes(payload).decode("utf-8"))

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and return its result on every rank (it must be JSON-serialisable). If `fn`
        raises on rank 0, every rank raises: rank 0 its own exception, the others the same flexaudit error (or
        an InputError naming an unexpected one) marked `raised_on_rank0`, which the command line does not print
        twice. In one process this is just fn()."""
        if not self.distributed:
            return fn()
        outcome, failure = None, None
        if self.main:
            try:
                outcome = {"value": fn()}
            except Exception as exc:
                failure = exc
                kind = type(exc).__name__ if isinstance(exc, FlexauditError) else "InputError"
                message = exc.message if isinstance(exc, FlexauditError) else \
                    f"rank 0 failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                outcome = {"error": kind, "message": message}
        outcome = self.broadcast_json(outcome)
        if failure is not None:
            raise failure
        if "error" in outcome:
            cls = getattr(errors, outcome["error"], InputError)
            exc = cls(outcome["message"]) if isinstance(cls, type) and issubclass(cls, FlexauditError) \
                else InputError(outcome["message"])
            exc.raised_on_rank0 = True
            raise exc
        return outcome["value"]


SINGLE = World()


def current() -> World:
    """The world of the default process group (the one `session` or the caller's own code started), else
    SINGLE."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size())
    return SINGLE


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[World]:
    """The job's process group for the length of a command: joined from torchrun's environment when it started
    several processes (gloo on the CPU, NCCL on CUDA, the backend chosen by this process's device), destroyed
    at the end. Without torchrun, or when the caller already made a group, nothing is started or destroyed."""
    if launched_processes() <= 1 or not dist.is_available() or dist.is_initialized():
        yield current()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield current()
    except Exception as exc:
        # an error met inside the job may be this rank's alone (e.g. out of memory on its GPU): the command line
        # reports it from every rank that met it, unless it is rank 0's error handed on (World.on_main)
        exc.raised_in_job = True
        raise
    else:
        # every rank past its last collective before any tears the group down: a rank that destroyed its gloo group
        # while the other was still writing its results aborted the other at teardown (SIGABRT, "terminate called
        # without an active exception", seen once with the machine loaded)
        dist.barrier()
    finally:
        dist.destroy_process_group()


# --- data-parallel and sharded training ---------------------------------------------------------------------

def check_fsdp(world: World, fsdp: bool) -> None:
    """Refuse --fsdp outside a torchrun job, before anything is loaded or recorded."""
    if fsdp and not world.distributed:
        raise InputError("--fsdp shards a model across processes: start the command with torchrun "
                         "--nproc-per-node N (N >= 2)")


def data_parallel(model: torch.nn.Module, world: World, *, fsdp: bool, device: torch.device | None = None) -> torch.nn.Module:
    """The module the training loop runs forward and backward through, across `world`'s processes.

    DDP (default): `model` itself, wrapped; DistributedDataParallel averages the trainable parameters'
    gradients over the ranks during backward (frozen parameters have none and cost nothing).
    FSDP (`fsdp=True`): a twin of `model` sharded with FSDP2 `fully_shard`, each layer's trainable expert (its
    FFN and router row, float32) one unit, the rest of the layer (frozen, in the anchor's dtype) another, and the
    embeddings and head the root's: every rank holds 1/size of every tensor between uses and the whole of one
    layer while computing it. The twin shares nothing that FSDP changes, so `model` stays a plain module; call
    `copy_trained(twin, model)` after training. The shards live on `device` (default: `model`'s): a model in
    host memory is sharded onto the GPUs, so no GPU ever holds all of it.
    """
    check_fsdp(world, fsdp)
    if not world.distributed:
        return model
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    twin = _twin(model)
    mesh = init_device_mesh(device.type, (world.size,))
    for layer in twin.model.layers:
        # a unit's trainable parameters must share one dtype (float32 master weights) while the frozen anchor
        # may be half precision: the trained expert slots and router rows are a unit of their own
        trainable = [m for m in (*layer.mlp.experts, *layer.mlp.gate.rows, layer.mlp.gate.bias)
                     if m is not None and any(p.requires_grad for p in m.parameters())]
        if trainable:
            fully_shard(trainable, mesh=mesh)
        fully_shard(layer, mesh=mesh)
    fully_shard(twin, mesh=mesh)
    return twin


def _twin(model: torch.nn.Module) -> torch.nn.Module:
    """A second module of the same class and config whose parameters are new Parameter objects over the same
    storage (nothing copied), with the same requires_grad; FSDP replaces the twin's parameters, never
    `model`'s."""
    with torch.device("meta"):
        twin = type(model)(model.config)
    state = {name: p.detach() for name, p in model.named_parameters()}
    twin.load_state_dict(state, strict=False, assign=True)
    if getattr(model.config, "tie_word_embeddings", False):
        twin.lm_head.weight = twin.model.embed_tokens.weight
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        q.requires_grad_(p.requires_grad)
    for name, buffer in model.named_buffers():
        module_name, _, attr = name.rpartition(".")
        twin.get_submodule(module_name).register_buffer(attr, buffer.clone(), persistent=False)
    return twin


def inner(net: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (an FSDP twin or a plain model is its own)."""
    return getattr(net, "module", net)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor from a sharded one (a collective: every rank must call it), else `t` itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like(target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """`full` (a whole tensor, e.g. from a checkpoint) laid out like `target`: this rank's shard when `target`
    is sharded, on `target`'s device."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(target, DTensor):
        return distribute_tensor(full.to(target.device_mesh.device_type), target.device_mesh, target.placements)
    return full.to(target.device)


def copy_trained(net: torch.nn.Module, model: torch.nn.Module) -> None:
    """After training an FSDP twin: its trained (sharded) parameters, whole, into `model` (every rank)."""
    if net is model or inner(net) is model:
        return
    trained = dict(net.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(full_tensor(trained[name].detach()).to(p.device))
