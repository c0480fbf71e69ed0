"""The expert: the 2-expert training model built from the anchor, and the package an owner shares.

Training model (the method, Shi et al. 2025 §3.3): a 2-expert MoE whose slot 0 is the anchor's frozen public FFN and
frozen public router row, and whose slot 1 starts as a copy of the public FFN with a domain-informed router
row; top-2 of 2, no load-balancing loss; attention, embeddings, norms and head frozen.

A package directory holds exactly two files:
  expert.safetensors  the new expert's FFN per layer, its router row per layer (and the bias, if trained)
  manifest.json       name, anchor root digest, tensor list, training settings, data fingerprint (counts and
                      keyed hashes, never text), the member/holdout split record, the privacy block, software
                      versions, per-file SHA-256 and the content root digest over every file but the manifest.
A report or a pool binds to the root digest of the whole directory, manifest included. `compose` puts packages
into the anchor's slots 1..n (merging, router tuning and audits all start from it). The owner's training run,
accounted in the privacy ledger, is flexaudit.privacy.expert_training.train_expert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from flexaudit.digest import file_digests, root_digest, root_digest_of
from flexaudit.errors import InputError, IntegrityError, require_at_least
from flexaudit.fsutil import atomic_write_json, save_tensors, staged_directory
from flexaudit.moe.anchor import Anchor
from flexaudit.moe.checkpoint import read_hf_weights, read_json, read_safetensors, refuse_pickle
from flexaudit.moe.model import FlexOlmo
from flexaudit.moe.router_init import DEFAULT_ROUTER_INIT
from flexaudit.moe.training import TrainSettings
from flexaudit.names import check_read_name

if TYPE_CHECKING:  # DP options belong to the privacy layer, which trains experts with them
    from flexaudit.privacy.expert_training import DPOptions

MANIFEST = "manifest.json"
WEIGHTS = "expert.safetensors"
PACKAGE_FORMAT = "flexaudit-expert/1"
# Chosen by measurement on the demo (benchmarks/method_choices.py, README "Design choices, measured").
DEFAULT_TOP_K = 2
NO_GUARANTEE = {
    "guarantee": "none",
    "statement": "no formal guarantee: this expert was trained without differential privacy",
}


@dataclass(frozen=True)
class ExpertOptions:
    steps: int = 300
    batch_size: int = 16
    seq_len: int | None = None  # None: the anchor's context length
    lr: float = 2e-3
    warmup_steps: int = 30
    seed: int = 0
    holdout_fraction: float = 0.1
    router_init: str = DEFAULT_ROUTER_INIT
    router_bias: bool = False  # the method's learnable bias; off by default (see README: measured)
    public_rows: int = 4  # rows of public text per step that train only the router (with public data given)
    anchor_weight: float = 1.0  # on public rows, pull the expert's output towards the public expert's (measured: README)
    checkpoint_every: int = 50
    dp: DPOptions | None = None  # with DP, batch_size is the expected number of units per step
    canaries: int = 0  # canaries generated for audits; each planted with probability 1/2
    canary_repeats: int = 1
    owner: str = "local"  # the owner's name in its privacy ledger

    def __post_init__(self) -> None:
        """Refuse settings no run could use, before anything is loaded (the command line's flags share the names)."""
        require_at_least(self, {"steps": 1, "batch_size": 1, "warmup_steps": 0, "public_rows": 1, "checkpoint_every": 1,
                                "canaries": 0, "canary_repeats": 1},
                         flags=("steps", "batch_size", "checkpoint_every", "canaries", "canary_repeats"))
        if self.seq_len is not None and self.seq_len < 1:
            raise InputError(f"--seq-len must be at least 1, got {self.seq_len}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.anchor_weight) and self.anchor_weight >= 0):
            # a negative weight would push the expert away from the public expert on public text
            raise InputError(f"--anchor-weight must be a number of at least 0, got {self.anchor_weight}")

    def settings(self, anchor_seq_len: int) -> TrainSettings:
        seq_len = self.seq_len or anchor_seq_len
        if seq_len > anchor_seq_len:
            raise InputError(f"sequence length {seq_len} exceeds the anchor's context of {anchor_seq_len} tokens")
        return TrainSettings(
            steps=self.steps,
            batch_size=self.batch_size,
            seq_len=seq_len,
            lr=self.lr,
            warmup_steps=min(self.warmup_steps, max(1, self.steps // 5)),
            weight_decay=0.0,  # the method trains experts without weight decay
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )


# --- building the 2-expert training model --------------------------------------------------------------

def upcycle(anchor: FlexOlmo, expert_rows: torch.Tensor, *, router_bias: bool) -> FlexOlmo:
    """Anchor (1 expert) -> 2 experts: slot 1 is a copy of the public FFN with the given router rows (L, H).

    The frozen tensors are the anchor's own (shared, not copied: on their device, in their dtype); slot 1's FFN
    and router row are new float32 tensors, the optimizer's master weights (mixed precision keeps the
    updates in float32 whatever the anchor's dtype)."""
    cfg = anchor.config.replace(num_experts=2, top_k=2, router_bias=False)
    state = dict(anchor.state_dict())
    for i in range(cfg.num_layers):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            public = state[f"model.layers.{i}.mlp.experts.0.{proj}.weight"]
            state[f"model.layers.{i}.mlp.experts.1.{proj}.weight"] = public.detach().to(torch.float32, copy=True)
        state[f"model.layers.{i}.mlp.gate.rows.1.weight"] = expert_rows[i : i + 1].to(anchor.device, torch.float32)
    model = _assembled(cfg, state)
    return model.with_router_bias() if router_bias else model


def _assembled(cfg, state: dict[str, torch.Tensor]) -> FlexOlmo:
    """A model holding exactly these tensors (built on the meta device: nothing is initialised or copied)."""
    with torch.device("meta"):
        model = FlexOlmo(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.reset_buffers()
    return model


def package_tensors(model: FlexOlmo, slot: int = 1, *, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors of one expert slot under package names, on the CPU in `dtype` (default: the frozen
    weights' dtype, so a package keeps its anchor's precision)."""
    dtype = dtype or model.dtype
    out = {}
    for i, layer in enumerate(model.model.layers):
        expert = layer.mlp.experts[slot]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[f"layers.{i}.mlp.{proj}.weight"] = getattr(expert, proj).weight.detach().to("cpu", dtype, copy=True)
        out[f"layers.{i}.router.weight"] = layer.mlp.gate.rows[slot].weight.detach().to("cpu", dtype, copy=True)
        if layer.mlp.gate.bias is not None:
            # the bias is a training-time parameter that never reaches a merged model: kept in float32
            out[f"layers.{i}.router.bias"] = layer.mlp.gate.bias.weight.detach()[slot - 1 : slot].to("cpu", copy=True)
    return out


def expected_tensor_shapes(anchor_cfg, *, with_bias: bool) -> dict[str, tuple[int, ...]]:
    H, I = anchor_cfg.hidden_size, anchor_cfg.intermediate_size
    shapes = {}
    for i in range(anchor_cfg.num_layers):
        shapes[f"layers.{i}.mlp.gate_proj.weight"] = (I, H)
        shapes[f"layers.{i}.mlp.up_proj.weight"] = (I, H)
        shapes[f"layers.{i}.mlp.down_proj.weight"] = (H, I)
        shapes[f"layers.{i}.router.weight"] = (1, H)
        if with_bias:
            shapes[f"layers.{i}.router.bias"] = (1,)
    return shapes


def verify_frozen(model: FlexOlmo, anchor_dir: Path) -> int:
    """Every tensor the owner must not change is bit-identical to the anchor's on-disk tensor (compared in the
    anchor's stored dtype, on the CPU)."""
    anchor_tensors = read_hf_weights(anchor_dir)
    checked = 0
    for name, t in model.state_dict().items():
        if ".mlp.experts.1." in name or ".gate.rows.1." in name or ".gate.bias." in name:
            continue
        key = name
        if ".gate.rows.0.weight" in name:
            key = name.replace(".gate.rows.0.weight", ".gate.weight")
        if key == "lm_head.weight" and key not in anchor_tensors:
            key = "model.embed_tokens.weight"  # tied embeddings
        reference = anchor_tensors[key]
        if not torch.equal(t.detach().to("cpu", reference.dtype), reference):
            raise IntegrityError(f"frozen tensor {name} differs from the anchor's: refusing to package this expert")
        checked += 1
    return checked


# --- packages on disk -----------------------------------------------------------------------------------

def write_package(out: Path, tensors: dict[str, torch.Tensor], manifest: dict, *, overwrite: bool,
                  before_publish: Callable[[Path], None] | None = None) -> str:
    """Write the package in a staging directory; `before_publish(staged_dir)` runs when it is complete and
    before it becomes visible at `out` (an exception there publishes nothing)."""
    with staged_directory(out, replace=overwrite) as tmp:
        save_tensors(tensors, str(tmp / WEIGHTS), metadata={"format": "flexaudit-expert"})
        digests = file_digests(tmp)
        manifest = {
            **manifest,
            "tensors": [
                {"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                for n, t in sorted(tensors.items())
            ],
            "files": digests,
            "content_root_digest": root_digest_of(digests),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        if before_publish is not None:
            before_publish(tmp)
    return root_digest(out)


@dataclass
class ExpertPackage:
    directory: Path
    manifest: dict
    tensors: dict[str, torch.Tensor]
    root_digest: str  # of the whole directory, manifest included: what reports and pools bind to

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def has_bias(self) -> bool:
        return any(k.endswith("router.bias") for k in self.tensors)


def load_package(directory: str | Path, *, anchor: Anchor | None = None) -> ExpertPackage:
    """Read and verify a package: file digests, tensor names, shapes, dtypes, finite values, and (given the
    anchor) that it was trained on exactly this anchor. Any failure is an IntegrityError (exit 3)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"expert package not found: {directory}")
    refuse_pickle(directory)
    manifest = read_json(directory / MANIFEST, "manifest.json (is this an expert package?)")
    if manifest.get("format") != PACKAGE_FORMAT:
        raise IntegrityError(f"{directory / MANIFEST} has format {manifest.get('format')!r}, expected {PACKAGE_FORMAT!r}")
    check_read_name(manifest.get("name"), what="the expert name", where=directory / MANIFEST)
    actual = file_digests(directory, exclude=[MANIFEST])
    stated = manifest.get("files") or {}
    if actual != stated:
        changed = sorted(set(actual) ^ set(stated) | {f for f in actual if actual.get(f) != stated.get(f)})
        raise IntegrityError(
            f"package {directory} does not match its manifest ({', '.join(changed)} added, removed or modified): "
            "obtain the package again from its owner"
        )
    if root_digest_of(actual) != manifest.get("content_root_digest"):
        raise IntegrityError(f"package {directory}: content root digest does not match the manifest")
    tensors = read_safetensors(directory / WEIGHTS, what="expert weights")
    listed = {t["name"]: (tuple(t["shape"]), t["dtype"]) for t in manifest.get("tensors", [])}
    present = {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in tensors.items()}
    if listed != present:
        raise IntegrityError(f"package {directory}: tensors differ from the manifest's tensor list")
    if anchor is not None:
        stated_anchor = (manifest.get("anchor") or {}).get("root_digest")
        if stated_anchor != anchor.root_digest:
            raise IntegrityError(
                f"expert {manifest.get('name')!r} was trained on another anchor ({str(stated_anchor)[:19]}…, "
                f"this one is {anchor.root_digest[:19]}…): merge only experts trained on the same anchor"
            )
        with_bias = any(n.endswith("router.bias") for n in tensors)
        expected = expected_tensor_shapes(anchor.config, with_bias=with_bias)
        if {n: tuple(t.shape) for n, t in tensors.items()} != expected:
            raise IntegrityError(f"package {directory}: tensor names or shapes do not fit the anchor's architecture")
    return ExpertPackage(directory=directory, manifest=manifest, tensors=tensors, root_digest=root_digest(directory))


def install_expert(model: FlexOlmo, slot: int, package: ExpertPackage) -> None:
    """Copy a package's tensors into expert slot `slot` of `model` (router bias excluded), converting them to
    the model's device and dtype."""
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                getattr(layer.mlp.experts[slot], proj).weight.copy_(package.tensors[f"layers.{i}.mlp.{proj}.weight"])
            layer.mlp.gate.rows[slot].weight.copy_(package.tensors[f"layers.{i}.router.weight"])


def compose(anchor: Anchor, packages: list[ExpertPackage], *, top_k: int | None = None) -> FlexOlmo:
    """The anchor with each package in slots 1..n, in memory, on the anchor model's device and in its dtype.
    The anchor's FFN, attention, norms and embeddings are shared, not copied; every router row and expert is a
    copy, so tuning the router (flexaudit.moe.router_tuning) never changes the anchor or a package."""
    names = [p.name for p in packages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"expert name {duplicates[0]!r} appears twice: every merged expert needs its own name")
    n = 1 + len(packages)
    if top_k is not None and top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    if top_k is not None and top_k > n:
        raise InputError(f"--top-k {top_k} exceeds the {n} experts being merged (the public one included)")
    k = min(n, top_k or DEFAULT_TOP_K)  # after the checks: a top_k of 0 must not read as "the default"
    cfg = anchor.config.replace(num_experts=n, top_k=k, router_bias=False)
    base = anchor.model
    state = dict(base.state_dict())
    for i in range(cfg.num_layers):
        state[f"model.layers.{i}.mlp.gate.rows.0.weight"] = state[f"model.layers.{i}.mlp.gate.rows.0.weight"].clone()
    for slot, package in enumerate(packages, start=1):
        for i in range(cfg.num_layers):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                state[f"model.layers.{i}.mlp.experts.{slot}.{proj}.weight"] = \
                    package.tensors[f"layers.{i}.mlp.{proj}.weight"].to(base.device, base.dtype, copy=True)
            state[f"model.layers.{i}.mlp.gate.rows.{slot}.weight"] = \
                package.tensors[f"layers.{i}.router.weight"].to(base.device, base.dtype, copy=True)
    return _assembled(cfg, state).eval()
