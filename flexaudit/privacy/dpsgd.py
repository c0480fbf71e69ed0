"""DP-SGD for an expert: Poisson sampling of privacy units, per-unit clipping, Gaussian noise.

Abadi et al. 2016 ("Deep Learning with Differential Privacy", arXiv 1607.00133), with the privacy unit
chosen by the owner (a document, or every record of one data subject). Only the expert's own parameters
(slot-1 FFN, router row, router bias) are trainable, so everything frozen stays out of the per-sample
machinery entirely. Per-sample gradients come from fused autograd functions (default) or from Opacus'
GradSampleModule hooks; see PerSampleEngine for why the default is not Opacus' path.

One step, exactly as the accountants assume:
  1. every unit is included independently with probability q (Poisson sampling; the batch size varies);
  2. each included unit's gradient (summed over its windows, when a long unit spans several) is clipped to
     L2 norm C;
  3. the clipped sum gets N(0, (sigma C)^2) noise per coordinate, even when no unit was sampled, and is
     divided by the expected batch size q N;
  4. public rows (router negatives) add their ordinary gradient: public data costs no privacy.

Under torchrun (flexaudit.moe.distributed) every rank draws the same Poisson sample from the same seeded
generator, takes its contiguous share of the chosen units and clips each of them locally; the clipped sums (and
the public rows' ordinary gradients) are summed across ranks with one all-reduce, and then every rank adds the
same noise draw, once: the summed gradient carries N(0, (sigma C)^2) per coordinate as in one process, not
sigma C sqrt(N) (tested). Every rank therefore holds the same gradient, the accountant sees the same history,
and epsilon is that of a single-process run. (Opacus' DistributedDPOptimizer reaches the same by adding noise
on rank 0 only before the reduction; flexaudit's fused per-sample engine and its own per-unit clipper are not
an Opacus optimizer, so the reduction is done here with torch.distributed directly.)

The sampler and the noise draw from generators seeded by an HMAC of the owner's secret key and the run id:
an outsider cannot reproduce (and subtract) the noise, while the owner's resumed run continues the exact
same streams. Their states are saved with every checkpoint, so a killed and resumed run ends with the same
weights and the same epsilon, and counts every step exactly once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flexaudit.errors import InputError
from flexaudit.moe import distributed
from flexaudit.moe.device import CPU_FLOAT32, Placement
from flexaudit.moe.distributed import World
from flexaudit.moe.model import FlexOlmo, RouterBias, causal_lm_loss, pad_right, token_nll
from flexaudit.moe.training import (
    Checkpoints,
    PackedStream,
    TrainResult,
    TrainSettings,
    _fault_point,
    _optimizer_tensors,
    adamw,
    restore_or_reset,
    save_checkpoint,
)
from flexaudit.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class DPSettings:
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    delta: float
    unit: str  # "document" or "subject"
    accountant: str
    units: int  # privacy units in the training set (N)
    physical_batch_size: int = 16  # units per forward pass; the logical batch is Poisson with mean q N
    engine: str = "fused"  # per-sample gradients: "fused" or "opacus" (see PerSampleEngine)

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * self.units


def unit_windows(units: list[list[int]], *, seq_len: int, max_windows: int) -> tuple[list[list[list[int]]], int]:
    """Each unit's token sequence cut into at most `max_windows` rows of seq_len+1 tokens (overlapping by
    one, so every token after the first is predicted once). Returns the rows per unit and how many units
    were truncated."""
    width = seq_len + 1
    out, truncated = [], 0
    for ids in units:
        rows, start = [], 0
        while start < len(ids) - 1 and len(rows) < max_windows:
            rows.append(ids[start : start + width])
            start += width - 1
        if start < len(ids) - 1:
            truncated += 1
        out.append(rows or [ids[:width]])
    return out, truncated


def secret_seed(key: bytes, run_id: str, purpose: str) -> int:
    digest = hmac.new(key, f"{purpose}:{run_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --- per-sample gradients for the one module Opacus does not know ----------------------------------------

@functools.cache
def _register_router_bias_sampler() -> None:
    # Called by the "opacus" engine only: importing Opacus takes seconds, which every process that trains an
    # expert (DP or not) would otherwise pay.
    from opacus.grad_sample import register_grad_sampler

    @register_grad_sampler(RouterBias)
    def _router_bias_grad_sample(layer: RouterBias, activations, backprops):  # noqa: ANN001
        # out = logits + [0, min(b, 0)]: d out / d b_j = 1 where b_j <= 0 (clamp passes the boundary)
        per_sample = backprops.reshape(backprops.shape[0], -1, backprops.shape[-1]).sum(1)[:, 1:]  # (n, E-1)
        return {layer.weight: per_sample * (layer.weight <= 0).to(per_sample.dtype)}


class _LinearPerSample(torch.autograd.Function):
    """y = x W^T whose backward keeps the layer's input and output gradient on W (`W.dp_factors`) instead
    of computing the summed weight gradient, which DP-SGD would discard; the clipper forms each row's
    gradient g_r^T x_r from them. (Gram-matrix norms without forming per-sample gradients, as in ghost
    clipping, were measured slower at these layer sizes; see benchmarks/dp_overhead.py.)
    """

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        if getattr(weight, "dp_factors", None) is not None:
            raise RuntimeError("a trainable layer ran twice in one forward pass; per-sample factors would mix")
        weight.dp_factors = (x.reshape(x.shape[0], -1, x.shape[-1]), grad_out.reshape(grad_out.shape[0], -1, grad_out.shape[-1]))
        # under autocast the forward ran in half precision while the weight is a float32 master copy
        return (grad_out @ weight.to(grad_out.dtype) if ctx.needs_input_grad[0] else None), None


class _RouterBiasPerSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, weight):
        ctx.save_for_backward(weight)
        return logits + torch.cat((logits.new_zeros(1), weight.clamp(max=0.0)))

    @staticmethod
    def backward(ctx, grad_out):
        (weight,) = ctx.saved_tensors
        per_sample = grad_out.reshape(grad_out.shape[0], -1, grad_out.shape[-1]).sum(1)[:, 1:]  # (B, E-1)
        _accumulate(weight, per_sample * (weight <= 0).to(per_sample.dtype))
        return grad_out, None


def _accumulate(param: torch.Tensor, per_sample: torch.Tensor) -> None:
    current = getattr(param, "grad_sample", None)
    param.grad_sample = per_sample if current is None else current + per_sample


class PerSampleEngine:
    """Per-sample gradients of the trainable modules, two interchangeable ways.

    "fused" (default): the expert's Linear layers and the router bias run through autograd functions that
    keep what per-sample gradients are made of instead of computing the summed gradient, and the clipper
    never materialises a per-sample weight gradient (see _LinearPerSample).
    "opacus": Opacus' GradSampleModule hooks (the reference implementation; autograd also computes the
    summed gradient, which DP-SGD then discards). Both give the same per-sample gradients (tested)."""

    KINDS = ("fused", "opacus")

    def __init__(self, model: FlexOlmo, kind: str = "fused"):
        if kind not in self.KINDS:
            raise InputError(f"unknown per-sample gradient engine {kind!r}: choose {' or '.join(self.KINDS)}")
        self.model, self.kind, self.private = model, kind, True
        self._patched: list[torch.nn.Module] = []
        if kind == "opacus":
            from opacus import GradSampleModule

            _register_router_bias_sampler()

            # The hooks fire on module outputs because no input of the frozen network needs a gradient;
            # expected here (only the expert's weights are trained), so the warning says nothing useful.
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            self._gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=False)
        else:
            for module in model.modules():
                trainable = any(p.requires_grad for p in module.parameters(recurse=False))
                if trainable and isinstance(module, torch.nn.Linear):
                    module.forward = self._linear(module)
                elif trainable and isinstance(module, RouterBias):
                    module.forward = self._bias(module)
                else:
                    continue
                self._patched.append(module)

    def _linear(self, module: torch.nn.Linear):
        def forward(x):
            return _LinearPerSample.apply(x, module.weight) if self.private else F.linear(x, module.weight)
        return forward

    def _bias(self, module: RouterBias):
        original = type(module).forward.__get__(module)

        def forward(logits):
            return _RouterBiasPerSample.apply(logits, module.weight) if self.private else original(logits)
        return forward

    def __call__(self, ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self._gsm(ids, **kwargs) if self.kind == "opacus" else self.model(ids, **kwargs)

    @contextlib.contextmanager
    def ordinary(self):
        """Ordinary summed gradients inside the block (for public data, which needs no privacy)."""
        if self.kind == "opacus":
            self._gsm.disable_hooks()
        self.private = False
        try:
            yield
        finally:
            self.private = True
            if self.kind == "opacus":
                self._gsm.enable_hooks()

    def close(self) -> None:
        if self.kind == "opacus":
            self._gsm.remove_hooks()
            self._gsm.cleanup()
        for module in self._patched:
            del module.forward  # back to the class's forward
        for p in self.model.parameters():
            for attr in ("grad_sample", "dp_factors"):
                if hasattr(p, attr):
                    delattr(p, attr)


class _PerUnitClipper:
    """Accumulates clipped per-unit gradients over the micro-batches of one logical step.

    A unit may span several rows (windows): its gradient is the sum of its rows' gradients, clipped as one.
    """

    def __init__(self, params: list[torch.nn.Parameter], max_grad_norm: float):
        self.params, self.C = params, max_grad_norm
        self.summed = [torch.zeros_like(p) for p in params]
        self.norms: list[float] = []

    def add(self, row_unit: torch.Tensor, n_units: int) -> None:
        one_row_each = len(row_unit) == n_units  # rows are the units, in order
        device = self.params[0].device
        squared = torch.zeros(n_units, dtype=torch.float64, device=device)
        row_unit = row_unit.to(device)
        parts = []
        for p in self.params:
            factors = getattr(p, "dp_factors", None)
            if factors is not None:
                x, g = factors  # (R, T, in), (R, T, out); half precision under autocast
                p.dp_factors = None
                per_row = torch.bmm(g.transpose(1, 2).float(), x.float())  # (R, out, in), float32 for the norms
            else:
                per_row = p.grad_sample.float()  # (R, *p.shape)
                p.grad_sample = None
            per_unit = per_row if one_row_each else torch.zeros((n_units, *p.shape), dtype=per_row.dtype,
                                                                device=device).index_add_(0, row_unit, per_row)
            flat = per_unit.reshape(n_units, -1)
            squared += torch.linalg.vector_norm(flat, dim=1).double().pow(2)
            parts.append(flat)
        norms = squared.sqrt().float()  # (units,)
        factor = (self.C / (norms + 1e-6)).clamp(max=1.0)  # (units,)
        for acc, flat in zip(self.summed, parts):
            acc.add_((factor @ flat).view_as(acc))
        self.norms.extend(norms.cpu().tolist())


def _row_losses(model, ids: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over rows of (row NLL sum * weight): with weight = 1 / tokens of the row's unit, each unit's
    loss is its mean token NLL, whatever its length."""
    logits = model(ids, next_token_only=True)  # (R, T-1, V)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none")
    per_row = (nll.view(ids.shape[0], -1) * mask[:, 1:]).sum(1)  # (R,)
    return (per_row * weights).sum()


