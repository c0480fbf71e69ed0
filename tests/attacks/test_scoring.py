"""The scoring pass on a real (tiny) Hugging Face model, and model loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attacks import CausalLM, InputError, IntegrityError, load_causal_lm, run_membership, score_texts
from attacks import testing as tiny


def test_scores_match_the_definition(world):
    """log p(x_t|x<t), E_p[log p] and Var_p[log p], recomputed from one unbatched forward pass."""
    lm, text = world.target, world.nonmembers[0]
    cache = score_texts(lm, [text])
    ids = torch.tensor([lm.encode([text])[0]])
    with torch.inference_mode():
        lp = torch.log_softmax(lm.model(input_ids=ids).logits[0, :-1].double(), -1)
    p = lp.exp()
    mu = (p * lp).sum(-1)
    var = (p * (lp - mu[:, None]) ** 2).sum(-1)
    assert np.allclose(cache.logprobs(0), lp.gather(-1, ids[0, 1:, None])[:, 0].numpy(), atol=1e-5)
    assert np.allclose(cache.mu(0), mu.numpy(), atol=1e-5) and np.allclose(cache.var(0), var.numpy(), atol=1e-4)
    assert np.array_equal(cache.token_ids(0), ids[0].numpy()) and cache.n_scored[0] == ids.shape[1] - 1


def test_batched_equals_per_text(world):
    texts = world.members[:3] + [world.nonmembers[0][:20], world.nonmembers[1] + " " + world.nonmembers[2]]
    batched = score_texts(world.target, texts, batch_size=4)
    for i, t in enumerate(texts):
        single = score_texts(world.target, [t], batch_size=1)
        assert np.allclose(batched.logprobs(i), single.logprobs(0), atol=1e-5)
        assert np.allclose(batched.mu(i), single.mu(0), atol=1e-5)
        assert np.allclose(batched.var(i), single.var(0), atol=1e-5)
        assert batched.text_sha256[i] == single.text_sha256[0]


def test_long_texts_truncate_or_window(world):
    lm = world.target
    text = " ".join(world.members)  # ~120 tokens
    n = len(lm.encode([text])[0])
    trunc = score_texts(lm, [text], max_length=16)
    assert trunc.truncated[0] and trunc.n_scored[0] == 15
    win = score_texts(lm, [text], max_length=16, long_texts="window", stride=8)
    assert not win.truncated[0] and win.n_scored[0] == n - 1  # every token after the first, once
    assert np.allclose(win.logprobs(0)[:15], trunc.logprobs(0), atol=1e-5)  # first window = truncation
    full = score_texts(lm, [text], long_texts="window")  # fits the context: one window, nothing cut
    assert np.allclose(full.logprobs(0), score_texts(lm, [text]).logprobs(0), atol=1e-6)
    with pytest.raises(InputError, match="long_texts"):
        score_texts(lm, [text], long_texts="bogus")
    rep = run_membership(score_texts(lm, world.members + [text], max_length=16), is_member=[True] * 8 + [False],
                         attacks=["FA-MIA-LOSS"], n_bootstrap=10)
    assert any("longer than the scoring context" in w for w in rep.warnings)


def test_loading_refuses_pickle_and_missing_weights(tmp_path, world):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "flex_olmo"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(IntegrityError, match="pickle"):
        load_causal_lm(pickled)
    (pickled / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match="safetensors"):
        load_causal_lm(pickled)
    with pytest.raises(InputError, match="does not exist"):
        load_causal_lm(tmp_path / "nowhere")
    with pytest.raises(InputError, match="does not exist"):
        load_causal_lm("allenai/FlexOlmo-7x7B-1T")  # a hub id is never downloaded


def test_experts_run_one_after_another_on_a_cpu_with_the_same_scores(world):
    # load_causal_lm picks transformers' "eager" experts on a CPU (faster there); it must score exactly as the
    # default grouped implementation does
    from transformers import AutoModelForCausalLM

    lm = load_causal_lm(world.target_dir)
    assert lm.model.config._experts_implementation == "eager"
    default = AutoModelForCausalLM.from_pretrained(world.target_dir, experts_implementation="grouped_mm").eval()
    assert default.config._experts_implementation == "grouped_mm"
    grouped = CausalLM.from_model(default, world.tokenizer)
    a, b = score_texts(lm, world.members + world.nonmembers), score_texts(grouped, world.members + world.nonmembers)
    assert np.allclose(a.logprobs_flat, b.logprobs_flat, atol=1e-5)


def test_loaded_model_scores_like_in_memory(world):
    lm = load_causal_lm(world.anchor_dir)
    mem = CausalLM.from_model(tiny.tiny_flexolmo(world.tokenizer, seed=0), world.tokenizer)
    a, b = score_texts(lm, world.members[:2]), score_texts(mem, world.members[:2])
    assert np.allclose(a.logprobs_flat, b.logprobs_flat, atol=1e-6)
    assert lm.tokenizer_fingerprint == mem.tokenizer_fingerprint and lm.name == "anchor"


def test_overfit_model_is_detected_and_anchor_is_not(world):
    """The done-criterion of issue 4 in miniature: LOSS/Ref AUC > 0.9 on the expert, ~chance on the anchor."""
    texts = world.members + world.nonmembers
    labels = [True] * 8 + [False] * 8
    target, anchor = score_texts(world.target, texts), score_texts(world.anchor, texts)
    rep = run_membership(target, anchor, is_member=labels, n_bootstrap=100)
    for attack_id in ("FA-MIA-LOSS", "FA-MIA-REF", "FA-MIA-ZLIB", "FA-MIA-MINK", "FA-MIA-MINKPP", "FA-MIA-RMIA"):
        assert rep[attack_id].auc > 0.9, attack_id
    base = run_membership(anchor, is_member=labels, attacks=["FA-MIA-LOSS"], n_bootstrap=100)
    assert base["FA-MIA-LOSS"].auc_ci.low < 0.5 < base["FA-MIA-LOSS"].auc_ci.high


def test_reference_with_another_tokenizer_is_compared_per_byte(world):
    other_tok = tiny.train_tokenizer(tiny.synthetic_texts(60, seed=9, words=12), vocab_size=300)
    other = CausalLM.from_model(tiny.tiny_flexolmo(other_tok, seed=3), other_tok)
    texts = world.members + world.nonmembers
    target, reference = score_texts(world.target, texts), score_texts(other, texts)
    assert not target.same_tokenizer(reference) and not np.array_equal(target.n_scored, reference.n_scored)
    rep = run_membership(target, reference, is_member=[True] * 8 + [False] * 8, attacks=["FA-MIA-REF"],
                         n_bootstrap=50)
    got = np.r_[rep["FA-MIA-REF"].member_scores, rep["FA-MIA-REF"].nonmember_scores]
    expected = target.sum_logprob() / target.scored_bytes - reference.sum_logprob() / reference.scored_bytes
    assert np.allclose(got, expected) and rep["FA-MIA-REF"].auc > 0.9


class _Recorder:
    """A progress object of the documented shape, recording what the library reports."""

    def __init__(self):
        self.events = []

    def task(self, description, total=None):
        self.events.append(("task", description, total))
        return self

    def advance(self, n=1, **fields):
        self.events.append(("advance", n, fields))

    def close(self):
        self.events.append(("close",))


def test_progress_is_reported_through_the_callback(world, capsys):
    rec = _Recorder()
    score_texts(world.target, world.members, batch_size=3, progress=rec)
    assert rec.events[0][0] == "task" and rec.events[0][2] == 8 and rec.events[-1] == ("close",)
    assert sum(e[1] for e in rec.events if e[0] == "advance") == 8
    assert all("tokens" in e[2] for e in rec.events if e[0] == "advance")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # the library never prints
