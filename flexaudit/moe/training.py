"""The training loop shared by anchor pretraining and expert training, with exact resume.

Determinism contract: the batch at step s is a pure function of (token data, seed, s), the learning rate is a
pure function of s, and a checkpoint holds every parameter being trained and the full optimizer state. A run
killed at any point and resumed from its last checkpoint therefore replays the same steps and ends with
bit-identical weights to an uninterrupted run (same machine, same thread count).

Checkpoints are safetensors plus JSON (never pickle), written to a fresh directory and published by atomically
rewriting a LATEST pointer, so a crash while saving leaves the previous checkpoint intact.

Under torchrun (flexaudit.moe.distributed) the same loop runs data-parallel: every rank builds the logical batch
of step s and takes its contiguous share of the rows (owner rows and public rows shared separately), each
rank's loss is its rows' part of the logical batch's loss (sums over the rank's rows, divided by the logical
batch's counts), and DistributedDataParallel (or FSDP2 with `fsdp=True`) sums the gradients, so N processes take
the same steps as one, up to the order of float32 additions. Rank 0 alone writes checkpoints, which hold whole
tensors and no trace of the process count: a run resumes with any number of processes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from flexaudit.errors import InputError
from flexaudit.fsutil import atomic_write_json, atomic_write_text, save_tensors, staged_directory
from flexaudit.moe import distributed
from flexaudit.moe.device import CPU_FLOAT32, Placement
from flexaudit.moe.distributed import SINGLE, World
from flexaudit.moe.model import FlexOlmo, causal_lm_loss, token_nll
from flexaudit.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int  # sequences per optimizer step
    seq_len: int  # tokens per sequence
    lr: float
    warmup_steps: int
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to min_lr_ratio * lr at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T+1) token ids; inputs and next-token targets come from the same rows
    router_only: torch.Tensor | None = None  # (B,) rows that train only the router (public negatives)

    def share(self, world: World) -> "Batch":
        """This rank's rows: its contiguous share of the owner rows and of the public rows, in order."""
        if not world.distributed:
            return self
        if self.router_only is None:
            return Batch(self.ids[world.share(len(self.ids))])
        own, pub = self.ids[~self.router_only], self.ids[self.router_only]
        own, pub = own[world.share(len(own))], pub[world.share(len(pub))]
        router_only = torch.cat((torch.zeros(len(own), dtype=torch.bool), torch.ones(len(pub), dtype=torch.bool)))
        return Batch(torch.cat((own, pub)), router_only)


class PackedStream:
    """Documents concatenated (each ending in end-of-text) in a seeded order per epoch, cut into rows.

    Row r of the infinite stream lies in epoch r // rows_per_epoch; batch s is rows [s*B, (s+1)*B). The
    tail of each epoch that does not fill a row is dropped (at most seq_len tokens per epoch).
    """

    def __init__(self, documents: list[list[int]], *, seq_len: int, batch_size: int, seed: int):
        self.documents = [np.asarray(d, dtype=np.int64) for d in documents if len(d)]
        self.row_len = seq_len + 1  # inputs and next-token targets come from the same row
        self.batch_size, self.seed = batch_size, seed
        self.total_tokens = int(sum(len(d) for d in self.documents))
        self.rows_per_epoch = self.total_tokens // self.row_len
        if self.rows_per_epoch == 0:
            raise InputError(
                f"too little data: {self.total_tokens} tokens cannot fill one sequence of {self.row_len}; "
                "add documents or lower the sequence length"
            )
        self._epochs: dict[int, np.ndarray] = {}

    def _epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            if len(self._epochs) > 2:
                self._epochs.pop(min(self._epochs))
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.documents))
            self._epochs[epoch] = np.concatenate([self.documents[i] for i in order])
        return self._epochs[epoch]

    def rows(self, step: int) -> torch.Tensor:
        rows = []
        for r in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, idx = divmod(r, self.rows_per_epoch)
            rows.append(self._epoch(epoch)[idx * self.row_len : (idx + 1) * self.row_len])
        return torch.from_numpy(np.stack(rows))  # (B, T+1)

    def batch(self, step: int) -> Batch:
        return Batch(self.rows(step))

    def epochs_for(self, steps: int) -> float:
        """Passes over the owner's data that `steps` steps make."""
        return steps * self.batch_size / self.rows_per_epoch