def _clipped_sum(engine: PerSampleEngine, unit_rows, chosen, dp: DPSettings, trainable, unit_tokens, pad,
                 placement: Placement) -> tuple["_PerUnitClipper", float, int]:
    """Per-unit clipped gradients of the units `chosen`, summed (in the clipper), the summed loss and the number
    of predicted tokens; physical batches of dp.physical_batch_size units."""
    clipper = _PerUnitClipper(trainable, dp.max_grad_norm)
    step_loss, step_tokens = 0.0, 0
    for i in range(0, len(chosen), dp.physical_batch_size):
        micro = chosen[i : i + dp.physical_batch_size]
        rows, row_unit, weights = [], [], []
        for j, u in enumerate(micro):
            for r in unit_rows[u]:
                rows.append(r)
                row_unit.append(j)
                weights.append(1.0 / max(1, unit_tokens[u]))
        ids, mask = pad_right(rows, pad)
        device = trainable[0].device
        with placement.autocast():
            loss = _row_losses(engine, ids.to(device), mask.to(device), torch.tensor(weights, device=device))
        loss.backward()
        clipper.add(torch.tensor(row_unit), len(micro))
        step_loss += float(loss.detach())
        step_tokens += int(mask[:, 1:].sum())
    return clipper, step_loss, step_tokens


