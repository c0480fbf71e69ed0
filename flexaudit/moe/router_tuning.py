"""Router tuning after merging, on data that holds nothing private (the method's optional RT step).

Every router row was trained by its owner against the public row alone; no row ever saw another owner's
domain. After merging, two experts whose domains look alike to the router (clinical notes and bank records
are both record-like, unlike public prose) both claim each other's tokens. The method's remedy (Shi et al.
2025 §3.3.3) is to tune only the router rows, jointly, on public proxy data that resembles each domain.

Public data that resembles a private domain often does not exist. The proxies here are text sampled from each
shared expert itself (anchor + that expert, which anyone holding the package can run), plus public text for
the public row. Only router rows change; every expert FFN and all shared weights stay bit-identical, so
opt-out (removing an expert's row and FFN) works exactly as before. Samples stay in memory and are never
written anywhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from flexaudit.moe.anchor import Anchor
from flexaudit.moe.expert import ExpertPackage, compose
from flexaudit.moe.model import FlexOlmo, causal_lm_loss
from flexaudit.moe.training import PackedStream
from flexaudit.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class RouterTuning:
    samples_per_expert: int = 64
    steps: int = 300
    batch_size: int = 16  # rows per step, drawn evenly from each expert's proxies and public text
    lr: float = 2e-2
    # Small models sampled at temperature 1 drift into the anchor's public prose within a few tokens; at 0.5
    # the samples stay recognisably in the expert's domain (measured; see benchmarks/method_choices.py).
    temperature: float = 0.5
    top_p: float = 0.9
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sample_proxies(model: FlexOlmo, *, n: int, length: int, eos: int, tuning: RouterTuning) -> list[list[int]]:
    """n sequences sampled from `model`, each starting after an end-of-text token (a fresh document)."""
    g = torch.Generator().manual_seed(tuning.seed)  # on the CPU: the same samples on every device
    ids = torch.full((n, 1), eos, dtype=torch.long)
    for _ in range(length):
        logits = model(ids.to(model.device))[:, -1].float().cpu() / tuning.temperature  # (n, V)
        probs = torch.softmax(logits, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < tuning.top_p  # nucleus: smallest set reaching top_p
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=g)  # (n, 1)
        ids = torch.cat((ids, order.gather(-1, choice)), dim=1)
    return [row[1:].tolist() for row in ids]


def proxy_corpus(
    anchor: Anchor,
    packages: list[ExpertPackage],
    *,
    public_texts: list[str],
    tuning: RouterTuning = RouterTuning(),
    progress: Progress = NULL_PROGRESS,
) -> list[list[list[int]]]:
    """Token sequences per source: public text first (if any), then samples from each expert alone."""
    from flexaudit.moe.tokenizer import encode_documents

    sources = [encode_documents(anchor.tokenizer, public_texts)] if public_texts else []
    task = progress.task("router proxies", total=len(packages))
    for i, package in enumerate(packages):
        alone = compose(anchor, [package], top_k=2)
        own = RouterTuning(**{**tuning.as_dict(), "seed": tuning.seed + i})
        sources.append(sample_proxies(alone, n=tuning.samples_per_expert, length=anchor.config.max_seq_len,
                                      eos=anchor.config.eos_token_id, tuning=own))
        task.advance(1)
    task.close()
    return sources


def tune_router(
    anchor: Anchor,
    packages: list[ExpertPackage],
    sources: list[list[list[int]]],
    *,
    top_k: int,
    tuning: RouterTuning = RouterTuning(),
    progress: Progress = NULL_PROGRESS,
) -> tuple[FlexOlmo, dict]:
    """The merged model with its router rows tuned jointly on `sources` (see proxy_corpus)."""
    length = anchor.config.max_seq_len
    per_source = max(1, tuning.batch_size // len(sources))
    streams = [PackedStream(docs, seq_len=length - 1, batch_size=per_source, seed=tuning.seed + j)
               for j, docs in enumerate(sources)]
    model = compose(anchor, packages, top_k=top_k)
    dtype = model.dtype
    for p in model.parameters():
        p.requires_grad_(False)
    rows = [row.weight for layer in model.model.layers for row in layer.mlp.gate.rows]
    for w in rows:
        w.data = w.data.float()  # float32 master weights; the rest computes in the anchor's dtype under autocast
        w.requires_grad_(True)
    opt = torch.optim.Adam(rows, lr=tuning.lr)
    mixed = torch.autocast(model.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    model.train()
    task = progress.task("router tuning", total=tuning.steps)
    losses = []
    for step in range(tuning.steps):
        batch = torch.cat([s.rows(step) for s in streams]).to(model.device)  # (rows, T)
        with mixed:
            loss = causal_lm_loss(model, batch, torch.ones_like(batch, dtype=torch.bool))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        task.advance(1, loss=losses[-1])
    task.close()
    for w in rows:
        w.requires_grad_(False)
        w.data = w.data.to(dtype)
    model.eval()
    tenth = max(1, len(losses) // 10)
    record = {
        **tuning.as_dict(),
        "sources": ["public text"] * (len(sources) - len(packages)) + [f"samples of {p.name}" for p in packages],
        "loss_first": round(float(np.mean(losses[:tenth])), 4),
        "loss_last": round(float(np.mean(losses[-tenth:])), 4),
        "changed": "router rows only; expert FFNs and shared weights are the packages' and the anchor's",
    }
    return model, record
