"""Merging expert packages into one Hugging Face FlexOlmo checkpoint, and opting experts out.

Merge is concatenation (Shi et al. 2025 §3.3.2): slot 0 and everything shared come from the anchor, slot i
is package i's FFN and router row. No retraining. The merged directory is a standard FlexOlmo checkpoint that
`transformers.AutoModelForCausalLM.from_pretrained` loads; flexaudit.json beside it records which expert
sits in which slot and the root digest of the package it came from.

Opt-out removes an expert's FFN and router row and decrements the expert count. Because routing is softmax
over all logits followed by top-k, that is exactly a router logit of minus infinity (zeroing the row is not:
logit 0 still takes probability mass).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from flexaudit.digest import root_digest
from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json, staged_directory
from flexaudit.moe.anchor import ANCHOR_FILE, load_anchor
from flexaudit.moe.checkpoint import load_flexolmo, read_json, write_hf_checkpoint
from flexaudit.moe.device import Placement
from flexaudit.moe.expert import compose, load_package
from flexaudit.moe.model import FlexOlmo
from flexaudit.names import check_read_name

POOL_FILE = "flexaudit.json"
POOL_FORMAT = "flexaudit-pool/1"
PUBLIC = "public"
@dataclass
class Pool:
    """A merged checkpoint directory and what flexaudit knows about its slots."""

    directory: Path
    info: dict

    @property
    def expert_names(self) -> list[str]:
        return [e["name"] for e in self.info["experts"]]


def merge(
    anchor_dir: Path,
    expert_dirs: list[Path],
    out: Path,
    *,
    top_k: int | None = None,
    tune_router: bool = False,
    public_data: Path | None = None,
    overwrite: bool = False,
    placement: Placement | None = None,
    progress=None,
) -> Pool:
    """Merge packages by concatenation into a checkpoint stored in the anchor's dtype. With tune_router, the
    router rows (only) are then tuned jointly on text sampled from each expert and on `public_data`
    (flexaudit.moe.router_tuning), on `placement` (default: the CPU, in the anchor's dtype)."""
    from flexaudit.progress import NULL_PROGRESS

    progress = progress or NULL_PROGRESS
    if not expert_dirs:
        raise InputError("no expert packages given: merge needs at least one")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists: choose another --out or pass --force to replace it")
    if public_data is not None and not tune_router:
        raise InputError("--public-data is used by router tuning: add --tune-router")
    anchor = load_anchor(anchor_dir, placement=placement if tune_router else None)
    packages = [load_package(d, anchor=anchor) for d in expert_dirs]
    model = compose(anchor, packages, top_k=top_k)
    router = {"rows": "as packaged by each owner (concatenated)"}
    if tune_router:
        from flexaudit.data import load_documents
        from flexaudit.moe.router_tuning import RouterTuning, proxy_corpus
        from flexaudit.moe.router_tuning import tune_router as tune

        public = [d.text for d in load_documents(public_data)] if public_data is not None else []
        tuning = RouterTuning()
        sources = proxy_corpus(anchor, packages, public_texts=public, tuning=tuning, progress=progress)
        model, record = tune(anchor, packages, sources, top_k=model.config.top_k, tuning=tuning, progress=progress)
        router = {"rows": "tuned after merging (router rows only)", "tuning": record}
        model = model.to(device="cpu", dtype=anchor.stored_dtype)
    info = {
        "format": POOL_FORMAT,
        "anchor": {"root_digest": anchor.root_digest},
        "top_k": model.config.top_k,
        "router": router,
        "experts": [{"slot": 0, "name": PUBLIC, "source": "anchor"}]
        + [
            {
                "slot": slot,
                "name": p.name,
                "package_root_digest": p.root_digest,
                "content_root_digest": p.manifest["content_root_digest"],
                "privacy": p.manifest.get("privacy", {}),
                **({"router_bias": "dropped at merge"} if p.has_bias else {}),
            }
            for slot, p in enumerate(packages, start=1)
        ],
    }
    with staged_directory(out, replace=overwrite) as tmp:
        write_hf_checkpoint(tmp, model, tokenizer_from=anchor.directory,
                            extra_config={"expert_names": [e["name"] for e in info["experts"]]})
        info["weights_root_digest"] = root_digest(tmp)
        atomic_write_json(tmp / POOL_FILE, info)
    return Pool(directory=out, info=info)


def read_pool(directory: Path) -> Pool | None:
    path = directory / POOL_FILE
    if not path.is_file():
        return None
    info = read_json(path, POOL_FILE)
    if info.get("format") != POOL_FORMAT:
        raise InputError(f"{path} has format {info.get('format')!r}, expected {POOL_FORMAT!r}")
    experts = info.get("experts")
    if not isinstance(experts, list) or not experts or not all(isinstance(e, dict) for e in experts):
        raise IntegrityError(f"{path} lists no experts: restore the merged model from its source")
    for e in experts:
        check_read_name(e.get("name"), what="an expert name", where=path)
    return Pool(directory=directory, info=info)


def expert_names_of(directory: Path, num_experts: int) -> list[str]:
    pool = read_pool(directory)
    if pool is not None:
        return pool.expert_names
    if (directory / ANCHOR_FILE).is_file() or num_experts == 1:
        return [PUBLIC]
    stated = read_json(directory / "config.json", "config.json").get("expert_names")
    if isinstance(stated, list) and len(stated) == num_experts:  # a checkpoint flexaudit or another tool named
        return [check_read_name(n, what="an expert name", where=directory / "config.json") for n in stated]
    return [PUBLIC] + [f"expert-{i}" for i in range(1, num_experts)]


def resolve_slots(names: list[str], exclude: list[str]) -> list[int]:
    slots = []
    for name in exclude:
        if name == PUBLIC:
            raise InputError("the public expert cannot be excluded: it is the anchor every expert was trained against")
        if name not in names:
            raise InputError(f"no expert named {name!r} in this model (experts: {', '.join(names)})")
        slots.append(names.index(name))
    return slots


def _renumbered(name: str, keep: list[int]) -> str | None:
    """The tensor's name once only the `keep` slots remain, or None if its slot is removed."""
    for kind in (".mlp.experts.", ".mlp.gate.rows."):
        if kind in name:
            head, rest = name.split(kind)
            slot, tail = rest.split(".", 1)
            return f"{head}{kind}{keep.index(int(slot))}.{tail}" if int(slot) in keep else None
    return name


def remove_experts(model: FlexOlmo, slots: list[int]) -> FlexOlmo:
    """A new model without these expert slots: FFNs and router rows gone, top-k capped at what remains."""
    if not slots:
        return model
    keep = [e for e in range(model.config.num_experts) if e not in set(slots)]
    cfg = model.config.replace(num_experts=len(keep), top_k=min(model.config.top_k, len(keep)), router_bias=False)
    state = {new: t for name, t in model.state_dict().items() if (new := _renumbered(name, keep)) is not None}
    with torch.device("meta"):
        pruned = FlexOlmo(cfg)
    pruned.load_state_dict(state, strict=True, assign=True)  # the kept tensors themselves: no copy
    if cfg.tie_word_embeddings:
        pruned.lm_head.weight = pruned.model.embed_tokens.weight
    pruned.reset_buffers()
    return pruned.eval()


def open_model(path: Path, *, anchor_dir: Path | None = None, exclude: list[str] = (),
               placement: Placement | None = None) -> tuple[FlexOlmo, list[str], Path]:
    """Any model flexaudit can run: an anchor, a merged pool, an expert package (with its anchor) or a plain
    FlexOlmo/OLMo-2 directory, read into `placement` (default: the CPU, as stored). Returns the model
    (excluded experts removed), slot names, tokenizer dir."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        if anchor_dir is None:
            raise InputError(f"{path} is an expert package: pass --anchor DIR to run it on its anchor")
        anchor = load_anchor(anchor_dir, placement=placement)
        package = load_package(path, anchor=anchor)
        model, names, tokenizer_dir = compose(anchor, [package], top_k=2), [PUBLIC, package.name], anchor.directory
    elif (path / ANCHOR_FILE).is_file():
        anchor = load_anchor(path, placement=placement)
        model, names, tokenizer_dir = anchor.model, [PUBLIC], path
    else:
        model = load_flexolmo(path, device=placement.device if placement else "cpu",
                              dtype=placement.dtype if placement else None)
        names, tokenizer_dir = expert_names_of(path, model.config.num_experts), path
    slots = resolve_slots(names, list(exclude))
    return remove_experts(model, slots), [n for i, n in enumerate(names) if i not in slots], tokenizer_dir


def export_for_transformers(path: Path, *, anchor_dir: Path | None = None, exclude: list[str] = ()) -> tempfile.TemporaryDirectory:
    """A temporary standard checkpoint of exactly the model `open_model` gives, in its stored dtype (for
    generation and attacks through transformers, which read it into their own placement). The caller keeps
    the returned object alive while it uses `.name`."""
    model, names, tokenizer_dir = open_model(path, anchor_dir=anchor_dir, exclude=exclude)
    tmp = tempfile.TemporaryDirectory(prefix="flexaudit-model-")
    write_hf_checkpoint(Path(tmp.name), model, tokenizer_from=tokenizer_dir, extra_config={"expert_names": names})
    return tmp
