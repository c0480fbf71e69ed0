"""Expert training and expert packages: what a data owner trains locally and shares.

Training (the method, Shi et al. 2025 §3.3): a 2-expert MoE whose slot 0 is the anchor's frozen public FFN and
frozen public router row, and whose slot 1 starts as a copy of the public FFN with a domain-informed router
row; top-2 of 2, no load-balancing loss; attention, embeddings, norms and head frozen.

A package directory holds exactly two files:
  expert.safetensors  the new expert's FFN per layer, its router row per layer (and the bias, if trained)
  manifest.json       name, anchor root digest, tensor list, training settings, data fingerprint (counts and
                      keyed hashes, never text), the member/holdout split record, the privacy block, software
                      versions, per-file SHA-256 and the content root digest over every file but the manifest.
A report or a pool binds to the root digest of the whole directory, manifest included.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from flexaudit.anchor import Anchor, load_anchor, local_dir, software_versions
from flexaudit.checkpoint import read_hf_weights, read_json, read_safetensors, refuse_pickle
from flexaudit.data import Document, load_documents
from flexaudit.data.split import dataset_fingerprint, owner_home, owner_key, split_documents
from flexaudit.privacy import Ledger, Segment, account, default_delta, noise_multiplier_for
from flexaudit.privacy.dpsgd import DPSettings, run_id_for, secret_seed, train_dp, unit_windows
from flexaudit.digest import file_digests, root_digest, root_digest_of, text_sha256
from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json, atomic_write_text, staged_directory
from flexaudit.model import FlexOlmo
from flexaudit.progress import NULL_PROGRESS, Progress
from flexaudit.router_init import DEFAULT_ROUTER_INIT, router_rows
from flexaudit.tokenizer import encode_documents
from flexaudit.training import PackedStream, RouterContrastStream, TrainSettings, train

MANIFEST = "manifest.json"
WEIGHTS = "expert.safetensors"
PACKAGE_FORMAT = "flexaudit-expert/1"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED_NAMES = {"public", "anchor"}
NO_GUARANTEE = {
    "guarantee": "none",
    "statement": "no formal guarantee: this expert was trained without differential privacy",
}


UNITS = ("document", "subject")


@dataclass(frozen=True)
class DPOptions:
    """Differentially private training: give exactly one of target_epsilon and noise_multiplier."""

    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None  # None: flexaudit.privacy.default_delta(N), well below 1/N
    max_grad_norm: float = 1.0
    unit: str = "document"  # or "subject": every record of one person is one unit
    accountant: str = "prv"
    budget: float | None = None  # cap on the total epsilon of every run on this dataset (the ledger)
    max_windows: int = 4  # a unit longer than this many sequences is truncated (and counted as such)
    physical_batch_size: int = 16  # units per forward pass; memory only, no effect on the guarantee
    engine: str = "fused"  # per-sample gradients: "fused" or "opacus" (same result; see privacy.dpsgd)

    def validate(self, *, subject_field: str | None) -> None:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise InputError("with --dp give exactly one of --target-epsilon and --noise-multiplier")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise InputError(f"target epsilon must be positive, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise InputError(f"noise multiplier must be positive, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise InputError(f"--max-grad-norm must be positive, got {self.max_grad_norm}")
        if self.unit not in UNITS:
            raise InputError(f"unknown privacy unit {self.unit!r}: choose document or subject")
        if self.unit == "subject" and not subject_field:
            raise InputError("--privacy-unit subject needs --subject-field naming each record's data subject")


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


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or name.lower() in RESERVED_NAMES:
        raise InputError(
            f"invalid expert name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not 'public' or 'anchor')"
        )
    return name


# --- building the 2-expert training model --------------------------------------------------------------

def upcycle(anchor: FlexOlmo, expert_rows: torch.Tensor, *, router_bias: bool) -> FlexOlmo:
    """Anchor (1 expert) -> 2 experts: slot 1 is a copy of the public FFN with the given router rows."""
    cfg = anchor.config.replace(num_experts=2, top_k=2, router_bias=router_bias)
    model = FlexOlmo(cfg)
    state = anchor.state_dict()
    for i in range(cfg.num_layers):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            state[f"model.layers.{i}.mlp.experts.1.{proj}.weight"] = state[f"model.layers.{i}.mlp.experts.0.{proj}.weight"].clone()
        state[f"model.layers.{i}.mlp.gate.rows.1.weight"] = expert_rows[i : i + 1].clone()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(".gate.bias." in m for m in missing), (missing, unexpected)
    return model


def package_tensors(model: FlexOlmo, slot: int = 1) -> dict[str, torch.Tensor]:
    """The tensors of one expert slot under package names."""
    out = {}
    for i, layer in enumerate(model.model.layers):
        expert = layer.mlp.experts[slot]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[f"layers.{i}.mlp.{proj}.weight"] = getattr(expert, proj).weight.detach().clone()
        out[f"layers.{i}.router.weight"] = layer.mlp.gate.rows[slot].weight.detach().clone()
        if layer.mlp.gate.bias is not None:
            out[f"layers.{i}.router.bias"] = layer.mlp.gate.bias.weight.detach()[slot - 1 : slot].clone()
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
    """Every tensor the owner must not change is bit-identical to the anchor's on-disk tensor."""
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
        if not torch.equal(t, anchor_tensors[key]):
            raise IntegrityError(f"frozen tensor {name} differs from the anchor's: refusing to package this expert")
        checked += 1
    return checked


