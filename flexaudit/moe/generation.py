"""Text generation through transformers (KV cache, standard decoding), with experts switched off on request."""

from __future__ import annotations

from pathlib import Path

import torch

from flexaudit.errors import InputError
from flexaudit.moe.device import Placement
from flexaudit.moe.merge import export_for_transformers


def generate(
    model_dir: Path,
    prompt: str,
    *,
    exclude: list[str] = (),
    anchor_dir: Path | None = None,
    max_new_tokens: int = 64,
    sample: bool = False,
    seed: int = 0,
    placement: Placement | None = None,
) -> str:
    """The prompt's continuation (prompt included) from the model with the excluded experts removed, run by
    transformers on `placement` (default: the CPU, in the stored dtype)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not prompt:
        raise InputError("the prompt is empty: give --prompt TEXT")
    if max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    from attacks.model import quiet_transformers

    with export_for_transformers(Path(model_dir), anchor_dir=anchor_dir, exclude=list(exclude)) as path, quiet_transformers():
        dtype = placement.dtype if placement is not None else "auto"
        device = placement.device if placement is not None else torch.device("cpu")
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    limit = model.config.max_position_embeddings
    if ids.shape[1] + max_new_tokens > limit:
        raise InputError(f"prompt ({ids.shape[1]} tokens) plus {max_new_tokens} new tokens exceeds the model's context of {limit}")
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            top_p=0.95 if sample else None,
            top_k=0 if sample else None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(output[0], skip_special_tokens=True)
