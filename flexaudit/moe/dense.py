"""The dense baseline: the anchor fine-tuned on one owner's documents with every parameter trained.

The method's privacy result is comparative (Shi et al. 2025, §5.3): the extraction attack recovered training
data 0.7% of the time from the merged model, 1.6% from a dense model fine-tuned on the same data and 0.1% from
the public model. `train_dense_baseline` builds that dense comparison for one expert: the anchor's dense form
(one expert) with embeddings, attention, norms, FFN and head all trained, on exactly the expert's member
documents (its owner-side split `<package>.local/members.jsonl`, and any canaries planted in it) with the
expert's own recorded schedule (steps, batch, sequence length, learning rate, warm-up, decay and seed), so
that every step sees the same token batch the expert's step saw. The expert's public router rows are not
repeated: a dense model has no router.

It is the owner's comparison, never a contribution: it changes every weight the owners share, so it has no
expert manifest and cannot be merged or admitted, and it is written beside the owner's other private files
(default `<package>.local/dense-baseline`). Its directory is a standard 1-expert FlexOlmo checkpoint with the
anchor's tokenizer, so attacks and `flexaudit eval` run on it, plus `dense-baseline.json` saying what it is.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from flexaudit.data import load_documents
from flexaudit.digest import root_digest
from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json, check_can_create, staged_directory
from flexaudit.moe.anchor import Anchor, load_anchor, local_dir
from flexaudit.moe.checkpoint import read_json, write_hf_checkpoint
from flexaudit.moe.device import CPU_FLOAT32, Placement
from flexaudit.moe.expert import load_package
from flexaudit.moe.model import FlexOlmo
from flexaudit.moe.tokenizer import encode_documents
from flexaudit.moe.training import PackedStream, TrainResult, TrainSettings, train
from flexaudit.progress import NULL_PROGRESS, Progress

BASELINE_FILE = "dense-baseline.json"
BASELINE_FORMAT = "flexaudit-dense-baseline/1"
DEFAULT_NAME = "dense-baseline"


@dataclass
class DenseBaseline:
    directory: Path
    info: dict

    @property
    def root_digest(self) -> str:
        return self.info["root_digest"]


def default_location(expert_dir: Path) -> Path:
    """Where an expert's dense baseline goes unless told otherwise: among the owner's private files."""
    return local_dir(Path(expert_dir)) / DEFAULT_NAME


def expert_schedule(manifest: dict) -> TrainSettings:
    """The training schedule an expert's manifest records, for a fine-tune that repeats it step for step.
    Raises InputError when a setting is not recorded or the expert was trained with DP-SGD."""
    recorded = manifest.get("training") or {}
    fields = ("steps", "batch_size", "seq_len", "lr", "warmup_steps", "min_lr_ratio", "weight_decay",
              "max_grad_norm", "seed")
    missing = [f for f in fields if recorded.get(f) is None]
    if missing:
        raise InputError(f"the expert's manifest does not record its {', '.join(missing)}: its dense baseline "
                         "cannot repeat its schedule")
    if (manifest.get("privacy") or {}).get("guarantee") == "dp":
        raise InputError("this expert was trained with DP-SGD, whose batches are Poisson samples of privacy units: "
                         "a dense baseline cannot repeat them; compare with the non-DP expert on the same data")
    return TrainSettings(**{f: recorded[f] for f in fields})


def member_texts(local: Path) -> list[str]:
    """The texts an expert trained on, from its owner-side files `local` (`<package>.local`): its member
    documents and each canary it planted, as often as it was planted. Raises InputError when they are missing."""
    members = local / "members.jsonl"
    if not members.is_file():
        raise InputError(f"the expert's member documents are not at {members}: train the dense baseline where the "
                         "expert was trained (its owner-side files)")
    texts = [d.text for d in load_documents(members)]
    canaries = local / "canaries.json"
    if canaries.is_file():  # planted as the expert's training planted them: each included canary, `repeats` times
        record = json.loads(canaries.read_text(encoding="utf-8"))
        texts += [c["text"] for c in record["canaries"] if c.get("included") for _ in range(int(record["repeats"]))]
    return texts


def fine_tune(anchor: Anchor, texts: list[str], settings: TrainSettings, *, checkpoint_dir: Path, identity: dict,
              trainable: Callable[[str], bool] = lambda name: True, resume: bool = False,
              placement: Placement = CPU_FLOAT32, progress: Progress = NULL_PROGRESS,
              description: str = "fine-tuning") -> tuple[FlexOlmo, TrainResult]:
    """The anchor's dense form (one expert) fine-tuned on `texts` with `settings`, the parameters whose name
    `trainable` accepts trained (by default every one), in float32 master weights on `placement`'s device;
    checkpoints and resume as flexaudit.moe.training.train."""
    model = FlexOlmo(anchor.config).to(placement.device)  # float32: the optimizer's master weights
    model.load_state_dict(anchor.model.state_dict())
    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name))
    stream = PackedStream(encode_documents(anchor.tokenizer, texts), seq_len=settings.seq_len,
                          batch_size=settings.batch_size, seed=settings.seed)
    result = train(model, stream, settings, checkpoint_dir=checkpoint_dir, resume=resume, identity=identity,
                   placement=placement, progress=progress, description=description)
    return model, result


def train_dense_baseline(
    expert_dir: Path,
    *,
    anchor_dir: Path,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
) -> DenseBaseline:
    """Fine-tune every parameter of the anchor on the expert's member documents with the expert's schedule.

    Writes a 1-expert FlexOlmo checkpoint and dense-baseline.json to `out` (default
    `<expert>.local/dense-baseline`). Raises InputError when the expert's owner-side files are missing, its
    schedule is not recorded or it was trained with DP; IntegrityError when the package fails verification or
    names another anchor. Trains on `placement` as the expert does (float32 master weights, autocast in a half
    dtype) and stores the weights in the anchor's dtype."""
    expert_dir = Path(expert_dir)
    out = Path(out) if out is not None else default_location(expert_dir)
    if out.exists() and not overwrite and not resume:
        raise InputError(f"{out} already exists: choose another --out or pass --force to replace it")
    anchor = load_anchor(anchor_dir, placement=placement)
    package = load_package(expert_dir, anchor=anchor)
    settings = expert_schedule(package.manifest)
    if settings.seq_len > anchor.config.max_seq_len:
        raise InputError(f"the expert's sequence length {settings.seq_len} exceeds the anchor's context")
    texts = member_texts(local_dir(expert_dir))
    identity = {"kind": "dense-baseline", "expert": package.root_digest, "anchor": anchor.root_digest}
    check_can_create(local_dir(out))  # before training: an --out the file system refuses fails now
    model, result = fine_tune(anchor, texts, settings, checkpoint_dir=local_dir(out) / "checkpoints",
                              identity=identity, resume=resume, placement=placement, progress=progress,
                              description=f"dense baseline of {package.name}")
    info = {
        "format": BASELINE_FORMAT,
        "purpose": ("the owner's comparison for the extraction table: the anchor fine-tuned with every parameter "
                    "trained on the expert's member documents; never share, merge or admit it"),
        "expert": {"name": package.name, "root_digest": package.root_digest},
        "anchor": {"root_digest": anchor.root_digest},
        "training": {**asdict(settings), "trainable": "every parameter", "documents": len(texts),
                     "tokens": result.tokens, "epochs": round(result.epochs, 3),
                     "final_loss": round(result.final_loss, 5), "seconds": round(result.seconds, 1)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with staged_directory(out, replace=overwrite or resume) as tmp:
        write_hf_checkpoint(tmp, model.eval().to(anchor.stored_dtype), tokenizer_from=anchor.directory,
                            extra_config={"expert_names": [f"dense-{package.name}"]})
        info["root_digest"] = root_digest(tmp, exclude=[BASELINE_FILE])
        atomic_write_json(tmp / BASELINE_FILE, info)
    return DenseBaseline(directory=out, info=info)


def read_dense_baseline(directory: Path, *, expert_root_digest: str | None = None,
                        anchor_root_digest: str | None = None) -> DenseBaseline:
    """A dense baseline's record, checked: its files still hash to the digest it states, and (when given) it
    was trained for this expert on this anchor. Raises InputError if it is not one, IntegrityError if it was
    modified or belongs to another expert or anchor."""
    directory = Path(directory)
    info = read_json(directory / BASELINE_FILE, f"{BASELINE_FILE} (is this made by `flexaudit baseline dense`?)")
    if info.get("format") != BASELINE_FORMAT:
        raise InputError(f"{directory / BASELINE_FILE} has format {info.get('format')!r}, expected {BASELINE_FORMAT!r}")
    if root_digest(directory, exclude=[BASELINE_FILE]) != info.get("root_digest"):
        raise IntegrityError(f"dense baseline {directory} was modified since it was trained: train it again")
    if expert_root_digest is not None and info["expert"]["root_digest"] != expert_root_digest:
        raise IntegrityError(f"dense baseline {directory} was trained for another version of expert "
                             f"{info['expert']['name']!r}: train it again for this package")
    if anchor_root_digest is not None and info["anchor"]["root_digest"] != anchor_root_digest:
        raise IntegrityError(f"dense baseline {directory} was trained from another anchor")
    return DenseBaseline(directory=directory, info=info)


__all__ = ["DenseBaseline", "train_dense_baseline", "read_dense_baseline", "default_location"]