class RouterContrastStream:
    """The owner's rows plus a few rows of public text on which the expert may not learn the public text.

    Trained on its own data alone, a router row only ever sees tokens where its expert should win, so it
    learns to claim every token; after merging it then takes tokens from public text and from other
    owners. Public rows are negatives: the expert's output is detached there, so the expert does not learn
    the public text, while the router row learns where the public expert is better. With anchor_weight > 0
    the expert is also pulled towards the public expert's output on public rows (squared error relative to
    the public output's size): off its domain it stays a copy of the public FFN, so a token routed to it by
    mistake after merging is handled as the anchor would.
    """

    def __init__(self, owner: PackedStream, public: PackedStream, *, anchor_weight: float = 0.0):
        if owner.row_len != public.row_len:
            raise ValueError("owner and public rows must have the same length")
        self.owner, self.public, self.anchor_weight = owner, public, anchor_weight

    def batch(self, step: int) -> Batch:
        own, pub = self.owner.rows(step), self.public.rows(step)  # (B_own, T+1), (B_pub, T+1)
        router_only = torch.cat((torch.zeros(len(own), dtype=torch.bool), torch.ones(len(pub), dtype=torch.bool)))
        return Batch(torch.cat((own, pub)), router_only)

    def epochs_for(self, steps: int) -> float:
        return self.owner.epochs_for(steps)


@dataclass
class TrainResult:
    steps: int
    tokens: int
    final_loss: float
    mean_loss_last_10pct: float
    seconds: float  # wall time of the steps run in this process (not those replayed from a checkpoint)
    resumed_from: int  # 0 for a fresh run
    epochs: float


def _loss(model: FlexOlmo, batch: Batch, anchor_weight: float) -> torch.Tensor:
    batch = Batch(batch.ids.to(model.device),
                  batch.router_only.to(model.device) if batch.router_only is not None else None)
    mask = torch.ones_like(batch.ids, dtype=torch.bool)
    if batch.router_only is None or anchor_weight == 0:
        return causal_lm_loss(model, batch.ids, mask, batch.router_only)
    logits, router_inputs = model(batch.ids, router_only=batch.router_only, return_moe_inputs=True, next_token_only=True)
    loss = token_nll(logits, batch.ids, mask) / mask[:, 1:].sum()
    drift = 0.0
    for layer, h in zip(model.model.layers, router_inputs):
        public = h[batch.router_only].detach()  # (B_pub, T, H)
        anchor_out = layer.mlp.experts[0](public).detach()
        drift = drift + (layer.mlp.experts[1](public) - anchor_out).pow(2).mean() / anchor_out.pow(2).mean()
    return loss + anchor_weight * drift / len(router_inputs)