# --- training --------------------------------------------------------------------------------------------

@dataclass
class TrainedExpert:
    package: Path
    local: Path
    manifest: dict
    members: list[Document]
    holdout: list[Document]


def train_expert(
    *,
    anchor_dir: Path,
    data: Path,
    name: str,
    out: Path,
    options: ExpertOptions = ExpertOptions(),
    subject_field: str | None = None,
    public_data: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    home: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> TrainedExpert:
    """Train one expert against the frozen anchor and write its package.

    `home` holds the owner's secret key and privacy ledger (default: $FLEXAUDIT_HOME); owner-side files
    (checkpoints, the split's text, canary secrets) go to `<out>.local`. With `public_data`, a few rows of
    public text per step teach the router where the public expert is better (see RouterContrastStream);
    the expert itself still learns from the owner's data only. With `options.dp`, training is DP-SGD and
    the privacy ledger must allow the run before it starts."""
    check_name(name)
    dp = options.dp
    if dp is not None:
        dp.validate(subject_field=subject_field)
    if out.exists() and not overwrite:
        if resume and (out / MANIFEST).is_file():
            raise InputError(f"{out} already holds a finished package: nothing to resume (pass --force to retrain)")
        raise InputError(f"{out} already exists: choose another --out or pass --force to replace it")
    anchor = load_anchor(anchor_dir)
    docs = load_documents(data, subject_field=subject_field)
    unit = dp.unit if dp is not None else "document"
    split = split_documents(docs, seed=options.seed, holdout_fraction=options.holdout_fraction, by_subject=unit == "subject")
    settings = options.settings(anchor.config.max_seq_len)
    home = home or owner_home()
    key = owner_key(home)
    fingerprint = dataset_fingerprint(docs, key)
    local = local_dir(out)

    canaries = plant_canaries(options, key=key, name=name)
    training_texts = [d.text for d in split.members] + [c.text for c in canaries if c.included for _ in range(options.canary_repeats)]
    rows = router_rows(options.router_init, anchor.model, anchor.tokenizer, [d.text for d in split.members], seed=options.seed)
    model = upcycle(anchor.model, rows, router_bias=options.router_bias)
    trainable = model.freeze_anchor()
    public, negatives = _public_rows(public_data, anchor, settings, options)
    identity = {
        "kind": "expert",
        "name": name,
        "anchor": anchor.root_digest,
        "data": fingerprint["fingerprint"],
        "public": negatives,
        "options": asdict(options),
    }
    ledger = Ledger(home / "ledger.db")
    if dp is None:
        run_id = _fresh_run_id(ledger, run_id_for(identity))
        ledger.plan_run(owner=options.owner, dataset=fingerprint["fingerprint"], expert=name, segments=None,
                        delta=None, run_id=run_id)
        stream = PackedStream(encode_documents(anchor.tokenizer, training_texts), seq_len=settings.seq_len,
                              batch_size=settings.batch_size, seed=options.seed)
        result = train(
            model, RouterContrastStream(stream, public, anchor_weight=options.anchor_weight) if public else stream, settings,
            checkpoint_dir=local / "checkpoints", resume=resume, identity=identity, progress=progress,
            description=f"expert {name}",
        )
        privacy, segments = NO_GUARANTEE, None
    else:
        result, privacy, segments, run_id = _train_private(
            model, anchor, split.members, canaries, options, settings, identity=identity, fingerprint=fingerprint,
            ledger=ledger, key=key, public=public, checkpoint_dir=local / "checkpoints", resume=resume,
            name=name, progress=progress,
        )
    frozen_checked = verify_frozen(model, anchor.directory)
    manifest = {
        "format": PACKAGE_FORMAT,
        "name": name,  # no timestamp: the same data and settings give a bit-identical package
        "anchor": {"root_digest": anchor.root_digest},
        "architecture": {
            "vocab_size": anchor.config.vocab_size,
            "hidden_size": anchor.config.hidden_size,
            "intermediate_size": anchor.config.intermediate_size,
            "num_layers": anchor.config.num_layers,
        },
        "router": {
            "init": options.router_init,
            "public_negatives": negatives or "none",
            "bias": "trained; not carried into merged models (Hugging Face FlexOlmo has no router bias)"
            if options.router_bias else "none",
        },
        "training": {
            **{k: v for k, v in asdict(settings).items() if k != "checkpoint_every"},
            "method": "FlexOlmo expert: 2 experts, top-2, no load-balancing loss, AdamW"
            + (", DP-SGD" if dp is not None else ""),
            "trainable": "slot-1 FFN, slot-1 router row" + (", router bias" if options.router_bias else ""),
            "frozen": "embeddings, attention, norms, LM head, public FFN, public router row",
            "trainable_parameters": sum(p.numel() for n, p in model.named_parameters() if n in trainable),
            "frozen_tensors_verified_identical": frozen_checked,
            "tokens": result.tokens,
            "epochs": round(result.epochs, 3),
            "final_loss": round(result.final_loss, 5),
        },
        "data": {**fingerprint, "unit_of_privacy": unit, "source_format": data.suffix.lstrip(".") or "folder"},
        "split": split.record(key),
        "canaries": canary_record(canaries, options, key),
        "privacy": privacy,
        "software": software_versions(),
    }

    def release(staged: Path) -> None:
        # the ledger learns of the release before the package becomes visible: never behind what was shared
        ledger.record_release(run_id, segments, package_digest=root_digest(staged))

    write_package(out, package_tensors(model), manifest, overwrite=overwrite, before_publish=release)
    _write_local_split(local, split)
    if canaries:
        atomic_write_json(local / "canaries.json", {"template": canaries[0].template, "repeats": options.canary_repeats,
                                                    "canaries": [c.as_dict(reveal=True) for c in canaries]})
    progress.note(f"expert package: {out}  (owner-only files: {local})")
    return TrainedExpert(package=out, local=local, manifest=read_json(out / MANIFEST, "manifest"),
                         members=split.members, holdout=split.holdout)


def _fresh_run_id(ledger: Ledger, base: str) -> str:
    """`base` unless a run with that id was already released: a retrain is then a new run (and, under DP, a
    new noise stream), composed with the earlier one. A killed run was never released, so it resumes under
    its own id and continues its own noise stream."""
    run_id, n = base, 1
    while (existing := ledger.run(run_id)) is not None and existing.status == "released":
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def _public_rows(public_data: Path | None, anchor: Anchor, settings: TrainSettings, options: ExpertOptions):
    if public_data is None:
        return None, None
    docs = load_documents(public_data)
    stream = PackedStream(encode_documents(anchor.tokenizer, [d.text for d in docs]),
                          seq_len=settings.seq_len, batch_size=options.public_rows, seed=options.seed)
    record = {
        "public_documents": len(docs),
        "rows_per_step": options.public_rows,
        "public_data_sha256": text_sha256("\n".join(sorted(d.sha256 for d in docs))),
        "trains": "router row only (the expert's output is detached on public rows)",
    }
    return stream, record


def plant_canaries(options: ExpertOptions, *, key: bytes, name: str) -> list:
    """Canaries with secrets drawn from the owner's secret key: nobody else can know or guess them. Each is
    included (planted) with probability 1/2, which the one-run epsilon audit needs."""
    if options.canaries <= 0:
        return []
    from attacks import make_canaries

    seed = secret_seed(key, f"{name}:{options.seed}", "canaries")
    return make_canaries(options.canaries, seed=seed, include_prob=0.5)


def canary_record(canaries: list, options: ExpertOptions, key: bytes) -> dict:
    """What the shared manifest says about canaries: counts and keyed hashes, never a secret."""
    if not canaries:
        return {"planted": 0}
    return {
        "generated": len(canaries),
        "planted": sum(1 for c in canaries if c.included),
        "repeats": options.canary_repeats,
        "inclusion": "each canary planted with probability 1/2 (for the one-run epsilon audit)",
        "hashes": sorted(c.as_dict(hash_key=key)["sha256"] for c in canaries),
        "secrets": "kept by the owner in <package>.local/canaries.json",
    }


def _train_private(model, anchor, members, canaries, options, settings, *, identity, fingerprint, ledger, key,
                   public, checkpoint_dir, resume, name, progress):
    """DP-SGD over privacy units; the ledger refuses the run before any step if it would exceed the cap."""
    dp = options.dp
    by_unit: dict[str, list[str]] = {}
    for d in sorted(members, key=lambda d: d.id):
        by_unit.setdefault(d.subject if dp.unit == "subject" else d.id, []).append(d.text)
    texts = ["".join(t + anchor.tokenizer.eos_token for t in group) for group in by_unit.values()]
    for c in canaries:  # every planted copy is a unit of its own
        if c.included:
            texts.extend([c.text + anchor.tokenizer.eos_token] * options.canary_repeats)
    units = [ids for ids in encode_documents(anchor.tokenizer, texts, add_eos=False)]
    unit_rows, truncated = unit_windows(units, seq_len=settings.seq_len, max_windows=dp.max_windows)
    n = len(unit_rows)
    sample_rate = settings.batch_size / n
    if sample_rate >= 1:
        raise InputError(f"a batch of {settings.batch_size} units is not a sample of {n} units: lower --batch-size")
    delta = dp.delta if dp.delta is not None else default_delta(n)
    if delta >= 1 / n:
        raise InputError(f"delta {delta:g} is not below 1/N = {1 / n:.3g}: such a guarantee is meaningless; lower --delta")
    sigma = dp.noise_multiplier or noise_multiplier_for(
        target_epsilon=dp.target_epsilon, sample_rate=sample_rate, steps=settings.steps, delta=delta, accountant=dp.accountant)
    planned = [Segment(noise_multiplier=sigma, sample_rate=sample_rate, steps=settings.steps)]
    if dp.budget is not None:
        ledger.set_cap(owner=options.owner, dataset=fingerprint["fingerprint"], epsilon=dp.budget, delta=delta,
                       accountant=dp.accountant)
    run_id = _fresh_run_id(ledger, run_id_for({**identity, "sigma": sigma, "delta": delta}))
    ledger.plan_run(owner=options.owner, dataset=fingerprint["fingerprint"], expert=name, segments=planned,
                    delta=delta, unit=dp.unit, accountant=dp.accountant, run_id=run_id)[1].raise_if_exceeded()
    settings_dp = DPSettings(noise_multiplier=sigma, sample_rate=sample_rate, max_grad_norm=dp.max_grad_norm,
                             delta=delta, unit=dp.unit, accountant=dp.accountant, units=n,
                             physical_batch_size=dp.physical_batch_size, engine=dp.engine)
    result, stats = train_dp(model, unit_rows, settings, settings_dp, key=key, run_id=run_id, public=public,
                             checkpoint_dir=checkpoint_dir, resume=resume, identity=identity, progress=progress,
                             description=f"expert {name} (DP)")
    history = [Segment(noise_multiplier=sigma, sample_rate=sample_rate, steps=settings.steps)]
    spent = account(history, delta=delta, accountant=dp.accountant)
    check = spent.cross_check(history)
    privacy = {
        "guarantee": "dp",
        "statement": f"({spent.epsilon:.3g}, {delta:g})-differential privacy for each {dp.unit}"
        + (" (all records of one data subject)" if dp.unit == "subject" else "")
        + (f"; {spent.statement}" if spent.fell_back else ""),
        "epsilon": spent.epsilon,
        "delta": delta,
        "unit": dp.unit,
        "accountant": spent.to_dict()["accountant"],
        "requested_accountant": dp.accountant,
        "fallback": spent.to_dict()["fallback"],
        "sample_rate": sample_rate,
        "noise_multiplier": sigma,
        "steps": settings.steps,
        "max_grad_norm": dp.max_grad_norm,
        "sampling": "Poisson (each unit independently with probability sample_rate)",
        "dataset_size": n,
        "expected_batch_size": round(sample_rate * n, 3),
        "target_epsilon": dp.target_epsilon,
        "cross_check": check.to_dict(),
        "units_truncated": {"count": truncated, "max_tokens_per_unit": dp.max_windows * settings.seq_len},
        "training_statistics": stats,
    }
    return result, privacy, history, run_id


def _write_local_split(local: Path, split) -> None:
    """The owner's own copy of the split (text stays on this machine): holdout text for evaluation and audits."""
    def jsonl(docs: list[Document]) -> str:
        rows = [{"id": d.id, "text": d.text, **({"subject": d.subject} if d.subject else {})} for d in docs]
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    atomic_write_text(local / "holdout.jsonl", jsonl(split.holdout))
    atomic_write_text(local / "members.jsonl", jsonl(split.members))


# --- packages on disk -----------------------------------------------------------------------------------

def write_package(out: Path, tensors: dict[str, torch.Tensor], manifest: dict, *, overwrite: bool,
                  before_publish: Callable[[Path], None] | None = None) -> str:
    """Write the package in a staging directory; `before_publish(staged_dir)` runs when it is complete and
    before it becomes visible at `out` (an exception there publishes nothing)."""
    with staged_directory(out, replace=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "flexaudit-expert"})
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
    """Copy a package's tensors into expert slot `slot` of `model` (router bias excluded)."""
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                getattr(layer.mlp.experts[slot], proj).weight.copy_(package.tensors[f"layers.{i}.mlp.{proj}.weight"])
            layer.mlp.gate.rows[slot].weight.copy_(package.tensors[f"layers.{i}.router.weight"])
