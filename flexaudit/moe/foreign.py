"""Experts trained by other tools: expert K of a FlexOlmo checkpoint as a standard expert package.

The sources a data owner or a compliance officer actually holds: an N-expert pool in the Hugging Face
`FlexOlmo` format (the released model has 7 experts, 33B parameters), or an owner's 2-expert checkpoint
(public + own) converted from the method's training code (OLMo-core). Either on-disk layout of `flex_olmo`
(per-expert `experts.N.{gate,up,down}_proj`, or transformers 5's fused `gate_up_proj` / `down_proj`), one file
or shards with an index, in float32, bfloat16 or float16.

An expert only means something on the anchor it was trained against, so every shared tensor (embeddings,
attention, norms, LM head, and the public expert's FFN and router row) must equal the anchor's, compared in the
anchor's stored dtype; the first one that differs is named in an IntegrityError (exit 3). The package holds
expert K's FFN and router row in every layer, in the anchor's dtype, and a manifest that records where it came
from (the source directory's root digest, the expert index, the layout) and that no training record, data
fingerprint or member/holdout split exists: an audit of it needs the owner's members and non-members.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flexaudit.digest import root_digest
from flexaudit.errors import InputError, IntegrityError
from flexaudit.moe.anchor import load_anchor, software_versions
from flexaudit.moe.checkpoint import (
    checkpoint_dtype,
    expert_layout,
    read_hf_weights,
    read_json,
    read_model_config,
    read_slots,
    refuse_pickle,
    tensor_names,
)
from flexaudit.moe.device import dtype_name
from flexaudit.moe.expert import MANIFEST, PACKAGE_FORMAT, write_package
from flexaudit.names import check_expert_name, check_read_name

UNKNOWN_PRIVACY = {
    "guarantee": "none",
    "statement": "no formal guarantee known: this expert was imported from a checkpoint made by another tool, "
                 "which carries no record of how it was trained",
}
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                       "rope_theta", "rms_norm_eps", "tie_word_embeddings")


def check_shared(anchor_tensors: dict[str, torch.Tensor], source: dict[str, torch.Tensor], *, where: str) -> int:
    """Every anchor tensor (1-expert names) equals the source's (slot 0 = the public expert), exactly, in the
    anchor's dtype. Returns how many were compared; IntegrityError names the first that differs."""
    for name in sorted(anchor_tensors):
        mine = anchor_tensors[name]
        theirs = source.get(name)
        if theirs is None and name == "lm_head.weight":
            theirs = source.get("model.embed_tokens.weight")  # tied embeddings
        if theirs is None:
            raise IntegrityError(f"{where} has no tensor {name}, which the anchor has: it was not made from this anchor")
        if name.endswith(".mlp.gate.weight"):
            theirs = theirs[:1]  # the public expert's router row
        if tuple(theirs.shape) != tuple(mine.shape):
            raise IntegrityError(f"{where}: tensor {name} has shape {tuple(theirs.shape)}, the anchor's is "
                                 f"{tuple(mine.shape)}: it was not trained on this anchor")
        if not torch.equal(theirs.to(mine.dtype), mine):
            raise IntegrityError(f"{where}: shared tensor {name} differs from the anchor's: the expert was trained on "
                                 "another anchor, or the checkpoint was changed; import it against its own anchor")
    return len(anchor_tensors)


def import_expert(
    source: Path,
    *,
    anchor_dir: Path,
    expert: int,
    out: Path,
    name: str | None = None,
    public_expert: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write expert `expert` of the FlexOlmo checkpoint `source` as a package for the anchor at `anchor_dir`.

    Raises:
        InputError: no such directory or expert, the public slot chosen as the expert, `out` exists, a bad name.
        IntegrityError: pickle files, unreadable or non-finite weights, another architecture, or any shared
            tensor that differs from the anchor's (the message names the first).
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputError(f"checkpoint directory not found: {source}")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists: choose another --out or pass --force to replace it")
    refuse_pickle(source)
    cfg = read_model_config(source)
    if cfg.num_experts < 2:
        raise InputError(f"{source} has {cfg.num_experts} expert: an expert is imported from a pool or an owner's "
                         "2-expert checkpoint (import a dense model as an anchor with `flexaudit anchor import`)")
    for index, what in ((expert, "--expert"), (public_expert, "--public-expert")):
        if not 0 <= index < cfg.num_experts:
            raise InputError(f"{what} {index}: {source} has experts 0..{cfg.num_experts - 1}")
    if expert == public_expert:
        raise InputError(f"expert {expert} is the public expert (the anchor's FFN): choose another --expert")
    names_in_source = read_json(source / "config.json", "config.json").get("expert_names")
    if name is None:
        stated = names_in_source[expert] if isinstance(names_in_source, list) and len(names_in_source) == cfg.num_experts else None
        name = check_read_name(stated, what=f"expert {expert}'s name", where=source / "config.json") if stated else f"expert-{expert}"
    check_expert_name(name)

    anchor = load_anchor(anchor_dir, weights=False)
    mismatched = [f for f in ARCHITECTURE_FIELDS
                  if getattr(anchor.config, f) != getattr(cfg.replace(num_experts=1, top_k=1), f)]
    if mismatched:
        f = mismatched[0]
        raise IntegrityError(f"{source} has {f} {getattr(cfg, f)} but the anchor has {getattr(anchor.config, f)}: "
                             "it was not trained on this anchor")
    anchor_tensors = read_hf_weights(anchor.directory)
    tensors = read_slots(source, [public_expert, expert], num_experts=cfg.num_experts)
    compared = check_shared(anchor_tensors, tensors, where=str(source))
    dtype = anchor.stored_dtype
    package = {}
    for i in range(cfg.num_layers):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            package[f"layers.{i}.mlp.{proj}.weight"] = tensors[f"model.layers.{i}.mlp.experts.1.{proj}.weight"].to(dtype).contiguous()
        package[f"layers.{i}.router.weight"] = tensors[f"model.layers.{i}.mlp.gate.weight"][1:2].to(dtype).contiguous()
    del tensors
    layout = expert_layout(tensor_names(source))
    manifest = {
        "format": PACKAGE_FORMAT,
        "name": name,
        "anchor": {"root_digest": anchor.root_digest},
        "architecture": {"vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
                         "intermediate_size": cfg.intermediate_size, "num_layers": cfg.num_layers},
        "source": {
            "from": f"expert {expert} of a {cfg.num_experts}-expert FlexOlmo checkpoint",
            "root_digest": root_digest(source),
            "expert_index": expert,
            "public_expert_index": public_expert,
            "experts_in_source": cfg.num_experts,
            "layout": layout,
            "stored_dtype": dtype_name(checkpoint_dtype(source)),
            "shared_tensors_verified_identical": compared,
        },
        "router": {"init": "imported (trained outside flexaudit)", "public_negatives": "unknown", "bias": "none"},
        "training": {
            "method": "imported: trained outside flexaudit; no training record",
            "trainable": "unknown", "frozen": "verified: every shared tensor equals the anchor's",
            "frozen_tensors_verified_identical": compared,
        },
        "data": {"documents": 0, "fingerprint": "not recorded: imported expert (no training data record)"},
        "split": {"recorded": False, "rule": "none: imported expert; the audit needs --members and --nonmembers"},
        "canaries": {"planted": 0},
        "privacy": UNKNOWN_PRIVACY,
        "software": software_versions(),
    }
    write_package(out, package, manifest, overwrite=overwrite)
    return {"package": str(out), "name": name, "manifest": read_json(out / MANIFEST, "manifest"), "layout": layout}