def _shared_loss(net: torch.nn.Module, batch: Batch, anchor_weight: float, world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of the logical batch's loss (what _loss computes on the whole batch in one process):
    (what to back-propagate, the part itself). Sums over this rank's rows are divided by the whole batch's
    counts, so the parts add up to the loss; the anchor pull's denominators (sums over every public row) are
    summed across ranks first. DDP and FSDP average gradients over the ranks, hence the factor world.size."""
    model = distributed.inner(net)
    part = batch.share(world)
    ids = part.ids.to(model.device)
    router_only = part.router_only.to(model.device) if part.router_only is not None else None
    mask = torch.ones_like(ids, dtype=torch.bool)
    positions = batch.ids.shape[0] * (batch.ids.shape[1] - 1)  # every row's every target, as causal_lm_loss counts
    if batch.router_only is None or anchor_weight == 0:
        loss = token_nll(net(ids, router_only=router_only, next_token_only=True), ids, mask) / positions
        return loss * world.size, loss
    logits, drift = net(ids, router_only=router_only, return_public_drift=True, next_token_only=True)
    loss = token_nll(logits, ids, mask) / positions
    # _loss: mean((y1 - y0)^2) / mean(y0^2) over every public row; the element counts cancel, so each rank adds
    # its rows' squared differences over the whole batch's sum of y0^2
    anchor_sq = world.all_reduce_(torch.stack([a for _, a in drift]).detach())  # (L,)
    loss = loss + anchor_weight * sum(d / a for (d, _), a in zip(drift, anchor_sq)) / len(drift)
    return loss * world.size, loss


# --- checkpoints -----------------------------------------------------------------------------------------

def _fault_point(name: str) -> None:
    """Crash-consistency tests set FLEXAUDIT_FAULT=<name> to kill the process abruptly at this point."""
    if os.environ.get("FLEXAUDIT_FAULT") == name:
        os._exit(137)


class Checkpoints:
    def __init__(self, directory: Path):
        self.directory = directory

    def latest(self) -> Path | None:
        pointer = self.directory / "LATEST"
        if not pointer.is_file():
            return None
        path = self.directory / pointer.read_text().strip()
        return path if (path / "meta.json").is_file() else None

    def save(self, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        name = f"step-{step:08d}"
        with staged_directory(self.directory / name, replace=True) as tmp:
            save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
            _fault_point(f"checkpoint-write:{step}")
            atomic_write_json(tmp / "meta.json", meta)
        _fault_point(f"checkpoint-publish:{step}")
        atomic_write_text(self.directory / "LATEST", name + "\n")
        for old in self.directory.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        path = self.latest()
        if path is None:
            return None
        meta = json.loads((path / "meta.json").read_text())
        with safe_open(str(path / "state.safetensors"), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        return tensors, meta


def _optimizer_tensors(opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    out = {}
    for p, state in opt.state.items():
        for key, value in state.items():
            out[f"optim.{names[id(p)]}.{key}"] = value if torch.is_tensor(value) else torch.tensor(float(value))
    return out


def adamw(groups: list, *, lr: float, sharded: bool = False) -> torch.optim.AdamW:
    """AdamW with OLMo-2's betas (0.9, 0.95) and eps 1e-8, the optimizer of every training loop here; `groups`
    as torch.optim takes them. torch's fused kernel (one pass over each tensor instead of a dozen element-wise
    ops: an anchor step of the `mini` preset on 2 CPU threads about 47 ms instead of 51-57) unless the parameters
    are sharded (FSDP's DTensors keep the default implementation)."""
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=not sharded)


