"""Reading and writing Hugging Face checkpoint directories, safely.

Only safetensors are ever read: a directory holding pickle-format weights (`*.bin`, `*.pt`, ...) is refused
with an integrity error, because unpickling runs arbitrary code. Every tensor read is checked for a
floating dtype and finite values before it reaches a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json
from flexaudit.moe.model import FlexOlmo, ModelConfig

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WEIGHTS = "model.safetensors"


def refuse_pickle(directory: Path) -> None:
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES:
            raise IntegrityError(
                f"{p} is a pickle-format file, which flexaudit never loads (it can run code): "
                "convert the weights to safetensors and remove it"
            )


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): restore it from the original artifact") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data


def read_safetensors(path: Path, *, what: str = "weights") -> dict[str, torch.Tensor]:
    """Load a safetensors file, refusing non-float dtypes and non-finite values."""
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is not a readable safetensors file ({exc}): re-copy it from its source") from None
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise IntegrityError(f"{path}: tensor {name} has dtype {t.dtype}; weights must be floating point")
        if not torch.isfinite(t).all():
            raise IntegrityError(f"{path}: tensor {name} holds NaN or infinite values; the artifact is corrupt")
    return tensors


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face checkpoint: one model.safetensors or an index of shards."""
    refuse_pickle(directory)
    index = directory / "model.safetensors.index.json"
    if (directory / WEIGHTS).is_file():
        return read_safetensors(directory / WEIGHTS)
    if index.is_file():
        shards = sorted(set(read_json(index, "shard index").get("weight_map", {}).values()))
        if not shards:
            raise InputError(f"{index} lists no shards")
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(read_safetensors(directory / shard, what="weight shard"))
        return tensors
    raise InputError(f"no {WEIGHTS} in {directory}: a checkpoint directory needs safetensors weights")


def read_model_config(directory: Path) -> ModelConfig:
    return ModelConfig.from_hf(read_json(directory / "config.json", "config.json"))


def load_flexolmo(directory: str | Path) -> FlexOlmo:
    """flexaudit's own model from a FlexOlmo (or dense OLMo-2) Hugging Face directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"model directory not found: {directory}")
    cfg = read_model_config(directory)
    return FlexOlmo.from_hf_state_dict(cfg, read_hf_weights(directory)).eval()


def write_hf_checkpoint(
    directory: Path, model: FlexOlmo, *, tokenizer_from: Path | None = None, extra_config: dict | None = None
) -> None:
    """Write a standard FlexOlmo checkpoint (config.json, model.safetensors, tokenizer) into `directory`.

    `extra_config` adds keys to config.json (transformers keeps unknown keys as config attributes)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "config.json", {**model.config.hf_config(), **(extra_config or {})})
    atomic_write_json(
        directory / "generation_config.json",
        {"eos_token_id": model.config.eos_token_id, "pad_token_id": model.config.pad_token_id},
    )
    save_file(model.hf_state_dict(), str(directory / WEIGHTS), metadata={"format": "pt"})
    if tokenizer_from is not None:
        copy_tokenizer(tokenizer_from, directory)


def copy_tokenizer(src: Path, dst: Path) -> None:
    found = False
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            found = True
    if not found:
        raise InputError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {src}")
