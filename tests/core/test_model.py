"""The anchored-MoE model against Hugging Face FlexOlmo, and the opt-out equivalence."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Olmo2Config, Olmo2ForCausalLM

from flexaudit.moe.checkpoint import load_flexolmo, write_hf_checkpoint
from flexaudit.moe.merge import remove_experts
from flexaudit.moe.model import FlexOlmo, ModelConfig


def _pool(num_experts: int = 4, top_k: int = 2, **kw) -> FlexOlmo:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                      num_experts=num_experts, top_k=top_k, max_seq_len=64, **kw)
    model = FlexOlmo(cfg).eval()
    with torch.no_grad():  # decisive routing, so top-k actually drops experts
        for layer in model.model.layers:
            for row in layer.mlp.gate.rows:
                row.weight.normal_(std=1.0)
    return model


@pytest.mark.parametrize("num_experts,top_k,kv_heads", [(1, 1, None), (4, 2, None), (4, 4, None), (3, 1, 2)])
def test_transformers_logits_equal_ours(tmp_path, num_experts, top_k, kv_heads):
    model = _pool(num_experts, top_k, num_kv_heads=kv_heads)
    write_hf_checkpoint(tmp_path, model)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 300, (3, 48))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    again = load_flexolmo(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids), ours)


def test_removing_an_expert_equals_minus_infinity_logit():
    model = _pool(4, 2)
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        full = model(ids)
        model.mask_experts([2])
        masked = model(ids)
        model.mask_experts([])
        removed = remove_experts(model, [2])(ids)
    assert removed.shape == full.shape
    assert torch.allclose(masked, removed, atol=1e-6, rtol=0)
    assert not torch.allclose(masked, full, atol=1e-3)  # the expert did matter


@pytest.mark.parametrize("top_k,masked", [(2, []), (4, [2]), (1, [0, 3])])
def test_inference_runs_each_expert_on_its_routed_tokens_only(top_k, masked):
    model = _pool(4, top_k)
    model.mask_experts(masked)
    ids = torch.randint(0, 300, (3, 40))
    seen = {}
    hooks = [layer.mlp.experts[e].register_forward_hook(
                 lambda mod, inp, out, key=(i, e): seen.__setitem__(key, seen.get(key, 0) + inp[0].shape[-2]))
             for i, layer in enumerate(model.model.layers) for e in range(4)]
    routed = [layer.mlp.register_forward_hook(
                  lambda mod, inp, out, i=i: seen.__setitem__(("w", i), mod.routing_weights(inp[0]).detach()))
              for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        sparse = model(ids)
    for h in hooks + routed:
        h.remove()
    with torch.enable_grad():  # training's path: every expert on every token
        dense = model(ids).detach()
    assert torch.allclose(sparse, dense, atol=1e-5, rtol=0), (sparse - dense).abs().max()
    for i in range(2):
        w = seen[("w", i)].reshape(-1, 4)  # (tokens, experts)
        for e in range(4):
            assert seen.get((i, e), 0) == int((w[:, e] != 0).sum())  # masked experts: never run
    assert all(seen.get((i, e), 0) == 0 for i in range(2) for e in masked)


def test_zeroing_a_router_row_is_not_opt_out():
    model = _pool(4, 4)
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        removed = remove_experts(model, [3])(ids)
        for layer in model.model.layers:
            layer.mlp.gate.rows[3].weight.zero_()
        zeroed = model(ids)
    assert (zeroed - removed).abs().max() > 1e-3


def test_top_k_is_capped_when_experts_are_removed():
    model = _pool(3, 3)
    pruned = remove_experts(model, [1, 2])
    assert pruned.config.num_experts == 1 and pruned.config.top_k == 1


def test_dense_olmo2_reads_as_one_expert(tmp_path):
    torch.manual_seed(1)
    cfg = Olmo2Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1)
    dense = Olmo2ForCausalLM(cfg).eval()
    dense.save_pretrained(tmp_path)
    ours = load_flexolmo(tmp_path)
    assert ours.config.num_experts == 1
    ids = torch.randint(0, 300, (2, 32))
    with torch.no_grad():
        assert torch.allclose(ours(ids), dense(ids).logits, atol=1e-5, rtol=0)


def test_freeze_anchor_leaves_only_the_new_expert_trainable():
    model = _pool(2, 2, router_bias=True)
    trainable = set(model.freeze_anchor())
    assert trainable
    for name in trainable:
        assert ".experts.1." in name or ".gate.rows.1." in name or ".gate.bias." in name, name
    assert all(any(f"layers.{i}.mlp.experts.1.{p}" in n for n in trainable)
               for i in range(2) for p in ("gate_proj", "up_proj", "down_proj"))


def test_next_token_only_is_the_same_loss_and_gradient():
    # the training losses ask only for the positions that have a next token; with causal attention the last
    # position cannot change the others, so loss and gradients equal those of the full logits
    from flexaudit.moe.model import causal_lm_loss, token_nll

    model = _pool(2, 2)
    model.freeze_anchor()
    ids = torch.randint(0, 300, (3, 40))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 30:] = False  # a padded row
    short = model(ids, next_token_only=True)
    assert short.shape == (3, 39, 300)
    full = model(ids)
    assert torch.allclose(short, full[:, :-1], atol=1e-5, rtol=0)
    grads = []
    for loss in (token_nll(full, ids, mask) / mask[:, 1:].sum(), causal_lm_loss(model, ids, mask)):
        trainable = [p for p in model.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad(loss, trainable, retain_graph=True))
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5) for a, b in zip(*grads))
    assert torch.allclose(token_nll(short, ids, mask), token_nll(full, ids, mask), atol=1e-4, rtol=0)


def test_router_bias_is_never_positive():
    model = _pool(2, 2, router_bias=True)
    layer = model.model.layers[0]
    with torch.no_grad():
        layer.mlp.gate.bias.weight.fill_(5.0)
        x = torch.randn(1, 3, 64)
        positive = layer.mlp.gate(x)
        layer.mlp.gate.bias.weight.fill_(-2.0)
        negative = layer.mlp.gate(x)
    unbiased = torch.cat([row(x) for row in layer.mlp.gate.rows], -1)
    assert torch.equal(positive, unbiased)  # clamped at 0
    assert torch.allclose(negative[..., 1], unbiased[..., 1] - 2.0)
    assert torch.equal(negative[..., 0], unbiased[..., 0])


def test_loading_a_model_and_the_training_module_import_nothing_heavy(tiny_anchor):
    # In a fresh process: loading a checkpoint builds the model on the meta device, where an init or an op runs
    # torch's Python reference implementations and imports torch._dynamo (2 s); the training module does not
    # import Opacus (3 s) unless its engine is asked for. Every CLI command and worker process pays these.
    import subprocess
    import sys

    script = ("import sys; from flexaudit.moe.checkpoint import load_flexolmo; "
              "import flexaudit.privacy.expert_training; "
              f"model = load_flexolmo({str(tiny_anchor)!r}); "
              "print(sorted(m for m in ('torch._dynamo', 'opacus') if m in sys.modules), "
              "model.model.embed_tokens.weight.device.type)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "cpu"]


def test_embedding_std_draws_only_the_untied_token_embeddings():
    """The demo's preset draws its anchor's token embeddings from N(0, 1) (flexaudit.moe.anchor.Preset); every other
    weight, and embeddings shared with the output head, keep OLMo 2's N(0, 0.02)."""
    from flexaudit.moe.anchor import PRESETS

    cfg = ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4)
    torch.manual_seed(0)
    drawn = FlexOlmo(cfg, embedding_std=1.0)
    torch.manual_seed(0)
    plain = FlexOlmo(cfg)
    assert drawn.model.embed_tokens.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert plain.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for (name, a), (_, b) in zip(drawn.named_parameters(), plain.named_parameters()):
        if "embed_tokens" not in name:  # the same random stream: only the embeddings differ
            assert torch.equal(a, b), name
    tied = FlexOlmo(ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                                tie_word_embeddings=True), embedding_std=1.0)
    assert tied.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert PRESETS["mini"].embedding_std == 1.0 and PRESETS["tiny"].embedding_std is None


def test_an_anchor_records_how_its_weights_were_drawn(tiny_anchor):
    import json

    provenance = json.loads((tiny_anchor / "anchor.json").read_text())["provenance"]
    assert provenance["initialisation"] == {"std": 0.02, "token_embeddings_std": 0.02}  # tiny: OLMo 2's draw
