"""The owner's expert run: the method's expert training, accounted in the owner's privacy ledger.

Every run is planned in the ledger before its first step and recorded as released before its package becomes
visible, so the ledger is never behind what was shared. A run without DP is recorded as "no formal guarantee";
with `ExpertOptions.dp` the expert trains with DP-SGD (flexaudit.privacy.dpsgd) over privacy units (a document,
or every record of one data subject), and the ledger refuses the run before any step if it would exceed the
dataset's cap. The method itself (upcycling the anchor, the frozen tensors, the package format) is
flexaudit.moe.expert; the training loops are flexaudit.moe.training and flexaudit.privacy.dpsgd.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from flexaudit.data import Document, load_documents
from flexaudit.data.split import dataset_fingerprint, owner_home, owner_key, split_documents
from flexaudit.digest import root_digest, text_sha256
from flexaudit.errors import InputError
from flexaudit.fsutil import atomic_write_json, atomic_write_text, check_can_create
from flexaudit.moe import distributed
from flexaudit.moe.anchor import Anchor, load_anchor, local_dir, software_versions
from flexaudit.moe.checkpoint import read_json
from flexaudit.moe.device import CPU_FLOAT32, Placement, dtype_name
from flexaudit.moe.expert import (
    MANIFEST,
    NO_GUARANTEE,
    PACKAGE_FORMAT,
    ExpertOptions,
    package_tensors,
    upcycle,
    verify_frozen,
    write_package,
)
from flexaudit.moe.router_init import router_rows
from flexaudit.moe.tokenizer import encode_documents
from flexaudit.moe.training import PackedStream, RouterContrastStream, TrainSettings, train
from flexaudit.names import check_expert_name, check_name
from flexaudit.privacy.accountants import account, default_delta, noise_multiplier_for
from flexaudit.privacy.dpsgd import DPSettings, run_id_for, secret_seed, train_dp, unit_windows
from flexaudit.privacy.ledger import Ledger, Segment
from flexaudit.progress import NULL_PROGRESS, Progress

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
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
    fsdp: bool = False,
) -> TrainedExpert:
    """Train one expert against the frozen anchor and write its package.

    `home` holds the owner's secret key and privacy ledger (default: $FLEXAUDIT_HOME); owner-side files
    (checkpoints, the split's text, canary secrets) go to `<out>.local`. With `public_data`, a few rows of
    public text per step teach the router where the public expert is better (see RouterContrastStream);
    the expert itself still learns from the owner's data only. With `options.dp`, training is DP-SGD and
    the privacy ledger must allow the run before it starts. The anchor is read into `placement` (device and
    compute dtype; the expert trains in float32 master weights) and the package is stored in the anchor's
    dtype.

    Under torchrun (flexaudit.moe.distributed) the steps run data-parallel over the processes (`fsdp` shards
    the anchor and the expert with FSDP2; not with DP) and rank 0 alone reads the owner's key, plans and
    releases the run in the ledger and writes the package and the owner's files; every rank returns the same
    TrainedExpert."""
    check_expert_name(name)
    check_name(options.owner, what="owner name")
    world = distributed.current()
    progress = world.progress(progress)
    dp = options.dp
    if dp is not None:
        dp.validate(subject_field=subject_field)
        if fsdp:
            raise InputError("--fsdp is not available with --dp: DP-SGD runs data-parallel across the processes "
                             "(every rank holds the model); drop --fsdp")
    distributed.check_fsdp(world, fsdp)

    def check_out() -> None:
        if out.exists() and not overwrite:
            if resume and (out / MANIFEST).is_file():
                raise InputError(f"{out} already holds a finished package: nothing to resume (pass --force to retrain)")
            raise InputError(f"{out} already exists: choose another --out or pass --force to replace it")

    world.on_main(check_out)
    # with fsdp the whole model stays in host memory and each rank's shards go to the device (training.train)
    anchor = load_anchor(anchor_dir, placement=Placement(torch.device("cpu"), placement.dtype) if fsdp else placement)
    docs = load_documents(data, subject_field=subject_field)
    unit = dp.unit if dp is not None else "document"
    split = split_documents(docs, seed=options.seed, holdout_fraction=options.holdout_fraction, by_subject=unit == "subject")
    settings = options.settings(anchor.config.max_seq_len)
    home = home or owner_home()
    # the key seeds the DP sampler and noise: every rank must hold rank 0's (homes need not be shared)
    key = bytes.fromhex(world.on_main(lambda: owner_key(home).hex()))
    fingerprint = dataset_fingerprint(docs, key)
    local = local_dir(out)
    # before training and the ledger, not at the first checkpoint: an --out the file system refuses (a file in its
    # path, a folder this process may not write) fails before any work
    world.on_main(lambda: check_can_create(local))

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
    ledger = Ledger(home / "ledger.db") if world.main else None  # rank 0 alone reads and writes the ledger
    if dp is None:
        def plan() -> str:
            run_id = _fresh_run_id(ledger, run_id_for(identity))
            ledger.plan_run(owner=options.owner, dataset=fingerprint["fingerprint"], expert=name, segments=None,
                            delta=None, run_id=run_id)
            return run_id

        run_id = world.on_main(plan)
        stream = PackedStream(encode_documents(anchor.tokenizer, training_texts), seq_len=settings.seq_len,
                              batch_size=settings.batch_size, seed=options.seed)
        result = train(
            model, RouterContrastStream(stream, public, anchor_weight=options.anchor_weight) if public else stream, settings,
            checkpoint_dir=local / "checkpoints", resume=resume, identity=identity, placement=placement,
            progress=progress, description=f"expert {name}", fsdp=fsdp,
        )
        privacy, segments = NO_GUARANTEE, None
    else:
        result, privacy, segments, run_id = _train_private(
            model, anchor, split.members, canaries, options, settings, identity=identity, fingerprint=fingerprint,
            ledger=ledger, key=key, public=public, checkpoint_dir=local / "checkpoints", resume=resume,
            name=name, placement=placement, progress=progress, world=world,
        )

    def publish() -> dict:
        """Rank 0's part after training: verify the frozen tensors, write the package (the ledger records its
        release first) and the owner's files; the manifest as written."""
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
                "compute_dtype": dtype_name(placement.dtype),
                "stored_dtype": dtype_name(anchor.stored_dtype),
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

        write_package(out, package_tensors(model, dtype=anchor.stored_dtype), manifest, overwrite=overwrite,
                      before_publish=release)
        _write_local_split(local, split)
        if canaries:
            atomic_write_json(local / "canaries.json", {"template": canaries[0].template, "repeats": options.canary_repeats,
                                                        "canaries": [c.as_dict(reveal=True) for c in canaries]})
        progress.note(f"expert package: {out}  (owner-only files: {local})")
        return read_json(out / MANIFEST, "manifest")

    manifest = world.on_main(publish)
    return TrainedExpert(package=out, local=local, manifest=manifest, members=split.members, holdout=split.holdout)


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
                   public, checkpoint_dir, resume, name, placement, progress, world=distributed.SINGLE):
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

    def plan() -> str:  # rank 0 alone; a refusal stops every rank
        if dp.budget is not None:
            ledger.set_cap(owner=options.owner, dataset=fingerprint["fingerprint"], epsilon=dp.budget, delta=delta,
                           accountant=dp.accountant)
        run_id = _fresh_run_id(ledger, run_id_for({**identity, "sigma": sigma, "delta": delta}))
        ledger.plan_run(owner=options.owner, dataset=fingerprint["fingerprint"], expert=name, segments=planned,
                        delta=delta, unit=dp.unit, accountant=dp.accountant, run_id=run_id)[1].raise_if_exceeded()
        return run_id

    run_id = world.on_main(plan)
    settings_dp = DPSettings(noise_multiplier=sigma, sample_rate=sample_rate, max_grad_norm=dp.max_grad_norm,
                             delta=delta, unit=dp.unit, accountant=dp.accountant, units=n,
                             physical_batch_size=dp.physical_batch_size, engine=dp.engine)
    result, stats = train_dp(model, unit_rows, settings, settings_dp, key=key, run_id=run_id, public=public,
                             checkpoint_dir=checkpoint_dir, resume=resume, identity=identity, placement=placement,
                             progress=progress, description=f"expert {name} (DP)")
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


