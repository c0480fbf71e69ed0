"""Which experts the router chose for each token, so that a traced span can be tied to an expert.

For every token and layer, flexaudit's MoE gives the top-k routing weights (softmax over all experts, then
top-k, no renormalisation: the FlexOlmo rule). Per token and layer the weights are normalised to sum to 1, so
each (token, layer) decision counts once; a token's share for an expert is the mean over layers, and a span's
share is the mean over its tokens. `selected` is the share of (token, layer) decisions that put the expert in
the top-k at all.

Routing is computed by a teacher-forced forward pass over the traced tokens, in consecutive windows of the
model's context length (the length it was trained on), which for a generated text is exactly the routing
that produced each token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flexaudit.trace.spans import ExpertShare


@dataclass(frozen=True)
class Routing:
    experts: list[str]
    weight: np.ndarray  # (T, E) share of routing weight per token (rows sum to 1)
    selected: np.ndarray  # (T, E) share of layers in which the expert was among the top-k

    def span(self, start: int, end: int) -> list[ExpertShare]:
        """Each expert's share over tokens [start, end), most weight first."""
        w = self.weight[start:end].mean(axis=0)
        s = self.selected[start:end].mean(axis=0)
        order = sorted(range(len(self.experts)), key=lambda e: (-w[e], e))
        return [ExpertShare(name=self.experts[e], weight=round(float(w[e]), 6), selected=round(float(s[e]), 6))
                for e in order]

    def shares(self) -> list[list[float]]:
        return [[round(float(x), 6) for x in row] for row in self.weight]


def route_tokens(model, ids: list[int], experts: list[str]) -> Routing:
    """Per-token routing of `model` (a flexaudit FlexOlmo) over `ids`."""
    if len(experts) != model.config.num_experts:
        raise ValueError(f"{len(experts)} expert names for a model with {model.config.num_experts} experts")
    window = model.config.max_seq_len
    weights, selected = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), window):
            x = torch.tensor([ids[start : start + window]], dtype=torch.long, device=model.device)
            _, router_inputs = model(x, return_moe_inputs=True)
            per_layer = torch.stack([layer.mlp.routing_weights(h)[0].float()  # (T, E) top-k weights
                                     for layer, h in zip(model.model.layers, router_inputs)])  # (L, T, E)
            norm = per_layer / per_layer.sum(-1, keepdim=True).clamp_min(1e-12)
            weights.append(norm.mean(0).cpu())
            selected.append((per_layer > 0).float().mean(0).cpu())
    if not weights:
        empty = np.zeros((0, len(experts)))
        return Routing(list(experts), empty, empty)
    return Routing(list(experts), torch.cat(weights).numpy(), torch.cat(selected).numpy())