def _noise(p: torch.Tensor, noise: torch.Generator, dp: DPSettings) -> torch.Tensor:
    """N(0, (sigma C)^2) per coordinate, drawn on the CPU from the seeded generator and moved to the parameter's
    device, so a run draws the same noise on any device (and every rank the same)."""
    return torch.randn(p.shape, generator=noise).to(p.device) * (dp.noise_multiplier * dp.max_grad_norm)


def private_gradient(engine: PerSampleEngine, unit_rows, chosen, dp: DPSettings, noise: torch.Generator, trainable,
                     unit_tokens, pad, placement: Placement = CPU_FLOAT32):
    """Set p.grad of every trainable parameter to one DP-SGD gradient for the sampled units `chosen`:
    per-unit clipped sum plus Gaussian noise, over the expected batch size. Returns the clipper (norms),
    the summed loss and the number of predicted tokens. One process; see shared_private_gradient for several."""
    clipper, step_loss, step_tokens = _clipped_sum(engine, unit_rows, chosen, dp, trainable, unit_tokens, pad, placement)
    for p, acc in zip(trainable, clipper.summed):
        p.grad = (acc + _noise(p, noise, dp)) / dp.expected_batch_size
    return clipper, step_loss, step_tokens


def shared_private_gradient(engine: PerSampleEngine, unit_rows, chosen, dp: DPSettings, noise: torch.Generator,
                            trainable, unit_tokens, pad, placement: Placement = CPU_FLOAT32, *, world: World,
                            public_rows: torch.Tensor | None = None) -> tuple[int, float, int]:
    """One DP-SGD gradient computed by every rank of `world` together, set as p.grad on every rank.

    Every rank passes the same `chosen` (the step's Poisson sample over all N units) and the same noise generator
    state; it clips its contiguous share of the units, and its share of `public_rows` (B_pub, T+1) gives an
    ordinary gradient scaled to the whole public batch's mean. One all-reduce sums the clipped sums and the
    public gradients over the ranks; then each rank adds the same noise draw to the summed clipped gradient, so
    the noise enters the sum once: p.grad = (sum of clipped + N(0, (sigma C)^2)) / (q N) + public gradient,
    identical on every rank. Returns (units clipped, summed loss, predicted tokens), all over every rank."""
    mine = chosen[world.share(len(chosen))]
    public = [torch.zeros_like(p) for p in trainable]
    if public_rows is not None:
        part = public_rows[world.share(len(public_rows))].to(trainable[0].device)
        with engine.ordinary(), placement.autocast():  # public text is not private: an ordinary gradient
            # router_only: on public rows the expert's output is detached (causal_lm_loss in one process)
            logits = engine.model(part, router_only=torch.ones(len(part), dtype=torch.bool, device=part.device),
                                  next_token_only=True)
            loss = token_nll(logits, part, torch.ones_like(part, dtype=torch.bool))
            loss = loss / (public_rows.shape[0] * (public_rows.shape[1] - 1))  # the whole public batch's mean
        public = list(torch.autograd.grad(loss, trainable, allow_unused=True, materialize_grads=True))
    clipper, step_loss, step_tokens = _clipped_sum(engine, unit_rows, mine, dp, trainable, unit_tokens, pad, placement)
    flat = world.all_reduce_(torch.cat([t.reshape(-1) for t in (*clipper.summed, *public)]))
    counts = world.all_reduce_(torch.tensor([sum(1 for v in clipper.norms if v > dp.max_grad_norm), step_loss,
                                             step_tokens], dtype=torch.float64))
    sizes = [p.numel() for p in trainable]
    summed, public = flat.split(sizes + sizes)[: len(sizes)], flat.split(sizes + sizes)[len(sizes):]
    for p, acc, pub in zip(trainable, summed, public):
        p.grad = (acc.view_as(p) + _noise(p, noise, dp)) / dp.expected_batch_size + pub.view_as(p)
    return int(counts[0]), float(counts[1]), int(counts[2])


