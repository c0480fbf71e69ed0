"""Reading and writing Hugging Face checkpoint directories, safely.

Only safetensors are ever read: a directory holding pickle-format weights (`*.bin`, `*.pt`, ...) is refused
with an integrity error, because unpickling runs arbitrary code. Every tensor read is checked for a
floating dtype and finite values before it reaches a model.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json, save_tensors
from flexaudit.moe.model import FlexOlmo, ModelConfig

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_SHARD_BYTES = 5 * 2**30  # shards of at most 5 GiB, as transformers writes them


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


def _checked(name: str, t: torch.Tensor, path: Path) -> None:
    if not t.is_floating_point():
        raise IntegrityError(f"{path}: tensor {name} has dtype {t.dtype}; weights must be floating point")
    if not torch.isfinite(t).all():
        raise IntegrityError(f"{path}: tensor {name} holds NaN or infinite values; the artifact is corrupt")


def read_safetensors(path: Path, *, what: str = "weights", dtype: torch.dtype | None = None,
                     device: torch.device | str = "cpu", keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file tensor by tensor into `dtype` (default: as stored) on `device`, refusing
    non-float dtypes and non-finite values. Only one tensor at a time exists in another dtype, so a bfloat16
    model never passes through a float32 copy. `keys` limits what is read."""
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    device = torch.device(device)
    tensors = {}
    try:
        # Read straight onto the GPU when that is the target: the host never holds the whole model.
        with safe_open(str(path), framework="pt", device=str(device) if device.type == "cuda" else "cpu") as fh:
            for k in fh.keys():
                if keys is not None and k not in keys:
                    continue
                t = fh.get_tensor(k)
                _checked(k, t, path)
                tensors[k] = t.to(device=device, dtype=dtype or t.dtype)
    except (SafetensorError, OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is not a readable safetensors file ({exc}): re-copy it from its source") from None
    return tensors


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint: one model.safetensors, or the shards its index names."""
    refuse_pickle(directory)
    if (directory / WEIGHTS).is_file():
        return [directory / WEIGHTS]
    index = directory / INDEX
    if index.is_file():
        weight_map = read_json(index, "shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(f"{index} lists no shards: restore the checkpoint's index")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard.startswith("."):
                raise IntegrityError(f"{index} names a shard outside the checkpoint ({shard!r}): refusing it")
            if not (directory / shard).is_file():
                raise InputError(f"{index} lists shard {shard}, which is missing: copy the whole checkpoint")
        return [directory / shard for shard in shards]
    raise InputError(f"no {WEIGHTS} (or {INDEX}) in {directory}: a checkpoint directory needs safetensors weights")


def tensor_names(directory: Path) -> list[str]:
    """The names of a checkpoint's tensors, read from the safetensors headers only."""
    names = []
    for path in weight_files(directory):
        try:
            with safe_open(str(path), framework="pt") as fh:
                names.extend(fh.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise IntegrityError(f"{path} is not a readable safetensors file ({exc}): re-copy it from its source") from None
    return names


def read_hf_weights(directory: Path, *, dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
                    keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face checkpoint (one file or shards), in `dtype` on `device`, under the
    per-expert names whichever layout is on disk (see `expert_layout`)."""
    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        what = "weights" if path.name == WEIGHTS else "weight shard"
        tensors.update(read_safetensors(path, what=what, dtype=dtype, device=device, keys=keys))
    return per_expert_layout(tensors)


def read_slots(directory: Path, slots: list[int], *, num_experts: int, dtype: torch.dtype | None = None,
               device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The shared tensors and the experts `slots` of an N-expert checkpoint, renumbered 0..len(slots)-1 in the
    given order (router rows too), as a len(slots)-expert checkpoint's tensors. Only those experts are kept in
    memory: in the per-expert layout the others are never read, and slices of fused tensors are copied out
    tensor by tensor. A dense checkpoint is returned whole (it is one expert)."""
    for slot in slots:
        if not 0 <= slot < num_experts:
            raise InputError(f"expert {slot} does not exist: {directory} has experts 0..{num_experts - 1}")
    out: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        try:
            with safe_open(str(path), framework="pt") as fh:
                for name in fh.keys():
                    kept = _slot_tensors(name, lambda: fh.get_tensor(name), slots)
                    for new_name, t in kept.items():
                        _checked(new_name, t, path)
                        out[new_name] = t.to(device=device, dtype=dtype or t.dtype)
        except (SafetensorError, OSError, ValueError) as exc:
            raise IntegrityError(f"{path} is not a readable safetensors file ({exc}): re-copy it from its source") from None
    return out


def _slot_tensors(name: str, read, slots: list[int]) -> dict[str, torch.Tensor]:
    """What tensor `name` contributes to the checkpoint of `slots` (read() loads it only when it is needed)."""
    if name.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")):  # fused [E, ...]
        t = read()
        prefix, kind = name.rsplit(".", 1)
        if kind == "down_proj":
            return {f"{prefix}.{j}.down_proj.weight": t[e].clone() for j, e in enumerate(slots)}
        inter = t.shape[1] // 2
        return {k: v for j, e in enumerate(slots) for k, v in
                ((f"{prefix}.{j}.gate_proj.weight", t[e, :inter].clone()), (f"{prefix}.{j}.up_proj.weight", t[e, inter:].clone()))}
    if ".mlp.experts." in name:  # model.layers.{i}.mlp.experts.{e}.{proj}.weight
        head, rest = name.split(".mlp.experts.", 1)
        e, tail = rest.split(".", 1)
        if int(e) not in slots:
            return {}
        return {f"{head}.mlp.experts.{slots.index(int(e))}.{tail}": read()}
    if name.endswith(".mlp.gate.weight"):
        return {name: read()[slots].clone()}
    return {name: read()}


def expert_layout(names) -> str:
    """How a checkpoint stores its FFNs: "per-expert" (`mlp.experts.N.gate_proj.weight`, what transformers
    writes), "fused" (`mlp.experts.gate_up_proj` [E, 2I, H] and `mlp.experts.down_proj` [E, H, I], the
    in-memory layout of transformers 5 that other tools save as is) or "dense" (OLMo-2's `mlp.gate_proj`)."""
    names = list(names)
    if any(n.endswith(".mlp.experts.gate_up_proj") for n in names):
        return "fused"
    if any(".mlp.experts." in n for n in names):
        return "per-expert"
    return "dense"


def per_expert_layout(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fused expert tensors split into per-expert ones (views, no copy); other layouts unchanged.

    transformers 5 computes `gate, up = linear(x, gate_up_proj[e]).chunk(2, dim=-1)`, so the first I rows of
    gate_up_proj[e] are expert e's gate_proj and the last I its up_proj."""
    if expert_layout(tensors) != "fused":
        return tensors
    out = {}
    for name, t in tensors.items():
        if name.endswith(".mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            if t.ndim != 3 or t.shape[1] % 2:
                raise IntegrityError(f"tensor {name} has shape {tuple(t.shape)}; a fused gate_up_proj is [E, 2I, H]")
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :inter]
                out[f"{prefix}{e}.up_proj.weight"] = t[e, inter:]
        elif name.endswith(".mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            if t.ndim != 3:
                raise IntegrityError(f"tensor {name} has shape {tuple(t.shape)}; a fused down_proj is [E, H, I]")
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return out


def checkpoint_dtype(directory: Path) -> torch.dtype:
    """The dtype most of a checkpoint's weights are stored in (read from the safetensors headers only)."""
    counts: dict[str, int] = {}
    for path in weight_files(directory):
        try:
            with safe_open(str(path), framework="pt") as fh:
                for k in fh.keys():
                    sl = fh.get_slice(k)
                    dtype = sl.get_dtype()
                    counts[dtype] = counts.get(dtype, 0) + math.prod(sl.get_shape())
        except (SafetensorError, OSError, ValueError) as exc:
            raise IntegrityError(f"{path} is not a readable safetensors file ({exc}): re-copy it from its source") from None
    if not counts:
        raise InputError(f"{directory} holds no tensors")
    name = max(counts, key=counts.get)
    table = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    if name not in table:
        raise IntegrityError(f"{directory}: weights are stored as {name}; flexaudit reads F32, BF16 or F16 weights")
    return table[name]


def read_model_config(directory: Path) -> ModelConfig:
    return ModelConfig.from_hf(read_json(directory / "config.json", "config.json"))


def load_flexolmo(directory: str | Path, *, device: torch.device | str = "cpu",
                  dtype: torch.dtype | None = None) -> FlexOlmo:
    """flexaudit's own model from a FlexOlmo (or dense OLMo-2) Hugging Face directory, in `dtype` (default: as
    stored) on `device`; the weights go straight there, without a float32 copy of the model."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"model directory not found: {directory}")
    cfg = read_model_config(directory)
    return FlexOlmo.from_hf_state_dict(cfg, read_hf_weights(directory, dtype=dtype, device=device)).eval()


def write_hf_checkpoint(
    directory: Path, model: FlexOlmo, *, tokenizer_from: Path | None = None, extra_config: dict | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> None:
    """Write a standard FlexOlmo checkpoint (config.json, safetensors weights in the model's dtype, tokenizer)
    into `directory`: one model.safetensors, or shards of at most `max_shard_bytes` with an index, as
    transformers writes them. `extra_config` adds keys to config.json (transformers keeps unknown keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.hf_state_dict().items()}
    dtype = str(model.model.embed_tokens.weight.dtype).removeprefix("torch.")
    atomic_write_json(directory / "config.json", {**model.config.hf_config(dtype=dtype), **(extra_config or {})})
    atomic_write_json(
        directory / "generation_config.json",
        {"eos_token_id": model.config.eos_token_id, "pad_token_id": model.config.pad_token_id},
    )
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    if len(shards) == 1:
        save_tensors(shards[0], str(directory / WEIGHTS), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_tensors(shard, str(directory / file), metadata={"format": "pt"})
            weight_map.update({name: file for name in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        atomic_write_json(directory / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
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
