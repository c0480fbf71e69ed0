"""The anchored mixture-of-experts language model (FlexOlmo), all of it in this one file.

Architecture (OLMo-2 decoder with a mixture-of-experts feed-forward, as Hugging Face `FlexOlmo`):
    x = embed(tokens)
    per layer:  x = x + norm(attention(x))          # post-norm, QK-norm over the full projection
                x = x + norm(moe(x))                # softmax over all router logits, then top-k
    logits = lm_head(norm(x))

What flexaudit needs beyond the Hugging Face class, and why this file exists:
  * experts are separate `nn.Linear` modules, and each router row is its own `nn.Linear(H, 1)`, so that
    slot 0 (the frozen public expert and its row) and slot 1 (the owner's new expert) are different
    parameters, and so Opacus can compute per-sample gradients (it has no sampler for fused 3-D tensors);
  * an optional non-positive bias on the non-public router logits (the method's learnable negative bias),
    which the Hugging Face router cannot hold;
  * masking an expert's logit to minus infinity, to prove that removing an expert is exactly opt-out.

Parameter names equal the Hugging Face on-disk names (`model.layers.3.mlp.experts.1.up_proj.weight`) except
the router, whose rows are concatenated into `mlp.gate.weight` on export. Every checkpoint on disk is a
standard FlexOlmo checkpoint; `from_hf` / `hf_state_dict` convert.

References: Shi et al. 2025, "FlexOlmo: Open Language Models for Flexible Data Use" (arXiv:2507.07024);
OLMo 2 (arXiv:2501.00656); transformers `models/flex_olmo`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from flexaudit.errors import InputError, IntegrityError


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int | None = None  # None: as many as query heads (OLMo-2 7B); fewer is grouped-query attention
    max_seq_len: int = 256  # the context length trained for; RoPE itself has no hard limit
    rope_theta: float = 500_000.0  # OLMo-2 / FlexOlmo value
    rms_norm_eps: float = 1e-6
    num_experts: int = 1  # slot 0 is always the public expert of the anchor
    top_k: int = 1  # experts mixed per token; softmax is over all experts first, then top-k (no renormalisation)
    norm_topk_prob: bool = False  # FlexOlmo: False
    router_bias: bool = False  # the method's bias <= 0 on non-public logits; cannot be exported to Hugging Face
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise InputError(
                f"hidden size {self.hidden_size} must divide into {self.num_heads} heads and heads into "
                f"{self.num_kv_heads} key/value heads"
            )
        if not 1 <= self.top_k <= self.num_experts:
            raise InputError(f"top-k must be between 1 and the number of experts ({self.num_experts}), got {self.top_k}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> "ModelConfig":
        return ModelConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # --- Hugging Face FlexOlmoConfig ------------------------------------------------------------------
    def hf_config(self, *, dtype: str = "float32") -> dict:
        """The config.json fields of the equivalent Hugging Face FlexOlmo checkpoint (weights in `dtype`)."""
        return {
            "architectures": ["FlexOlmoForCausalLM"],
            "model_type": "flex_olmo",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "num_experts": self.num_experts,
            "num_experts_per_tok": self.top_k,
            "norm_topk_prob": self.norm_topk_prob,
            "output_router_logits": False,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_cache": True,
            "dtype": dtype,
        }

    @classmethod
    def from_hf(cls, hf: dict) -> "ModelConfig":
        """Read a FlexOlmo (or dense OLMo-2, as one expert) config.json; refuse what this model cannot run."""
        model_type = hf.get("model_type")
        if model_type not in ("flex_olmo", "olmo2"):
            raise InputError(f"unsupported model type {model_type!r}: flexaudit reads FlexOlmo and OLMo-2 checkpoints")
        if hf.get("hidden_act", "silu") != "silu":
            raise InputError(f"unsupported activation {hf.get('hidden_act')!r}: FlexOlmo uses silu")
        if hf.get("attention_bias"):
            raise InputError("checkpoints with attention bias are not OLMo-2 style and are not supported")
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
        if rope_type != "default":
            raise InputError(f"unsupported RoPE scaling {rope_type!r}: only default RoPE is implemented")
        theta = rope.get("rope_theta", hf.get("rope_theta", 500_000.0 if model_type == "flex_olmo" else 10_000.0))
        eos = hf.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0]
        dense = model_type == "olmo2"
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            num_kv_heads=hf.get("num_key_value_heads"),
            max_seq_len=hf.get("max_position_embeddings", 2048),
            rope_theta=float(theta),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            num_experts=1 if dense else hf.get("num_experts", 1),
            top_k=1 if dense else hf.get("num_experts_per_tok", 1),
            norm_topk_prob=False if dense else bool(hf.get("norm_topk_prob", False)),
            pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
            eos_token_id=eos if eos is not None else 0,
            bos_token_id=hf.get("bos_token_id"),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * h).to(x.dtype)


def rotary_tables(cfg: ModelConfig, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float, device=device) / cfg.head_dim))
    freqs = torch.arange(seq_len, device=device, dtype=torch.float)[:, None] * inv_freq  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, cfg.hidden_size, bias=False)
        # OLMo-2 normalises the whole q and k projections, not each head
        self.q_norm = RMSNorm(self.nh * self.hd, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.nkv * self.hd, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x)).view(B, T, self.nh, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_norm(self.k_proj(x)).view(B, T, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        q = (q * cos + _rotate_half(q) * sin).to(x.dtype)
        k = (k * cos + _rotate_half(k) * sin).to(x.dtype)
        # Batches are right-padded, so a causal mask alone keeps every real token away from padding.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.nkv != self.nh)  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class FeedForward(nn.Module):
    """One expert: a SwiGLU feed-forward network."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class RouterBias(nn.Module):
    """The method's per-expert bias on non-public logits, clamped to be <= 0 (slot 0 has none).

    It starts at INIT, not 0: an expert always wants more weight, so a bias at 0 would step above 0 at once,
    where the clamp makes it constant and its gradient zero for the rest of training. A module of its own so
    that a per-sample gradient sampler can be registered for it.
    """

    INIT = -1.0

    def __init__(self, num_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_experts - 1,), self.INIT))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        shift = torch.cat((logits.new_zeros(1), self.weight.clamp(max=0.0)))  # (E,)
        return logits + shift