def _load_optimizer(opt: torch.optim.Optimizer, params: list[tuple[str, torch.nn.Parameter]], tensors: dict) -> None:
    # the step count is a scalar on the CPU, or beside the parameter for the fused kernel, as the optimizer keeps it
    fused = bool(opt.defaults.get("fused"))
    for name, p in params:
        prefix = f"optim.{name}."
        # moments live beside their parameter (sharded like it under FSDP)
        state = {k[len(prefix):]: distributed.like(p, v) if v.shape == p.shape
                 else v.to(p.device, copy=True) if fused else v.clone()
                 for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            opt.state[p] = state


def restore_or_reset(checkpoints: Checkpoints, identity: dict, params: list[tuple[str, torch.nn.Parameter]],
                     opt: torch.optim.Optimizer, *, resume: bool, world: World = SINGLE) -> tuple[dict, dict] | None:
    """With `resume`, load the latest checkpoint of this exact run (same identity) into the parameters and the
    optimizer and return its (tensors, meta); otherwise, or with nothing saved, start clean: None, and any
    checkpoints of an earlier run are removed. Under torchrun rank 0 reads (or removes) the checkpoint and every
    rank gets its tensors (whole; each rank keeps its shard of sharded parameters), whatever the number of
    processes that wrote it."""
    loaded: dict = {}

    def read() -> dict | None:
        saved = checkpoints.load() if resume else None
        if saved is None:
            if checkpoints.directory.exists():
                shutil.rmtree(checkpoints.directory)
            return None
        tensors, meta = saved
        if meta.get("identity") != identity:
            raise InputError(
                f"the checkpoint in {checkpoints.directory} belongs to a run with other settings or data: "
                "resume with the original arguments, or start over without --resume"
            )
        loaded["tensors"] = tensors
        return meta

    meta = world.on_main(read)
    if meta is None:
        return None
    tensors = loaded.get("tensors")
    if world.distributed:  # safetensors bytes, never pickle
        tensors = load_safetensors(world.broadcast_bytes(save_safetensors(tensors) if world.main else None))
    with torch.no_grad():
        for n, p in params:
            p.copy_(distributed.like(p, tensors[f"param.{n}"]))
    _load_optimizer(opt, params, tensors)
    return tensors, meta


def save_checkpoint(checkpoints: Checkpoints, step: int, state: dict[str, torch.Tensor], meta: dict,
                    world: World = SINGLE) -> None:
    """Every rank calls this (whole tensors are gathered from shards collectively); rank 0 writes, and an error
    there stops every rank."""
    whole = {k: distributed.full_tensor(v) for k, v in state.items()}
    world.on_main(lambda: checkpoints.save(step, whole, meta))


# --- the loop --------------------------------------------------------------------------------------------

def train(
    model: FlexOlmo,
    stream: PackedStream | RouterContrastStream,
    settings: TrainSettings,
    *,
    checkpoint_dir: Path,
    resume: bool,
    identity: dict,
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
    description: str = "training",
    fsdp: bool = False,
) -> TrainResult:
    """Train the parameters of `model` that require grad, on the model's device. `identity` (settings, data
    fingerprint, model) must match a checkpoint's for it to be resumed; a mismatch is refused rather than
    silently mixed. With a half-precision `placement` the parameters being trained are float32 master weights
    and the forward and backward passes run under autocast in that dtype.

    Under torchrun (a process group is initialised) the rows of every logical batch are split across the
    processes and gradients summed with DistributedDataParallel, or with FSDP2 `fully_shard` (`fsdp`), which
    also shards the frozen weights (see the module docstring); every rank returns with the trained weights in
    `model`. Raises InputError for a batch smaller than the number of processes, or `fsdp` without torchrun."""
    world = distributed.current()
    progress = world.progress(progress)
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("nothing to train: every parameter is frozen")
    if world.distributed and settings.batch_size < world.size:
        raise InputError(f"a batch of {settings.batch_size} rows cannot be split over {world.size} processes: "
                         f"raise --batch-size to at least {world.size}")
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    net = distributed.data_parallel(model, world, fsdp=fsdp, device=placement.device)  # the model itself in one process
    params = [(n, p) for n, p in distributed.inner(net).named_parameters() if p.requires_grad]
    names = {id(p): n for n, p in params}
    decay = [p for _, p in params if p.ndim >= 2 and settings.weight_decay > 0]
    no_decay = [p for _, p in params if not (p.ndim >= 2 and settings.weight_decay > 0)]
    groups = [g for g in ({"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    opt = adamw(groups, lr=settings.lr, sharded=fsdp and world.distributed)

    checkpoints = Checkpoints(checkpoint_dir)
    identity = {**identity, "settings": asdict(settings), "dtype": str(placement.dtype).removeprefix("torch.")}
    start, losses = 0, []
    saved = restore_or_reset(checkpoints, identity, params, opt, resume=resume, world=world)
    if saved is not None:
        meta = saved[1]
        start, losses = int(meta["step"]), list(meta["losses"])

    net.train()
    task = progress.task(description, total=settings.steps)
    task.advance(start)
    tokens_per_step = settings.batch_size * settings.seq_len  # the owner's tokens; public rows come on top
    anchor_weight = getattr(stream, "anchor_weight", 0.0)
    processed = 0
    began = time.perf_counter()
    for step in range(start, settings.steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr_at(step)
        batch = stream.batch(step)  # the whole logical batch, on every rank
        if world.distributed:
            with placement.autocast():
                loss, value = _shared_loss(net, batch, anchor_weight, world)
            loss.backward()
            loss = world.all_reduce_(value.detach().float().clone())  # the logical batch's loss, as one process has it
        else:
            with placement.autocast():
                loss = _loss(model, batch, anchor_weight)
            loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], settings.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        processed += batch.ids.shape[0] * (batch.ids.shape[1] - 1)  # whole job: every rank's rows
        task.advance(1, loss=losses[-1], **{"tok/s": processed / max(time.perf_counter() - began, 1e-9)})
        _fault_point(f"step:{step + 1}")
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            state = {f"param.{n}": p for n, p in params} | _optimizer_tensors(opt, names)
            save_checkpoint(checkpoints, done, state, {"step": done, "losses": losses, "identity": identity}, world)
    task.close()
    distributed.copy_trained(net, model)
    del net  # a DDP wrapper's gradient hooks go with it
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return TrainResult(
        steps=settings.steps,
        tokens=settings.steps * tokens_per_step,
        final_loss=losses[-1],
        mean_loss_last_10pct=float(np.mean(tail)),
        seconds=time.perf_counter() - began,
        resumed_from=start,
        epochs=stream.epochs_for(settings.steps),
    )
