"""A byte-level BPE tokenizer trained locally with the `tokenizers` library, saved in Hugging Face format.

Byte-level means every UTF-8 string is representable: a domain the anchor never saw (code, clinical
notes) costs more tokens but never an unknown token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from flexaudit.errors import InputError

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Iterable[str], *, vocab_size: int):
    """Train byte-level BPE; returns a transformers PreTrainedTokenizerFast (eos and pad set)."""
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise InputError(f"vocabulary size {vocab_size} is too small: byte-level BPE needs at least 300")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],  # ids 0 and 1, fixed so configs can rely on them
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False)


def tokenizer_from_json(serialized: str):
    """The tokenizer `train_tokenizer` made, from its tokenizer.json text (how the other processes of a torchrun
    job get the tokenizer rank 0 trained)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(serialized), eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)


def load_tokenizer(directory: str | Path):
    """The tokenizer saved beside a checkpoint; never fetched from a hub."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file() and not (directory / "tokenizer_config.json").is_file():
        raise InputError(f"no tokenizer in {directory}: an anchor directory carries its tokenizer files")
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # transformers raises many types for a broken tokenizer directory
        raise InputError(f"cannot load the tokenizer in {directory}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if tok.eos_token_id is None:
        raise InputError(f"the tokenizer in {directory} has no end-of-text token; flexaudit needs one to separate documents")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def encode_documents(tokenizer, texts: list[str], *, add_eos: bool = True) -> list[list[int]]:
    """Token ids per text (batched through the fast tokenizer), each followed by end-of-text."""
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if add_eos:
        eos = tokenizer.eos_token_id
        ids = [row + [eos] for row in ids]
    return ids