class Router(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.rows = nn.ModuleList(nn.Linear(cfg.hidden_size, 1, bias=False) for _ in range(cfg.num_experts))
        self.bias = RouterBias(cfg.num_experts) if cfg.router_bias and cfg.num_experts > 1 else None
        # Additive logit mask: minus infinity switches an expert off without touching its weights.
        self.register_buffer("logit_mask", torch.zeros(cfg.num_experts), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([row(x) for row in self.rows], dim=-1)  # (B, T, E)
        if self.bias is not None:
            logits = self.bias(logits)
        return logits + self.logit_mask


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k, self.norm_topk_prob = cfg.top_k, cfg.norm_topk_prob
        self.gate = Router(cfg)
        self.experts = nn.ModuleList(FeedForward(cfg) for _ in range(cfg.num_experts))

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(self.gate(x).float(), dim=-1)  # (B, T, E), softmax over all experts first
        if self.top_k < probs.shape[-1]:
            top, idx = probs.topk(self.top_k, dim=-1)  # (B, T, k)
            probs = torch.zeros_like(probs).scatter(-1, idx, top)
        if self.norm_topk_prob:
            probs = probs / probs.sum(-1, keepdim=True)
        return probs.to(x.dtype)

    def forward(self, x: torch.Tensor, router_only: torch.Tensor | None = None, drift: bool = False):
        """router_only (B,) marks rows that may train the router but not the experts (public negatives).

        With `drift`, returns (output, (sum over router_only rows of (y_1 - y_0)^2, sum of y_0^2)), both scalars,
        where y_e is expert e's output on those rows' detached inputs and y_0 is detached: the terms of the anchor
        pull on public rows (flexaudit.moe.training), whose gradient reaches expert 1 alone. Computed here, in
        the same call of each expert as its ordinary output and returned as an output, because sharded (FSDP)
        training runs a sharded module once per forward and prepares its backward from its outputs."""
        w = self.routing_weights(x)  # (B, T, E)
        if not torch.is_grad_enabled() and router_only is None and not drift and self._selects(w):
            return self._routed(x, w)
        # In training every expert runs on every token and unselected ones get weight exactly 0: the training
        # models (top-2 of 2) select every expert, and Opacus' per-sample gradients need whole batches.
        out = torch.zeros_like(x)
        public = []
        for e, expert in enumerate(self.experts):
            if drift and e < 2:
                both = expert(torch.cat((x, x[router_only].detach())))  # (B + B_pub, T, H)
                y = both[: len(x)]
                public.append(both[len(x):])
            else:
                y = expert(x)  # (B, T, H)
            if router_only is not None:
                y = torch.where(router_only[:, None, None], y.detach(), y)
            out = out + w[..., e : e + 1] * y
        if drift:
            anchor_out = public[0].detach()
            return out, ((public[1] - anchor_out).pow(2).sum(), anchor_out.pow(2).sum())
        return out

    def _selects(self, w: torch.Tensor) -> bool:
        """Whether some expert gets weight 0 on some token (top-k below the experts, or an expert masked)."""
        return self.top_k < w.shape[-1] or bool(torch.isinf(self.gate.logit_mask).any())

    def _routed(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The same sum as the dense path, each expert run only on the tokens routed to it (inference with
        top-k below the experts or an expert opted out: the released FlexOlmo-7x7B-1T, top-5 of 7, skips 2 of
        its 7 FFNs per token, and an opted-out expert is never run). Tokens add their experts' outputs in slot
        order, as the dense path does. x (B, T, H), w (B, T, E) -> (B, T, H)."""
        flat, wf = x.reshape(-1, x.shape[-1]), w.reshape(-1, w.shape[-1])  # (N, H), (N, E)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            idx = wf[:, e].nonzero().squeeze(1)  # (n_e,) tokens routed to expert e
            if idx.numel() == flat.shape[0]:
                out = out + wf[:, e : e + 1] * expert(flat)
            elif idx.numel():
                out = out.index_add(0, idx, wf[idx, e : e + 1] * expert(flat[idx]))
        return out.view_as(x)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MoE(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, router_only=None, drift: bool = False):
        """Returns the block's output and the router's input (both (B, T, H)), and with `drift` the MoE's drift
        terms (MoE.forward)."""
        h = x + self.post_attention_layernorm(self.self_attn(x, cos, sin))
        if drift:
            moe, terms = self.mlp(h, router_only, drift=True)
            return h + self.post_feedforward_layernorm(moe), h, terms
        return h + self.post_feedforward_layernorm(self.mlp(h, router_only)), h


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        table = torch.empty(cfg.vocab_size, cfg.hidden_size)  # on the default device, meta for a model being loaded
        if table.is_meta:  # nn.Embedding's own init there would import torch._dynamo (see FlexOlmo._init_weights)
            self.embed_tokens = nn.Embedding.from_pretrained(table, freeze=False)
        else:  # its init draws from the random stream, which every later weight's init follows: kept as it was
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


INIT_STD = 0.02  # OLMo 2 draws every weight from N(0, 0.02)


class FlexOlmo(nn.Module):
    def __init__(self, cfg: ModelConfig, *, embedding_std: float | None = None):
        """A model drawn from N(0, INIT_STD), as OLMo 2 draws every weight; `embedding_std`: its untied token
        embeddings from N(0, embedding_std) instead (flexaudit.moe.anchor.Preset says why the demo's preset does).
        `self.embedding_std` is the std the embeddings were drawn from."""
        super().__init__()
        self.config = cfg
        self.embedding_std = INIT_STD if embedding_std is None or cfg.tie_word_embeddings else embedding_std
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # Not on the meta device (a model about to receive loaded tensors): there normal_ runs torch's Python
        # reference implementation, whose first use imports torch._dynamo (2 s in every process that loads one).
        if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
            std = self.embedding_std if isinstance(module, nn.Embedding) else INIT_STD
            nn.init.normal_(module.weight, mean=0.0, std=std)

    def forward(self, input_ids: torch.Tensor, *, router_only: torch.Tensor | None = None, return_moe_inputs: bool = False,
                return_public_drift: bool = False, next_token_only: bool = False):
        """Logits (B, T, V); with next_token_only (B, T-1, V), only the positions that have a next token in
        input_ids: what a training loss needs (token_nll takes either), without the output head's largest product
        on a position nobody reads or the gradient of slicing (B, T, V) logits. With return_moe_inputs, also each
        layer's router input (B, T, H). With
        return_public_drift (2 experts and router_only given), also per layer the pair (sum of squared
        difference between expert 1's and expert 0's outputs on the router_only rows, sum of expert 0's squared
        output there), scalars; see MoE.forward."""
        T = input_ids.shape[1]
        cos, sin = rotary_tables(self.config, T, input_ids.device)  # (T, hd) each
        x = self.model.embed_tokens(input_ids)  # (B, T, H)
        moe_inputs, drift = [], []
        for layer in self.model.layers:
            if return_public_drift:
                x, router_input, terms = layer(x, cos, sin, router_only, drift=True)
                drift.append(terms)
            else:
                x, router_input = layer(x, cos, sin, router_only)
            if return_moe_inputs:
                moe_inputs.append(router_input)
        if next_token_only:
            x = x[:, :-1]  # (B, T-1, H)
        logits = self.lm_head(self.model.norm(x))  # (B, T, V) or (B, T-1, V)
        if return_public_drift:
            return logits, drift
        return (logits, moe_inputs) if return_moe_inputs else logits

    # --- the anchored-MoE rules --------------------------------------------------------------------------
    def freeze_anchor(self) -> list[str]:
        """Freeze everything the anchor owns; leave trainable only the experts in slots 1.. and their router
        rows and bias. Returns the trainable parameter names."""
        for p in self.parameters():
            p.requires_grad_(False)
        for layer in self.model.layers:
            for e in range(1, self.config.num_experts):
                layer.mlp.experts[e].requires_grad_(True)
                layer.mlp.gate.rows[e].requires_grad_(True)
            if layer.mlp.gate.bias is not None:
                layer.mlp.gate.bias.requires_grad_(True)
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def mask_experts(self, slots: list[int]) -> None:
        """Give these experts a router logit of minus infinity in every layer (for proofs; opt-out removes)."""
        for layer in self.model.layers:
            mask = torch.zeros_like(layer.mlp.gate.logit_mask)
            mask[list(slots)] = float("-inf")
            layer.mlp.gate.logit_mask.copy_(mask)

    # --- conversion to and from the Hugging Face FlexOlmo layout ----------------------------------------
    def _hf_same_name(self) -> dict[str, torch.Tensor]:
        """The state dict's tensors that keep their name in the Hugging Face layout: all but the router rows (one
        (E, H) tensor per layer there) and the router bias (HF has no place for it), and a tied output head."""
        return {name: t for name, t in self.state_dict().items()
                if ".mlp.gate." not in name and not (name == "lm_head.weight" and self.config.tie_word_embeddings)}

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors under Hugging Face FlexOlmo names. The router bias is dropped: HF has no place for it."""
        out = {name: t.detach().contiguous() for name, t in self._hf_same_name().items()}
        for i, layer in enumerate(self.model.layers):
            rows = [row.weight.detach() for row in layer.mlp.gate.rows]  # E x (1, H)
            out[f"model.layers.{i}.mlp.gate.weight"] = torch.cat(rows, dim=0).contiguous()  # (E, H)
        return out

    def hf_shapes(self) -> dict[str, torch.Size]:
        """The names and shapes of hf_state_dict's tensors, computing none: on the meta device an op such as the
        router rows' concatenation would run torch's Python reference implementation (see _init_weights)."""
        out = {name: t.shape for name, t in self._hf_same_name().items()}
        for i, layer in enumerate(self.model.layers):
            out[f"model.layers.{i}.mlp.gate.weight"] = torch.Size((len(layer.mlp.gate.rows), self.config.hidden_size))
        return out

    @classmethod
    def from_hf_state_dict(cls, cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> "FlexOlmo":
        """Build from Hugging Face FlexOlmo tensors (per-expert names; dense OLMo-2 tensors are read as a single
        expert). The model takes the tensors themselves, on their device and in their dtype: it is built on the
        meta device first, so no randomly initialised float32 copy is ever made."""
        tensors = _dense_as_one_expert(tensors)
        with torch.device("meta"):
            model = cls(cfg.replace(router_bias=False))
        expected = model.hf_shapes()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected) - {"lm_head.weight"})
        if missing or unexpected:
            bad = (missing or unexpected)[0]
            kind = "missing" if missing else "unexpected"
            raise IntegrityError(
                f"checkpoint does not match its config: {kind} tensor {bad} "
                f"({len(missing)} missing, {len(unexpected)} unexpected)"
            )
        for name, shape in expected.items():
            if tensors[name].shape != shape:
                raise IntegrityError(f"tensor {name} has shape {tuple(tensors[name].shape)}, config implies {tuple(shape)}")
        state = {}
        for name, t in tensors.items():
            if ".mlp.gate.weight" in name:
                prefix = name[: -len("weight")]
                for e in range(cfg.num_experts):
                    state[f"{prefix}rows.{e}.weight"] = t[e : e + 1]
            elif name == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            else:
                state[name] = t
        if cfg.tie_word_embeddings:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        model.load_state_dict(state, strict=True, assign=True)
        if cfg.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.reset_buffers()
        if cfg.router_bias:  # keep the flag for training; the bias itself starts at RouterBias.INIT
            model = model.with_router_bias()
        return model

    def reset_buffers(self) -> None:
        """(Re)create the non-persistent buffers on the weights' device (after building on the meta device)."""
        device = self.model.embed_tokens.weight.device
        for layer in self.model.layers:
            layer.mlp.gate.register_buffer("logit_mask", torch.zeros(self.config.num_experts, device=device),
                                           persistent=False)

    def with_router_bias(self) -> "FlexOlmo":
        """This model with the method's router bias added to every layer (in place; a new float32 parameter)."""
        self.config = self.config.replace(router_bias=True)
        device = self.model.embed_tokens.weight.device
        for layer in self.model.layers:
            if layer.mlp.gate.bias is None and self.config.num_experts > 1:
                layer.mlp.gate.bias = RouterBias(self.config.num_experts).to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the frozen weights (the anchor's): what packages and merged pools are stored in."""
        return self.model.embed_tokens.weight.dtype

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _dense_as_one_expert(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a dense OLMo-2 FFN (`mlp.gate_proj`) to expert 0 and add a zero router row if there is none."""
    if not any(".mlp.gate_proj." in k for k in tensors):
        return tensors
    out = {}
    for k, t in tensors.items():
        for proj in ("gate_proj", "up_proj", "down_proj"):
            if k.endswith(f".mlp.{proj}.weight"):
                k = k.replace(f".mlp.{proj}.", f".mlp.experts.0.{proj}.")
        out[k] = t
    for k in list(out):
        if k.endswith(".mlp.experts.0.gate_proj.weight"):
            layer = k[: -len("experts.0.gate_proj.weight")]
            hidden = out[k].shape[1]
            out.setdefault(f"{layer}gate.weight", torch.zeros(1, hidden, dtype=out[k].dtype))
    return out


def pad_right(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as one right-padded batch and its mask. With causal attention no real
    token ever attends to the padding after it, so no attention mask is needed."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)  # (B, T)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed next-token negative log-likelihood over positions where mask[:, 1:] is true; `logits` (B, T, V)
    for every position of input_ids (B, T), or (B, T-1, V) for those with a next token (next_token_only)."""
    target_mask = mask[:, 1:]
    if logits.shape[1] == input_ids.shape[1]:
        logits = logits[:, :-1]
    lp = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1), reduction="none"
    ).view_as(target_mask)  # (B, T-1)
    return (lp * target_mask).sum()


def causal_lm_loss(model: FlexOlmo, input_ids: torch.Tensor, mask: torch.Tensor, router_only=None) -> torch.Tensor:
    """Mean next-token cross-entropy over real (unpadded) target positions."""
    logits = model(input_ids, router_only=router_only, next_token_only=True)  # (B, T-1, V)
    count = mask[:, 1:].sum().clamp(min=1)
    return token_nll(logits, input_ids, mask) / count


def perplexity_from(nll_sum: float, tokens: int) -> float:
    return math.exp(nll_sum / tokens) if tokens else float("nan")
