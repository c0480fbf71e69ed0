"""Loading the model under attack: any Hugging Face causal LM from a local directory, safetensors only.

The attack library is model-agnostic: it needs `AutoModelForCausalLM` + `AutoTokenizer` and nothing
else. It never downloads (`local_files_only=True`; a hub id that is not a local directory is refused)
and never unpickles: a directory whose only weights are pickle files (`*.bin`, `*.pt`, `*.pth`,
`*.pkl`, `*.ckpt`) is refused with `IntegrityError`, because loading those runs arbitrary code.

A model that is already in memory (e.g. one `flexaudit` just assembled from anchor + expert) is
wrapped with `CausalLM.from_model(model, tokenizer)` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import InputError, IntegrityError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass
class CausalLM:
    """A causal LM ready for scoring and decoding.

    Attributes:
        model: the `transformers` model, in eval mode, on `device`.
        tokenizer: its tokenizer.
        device: where forward passes run ("cpu", "cuda", "cuda:1", ...).
        name: a label for reports (the directory name by default); never used for logic.
        tokenizer_fingerprint: SHA-256 of the tokenizer's serialised form; two models with equal
            fingerprints tokenise every text identically, so their per-token scores are comparable.
        shard: None (one process), or this process's `attacks.sharding.Shard` when every process of a
            torch.distributed job holds the model: scoring and decoding are then split over the processes and
            every process gets every result (see attacks.sharding).
    """

    model: Any
    tokenizer: Any
    device: torch.device
    name: str = "model"
    tokenizer_fingerprint: str = field(default="")
    shard: Any = None

    def __post_init__(self) -> None:
        if not self.tokenizer_fingerprint:
            self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, device: str | torch.device | None = None,
                   name: str = "model", shard: Any = None) -> "CausalLM":
        """Wraps an in-memory model (moved to `device` if given, put in eval mode)."""
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        model = model.to(dev).eval()
        return cls(model=model, tokenizer=tokenizer, device=dev, name=name, shard=shard)

    @property
    def context_length(self) -> int:
        """The longest sequence the model accepts (config.max_position_embeddings, else 1024)."""
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else 1024

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, with the tokenizer's own special-token convention, never truncated."""
        texts = list(texts)
        if not texts:  # transformers' batch call fails on an empty batch
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


class CachedForward:
    """Calls a causal LM's forward with a KV cache, under the cache keyword its transformers version expects
    (`cache` in 5.24, `past_key_values` in 5.17). Returns (logits, the cache after the call): the last position's
    logits (B, V) by default, every position's (B, T, V) with last_only=False."""

    def __init__(self, model) -> None:
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.can_trim_logits = "logits_to_keep" in params

    def __call__(self, input_ids, attention_mask, position_ids, cache=None, *, last_only: bool = True):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "use_cache": True}
        if cache is not None:
            kwargs[self.cache_kw] = cache
        if last_only and self.can_trim_logits:  # only the last position's logits are needed
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        new_cache = out["cache"] if "cache" in out.keys() else out["past_key_values"]
        return (out.logits[:, -1, :] if last_only else out.logits), new_cache


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of what determines tokenisation: the fast tokenizer's JSON, else vocab + special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # padding/truncation are call-time state (set by e.g. tokenizer(..., padding=True)), not vocabulary
        spec.pop("padding", None)
        spec.pop("truncation", None)
        payload = json.dumps(spec, sort_keys=True)
    else:  # slow tokenizers: the vocabulary and the special tokens decide the ids
        payload = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()),
                              "special": sorted(map(str, tokenizer.all_special_tokens))})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def check_weight_files(directory: Path) -> None:
    """Refuses directories without safetensors weights; names the pickle files if that is all there is."""
    if not directory.is_dir():
        raise InputError(f"model directory {directory} does not exist or is not a directory; "
                         "pass the path of a local Hugging Face checkpoint (nothing is downloaded)")
    if not (directory / "config.json").is_file():
        raise InputError(f"{directory} has no config.json; pass a Hugging Face checkpoint directory")
    files = [p for p in directory.iterdir() if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return
    pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise IntegrityError(
            f"{directory} holds only pickle weights ({', '.join(pickles[:3])}); pickle is refused because "
            "loading it can run code: convert the checkpoint to safetensors (save_pretrained with "
            "safe_serialization=True) and try again")
    raise InputError(f"{directory} has no *.safetensors weights; pass a directory written by save_pretrained")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silences transformers' own tqdm bars while loading; the caller's progress object reports instead."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _cpu_experts(device: str | torch.device) -> dict:
    """On a CPU, a mixture-of-experts model runs its experts one after another ("eager"), not through
    transformers' default grouped matrix product: the same outputs, and faster there (a 4-expert FlexOlmo of
    hidden size 96 scoring 32 rows of 64 tokens: 35-39 ms against 41-48 ms; 64 rows of 16, 17 ms against 20).
    Accelerators keep the default. Models without experts ignore the setting."""
    return {"experts_implementation": "eager"} if torch.device(device).type == "cpu" else {}


def load_causal_lm(path: str | Path, *, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, name: str | None = None, shard: Any = None) -> CausalLM:
    """Loads `AutoModelForCausalLM` + `AutoTokenizer` from a local directory, safetensors weights only.

    Args:
        path: a local checkpoint directory (config.json, *.safetensors, tokenizer files).
        device: where to run ("cpu", "cuda", ...).
        dtype: weight dtype; float32 by default so scores are reproducible across devices.
        name: label for reports (defaults to the directory name).
        shard: this process's `attacks.sharding.Shard` when every process of a torch.distributed job loads the
            model (`Shard.of_process_group()`); None in one process.

    Raises:
        InputError: not a directory, no config, no weights, or transformers cannot load it.
        IntegrityError: only pickle weights are present.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(path)
    check_weight_files(directory)
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                directory, local_files_only=True, use_safetensors=True, dtype=dtype, **_cpu_experts(device))
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load a causal LM from {directory}: {first_line}") from exc
    return CausalLM.from_model(model, tokenizer, device=device, name=name or directory.name, shard=shard)