def train_dp(
    model: FlexOlmo,
    unit_rows: list[list[list[int]]],
    settings: TrainSettings,
    dp: DPSettings,
    *,
    key: bytes,
    run_id: str,
    public: PackedStream | None,
    checkpoint_dir: Path,
    resume: bool,
    identity: dict,
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
    description: str = "DP training",
) -> tuple[TrainResult, dict]:
    """Train the trainable parameters of `model` with DP-SGD, on the model's device (mixed precision for a
    half-precision `placement`, float32 master weights). Returns the training result and statistics (steps,
    units sampled, clipped fraction) for the manifest. Under torchrun the ranks share every step's units and
    public rows (shared_private_gradient) and rank 0 alone writes checkpoints; the result, the statistics and
    the weights are those of one process with the same settings, up to the order of float32 additions."""
    world = distributed.current()
    progress = world.progress(progress)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for _, p in params:
        if p.dtype != torch.float32:
            p.data = p.data.float()
    names = {id(p): n for n, p in params}
    opt = adamw([{"params": [p for _, p in params], "weight_decay": 0.0}], lr=settings.lr)
    sampler = torch.Generator().manual_seed(secret_seed(key, run_id, "poisson-sampling"))
    noise = torch.Generator().manual_seed(secret_seed(key, run_id, "gaussian-noise"))

    checkpoints = Checkpoints(checkpoint_dir)
    identity = {**identity, "settings": asdict(settings), "dp": asdict(dp), "run_id": run_id,
                "dtype": str(placement.dtype).removeprefix("torch.")}
    start, losses, stats = 0, [], {"units_sampled": 0, "clipped": 0, "empty_steps": 0}
    saved = restore_or_reset(checkpoints, identity, params, opt, resume=resume, world=world)
    if saved is not None:
        tensors, meta = saved
        sampler.set_state(tensors["rng.sampler"])
        noise.set_state(tensors["rng.noise"])
        start, losses, stats = int(meta["step"]), list(meta["losses"]), dict(meta["dp_stats"])
    for _, p in params:  # every rank starts from rank 0's weights (each computed the router rows itself)
        world.broadcast_(p.data)

    engine = PerSampleEngine(model, dp.engine)
    trainable = [p for _, p in params]
    pad = model.config.pad_token_id
    unit_tokens = [sum(len(r) - 1 for r in rows) for rows in unit_rows]
    model.train()
    task = progress.task(description, total=settings.steps)
    task.advance(start)
    began, processed = time.perf_counter(), 0
    for step in range(start, settings.steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr_at(step)
        # every rank draws the same sample: the generator, its seed and its state are the same everywhere
        chosen = torch.nonzero(torch.rand(dp.units, generator=sampler) < dp.sample_rate).flatten().tolist()
        if world.distributed:
            clipped, step_loss, step_tokens = shared_private_gradient(
                engine, unit_rows, chosen, dp, noise, trainable, unit_tokens, pad, placement, world=world,
                public_rows=public.rows(step) if public is not None else None)
        else:
            clipper, step_loss, step_tokens = private_gradient(engine, unit_rows, chosen, dp, noise, trainable,
                                                               unit_tokens, pad, placement)
            clipped = sum(1 for v in clipper.norms if v > dp.max_grad_norm)
            if public is not None:
                with engine.ordinary(), placement.autocast():  # public text is not private: an ordinary gradient
                    rows = public.rows(step).to(model.device)
                    loss = causal_lm_loss(model, rows, torch.ones_like(rows, dtype=torch.bool),
                                          torch.ones(rows.shape[0], dtype=torch.bool, device=model.device))
                loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats["units_sampled"] += len(chosen)
        stats["clipped"] += clipped
        stats["empty_steps"] += int(not chosen)
        losses.append(step_loss / max(1, len(chosen)))
        processed += step_tokens
        task.advance(1, loss=losses[-1], units=len(chosen), **{"tok/s": processed / max(time.perf_counter() - began, 1e-9)})
        _fault_point(f"step:{step + 1}")
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            state = {f"param.{n}": p for n, p in params} | _optimizer_tensors(opt, names)
            state |= {"rng.sampler": sampler.get_state(), "rng.noise": noise.get_state()}
            save_checkpoint(checkpoints, done, state, {"step": done, "losses": losses, "identity": identity,
                                                       "dp_stats": stats}, world)
    task.close()
    engine.close()
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    result = TrainResult(
        steps=settings.steps,
        tokens=int(round(dp.expected_batch_size * settings.steps * np.mean(unit_tokens))),
        final_loss=losses[-1],
        mean_loss_last_10pct=float(np.mean(tail)),
        seconds=time.perf_counter() - began,
        resumed_from=start,
        epochs=dp.sample_rate * settings.steps,
    )
    stats["clipped_fraction"] = round(stats["clipped"] / max(1, stats["units_sampled"]), 4)
    stats["mean_batch_size"] = round(stats["units_sampled"] / settings.steps, 2)
    return result, stats


def run_id_for(identity: dict) -> str:
    """A run id that is a function of everything defining the run: a killed run resumes under the same id
    (same noise stream, one ledger entry), and a deliberate retrain (another seed) gets a new one."""
    return "dp-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
