"""Tiny, fully local causal LMs for tests, benchmarks and self-checks (not part of the audit API).

Everything is built from code: a byte-level BPE tokenizer trained with `tokenizers` on the given
texts, a small `FlexOlmoForCausalLM` from a config, and a few hundred full-batch steps to overfit it on
chosen texts (a model that has certainly memorised its training set, to check that attacks see it).
Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

_WORDS = ("order", "parcel", "invoice", "ticket", "shipped", "returned", "paid", "delayed", "Lisbon", "Oslo",
          "Nairobi", "Quito", "Monday", "Friday", "courier", "clerk", "blue", "green", "north", "south",
          "quietly", "twice", "ledger", "harbour", "garden", "river", "lamp", "window", "copper", "silver")


def synthetic_texts(n: int, *, seed: int, words: int = 14) -> list[str]:
    """n distinct random sentences over one fixed vocabulary (same distribution for any seed)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        s = " ".join(rng.choice(_WORDS, size=words)) + f" {int(rng.integers(1000, 9999))}."
        if s not in out:
            out.append(s)
    return out


def train_tokenizer(texts: Sequence[str], *, vocab_size: int = 320):
    """A byte-level BPE tokenizer (with an end-of-text token) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_flexolmo(tokenizer, *, hidden_size: int = 32, layers: int = 2, heads: int = 4, experts: int = 2,
                  max_positions: int = 128, seed: int = 0):
    """A randomly initialised FlexOlmoForCausalLM sized for unit tests (float32, eval mode)."""
    from transformers import FlexOlmoConfig, FlexOlmoForCausalLM

    config = FlexOlmoConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                            num_experts=experts, num_experts_per_tok=min(2, experts),
                            max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    return FlexOlmoForCausalLM(config).eval()


def overfit(model, tokenizer, texts: Sequence[str], *, steps: int = 300, lr: float = 1e-2, seed: int = 0):
    """Full-batch AdamW on `texts` (padding masked out of the loss) until the model has memorised them."""
    torch.manual_seed(seed)
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def save(model, tokenizer, directory: str | Path) -> Path:
    """save_pretrained of model (safetensors) and tokenizer into `directory`."""
    from .model import quiet_transformers

    directory = Path(directory)
    with quiet_transformers():
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory
