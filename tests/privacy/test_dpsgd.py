"""DP-SGD on an expert: per-unit clipping is exact, runs resume exactly, the ledger refuses overspending."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from flexaudit.errors import InputError, PolicyViolation
from flexaudit.moe.expert import ExpertOptions, upcycle
from flexaudit.moe.model import FlexOlmo, ModelConfig
from flexaudit.privacy import Ledger
from flexaudit.privacy.dpsgd import PerSampleEngine, _PerUnitClipper, _row_losses, unit_windows
from flexaudit.privacy.expert_training import DPOptions, train_expert

from ..conftest import run_script


def _expert_model(bias: bool, hidden: int = 16, intermediate: int = 24) -> FlexOlmo:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, hidden_size=hidden, intermediate_size=intermediate, num_layers=2, num_heads=2,
                      max_seq_len=16)
    model = upcycle(FlexOlmo(cfg), torch.randn(2, hidden) * 0.1, router_bias=bias)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.experts[1].up_proj.weight.add_(torch.randn_like(layer.mlp.experts[1].up_proj.weight) * 0.1)
            if bias:
                layer.mlp.gate.bias.weight.fill_(-0.3)
    model.freeze_anchor()
    return model


@pytest.mark.parametrize("engine", PerSampleEngine.KINDS)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("clip", [1e6, 0.05])
@pytest.mark.parametrize("width,seq_len", [((16, 24), 15), ((64, 96), 6)])
def test_per_unit_clipped_sum_matches_autograd(engine, bias, clip, width, seq_len):
    """Per-row gradients (fused functions or Opacus hooks), summed over a unit's windows and clipped per
    unit, equal the clipped per-unit gradients that plain autograd computes one unit at a time."""
    model = _expert_model(bias, *width)
    params = [p for p in model.parameters() if p.requires_grad]
    units = [list(range(1, 40)), list(range(5, 14)), list(range(20, 31)) * 3]  # several windows, one, several
    rows_per_unit, _ = unit_windows(units, seq_len=seq_len, max_windows=4)
    tokens = [sum(len(r) - 1 for r in rows) for rows in rows_per_unit]

    expected = [torch.zeros_like(p) for p in params]
    for rows, n in zip(rows_per_unit, tokens):
        from flexaudit.moe.model import pad_right

        ids, mask = pad_right(rows, 0)
        grads = torch.autograd.grad(_row_losses(model, ids, mask, torch.full((len(rows),), 1.0 / n)), params)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        for acc, g in zip(expected, grads):
            acc.add_(g * min(1.0, clip / (float(norm) + 1e-6)))

    per_sample = PerSampleEngine(model, engine)
    clipper = _PerUnitClipper(params, clip)
    rows, row_unit, weights = [], [], []
    for u, unit_rows in enumerate(rows_per_unit):
        for r in unit_rows:
            rows.append(r)
            row_unit.append(u)
            weights.append(1.0 / tokens[u])
    from flexaudit.moe.model import pad_right

    ids, mask = pad_right(rows, 0)
    _row_losses(per_sample, ids, mask, torch.tensor(weights)).backward()
    clipper.add(torch.tensor(row_unit), len(rows_per_unit))
    per_sample.close()
    assert all(p.grad is None or engine == "opacus" for p in params)  # fused: no summed gradient computed
    for got, want in zip(clipper.summed, expected):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    with torch.no_grad():  # closing restores the ordinary modules
        assert torch.equal(model(ids), _expert_model(bias, *width)(ids))
    assert (sum(1 for v in clipper.norms if v > clip) == 3) == (clip < 1)


RUN = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from flexaudit.moe.expert import ExpertOptions
from flexaudit.privacy.expert_training import DPOptions, train_expert
train_expert(anchor_dir=Path(sys.argv[1]), data=Path(sys.argv[2]), name="finance", out=Path(sys.argv[3]),
             options=ExpertOptions(steps=8, batch_size=12, checkpoint_every=3,
                                   dp=DPOptions(target_epsilon=6.0, unit="subject", physical_batch_size=8)),
             subject_field="subject", resume="--resume" in sys.argv)
"""


def _home(tmp_path, name, key_from=None):
    home = tmp_path / name
    home.mkdir()
    if key_from is not None:
        shutil.copy(key_from / "owner.key", home / "owner.key")
    return home


def _run(home, anchor, data, out, *, fault=None, resume=False):
    return run_script(RUN, home, anchor, data, out, fault=fault, resume=resume)


@pytest.mark.slow
def test_killed_dp_runs_resume_to_identical_weights_and_epsilon(tmp_path, tiny_anchor, corpus_dir):
    data = corpus_dir / "finance.jsonl"
    ref_home = _home(tmp_path, "ref")
    reference = tmp_path / "reference"
    done = _run(ref_home, tiny_anchor, data, reference)
    assert done.returncode == 0, done.stderr
    expected = load_file(reference / "expert.safetensors")
    expected_privacy = json.loads((reference / "manifest.json").read_text())["privacy"]
    # one run killed three times, each resume dying at the next fault (after a step before any checkpoint, while
    # writing one, after a step past it), then resumed to the end
    home = _home(tmp_path, "killed", key_from=ref_home)  # same owner, own ledger
    out = tmp_path / "out-killed"
    ledger = Ledger(home / "ledger.db")
    for i, fault in enumerate(("step:2", "checkpoint-write:6", "step:7")):
        killed = _run(home, tiny_anchor, data, out, fault=fault, resume=i > 0)
        assert killed.returncode == 137, (fault, killed.stderr)
        assert not out.exists()
        assert [r.status for r in ledger.runs()] == ["planned"]  # the ledger is not ahead of what was released
    resumed = _run(home, tiny_anchor, data, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    got = load_file(out / "expert.safetensors")
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    privacy = json.loads((out / "manifest.json").read_text())["privacy"]
    assert privacy["epsilon"] == expected_privacy["epsilon"] and privacy["steps"] == 8
    assert privacy["training_statistics"] == expected_privacy["training_statistics"]  # no step twice or skipped
    [run] = ledger.runs()
    assert run.status == "released" and run.history[0].steps == 8


def test_dp_manifest_block_and_ledger(tmp_path, tiny_anchor, corpus_dir):
    home = _home(tmp_path, "home")
    out = tmp_path / "fin"
    trained = train_expert(anchor_dir=tiny_anchor, data=corpus_dir / "finance.jsonl", name="finance", out=out,
                           options=ExpertOptions(steps=4, batch_size=10, dp=DPOptions(target_epsilon=8.0, unit="subject")),
                           subject_field="subject", home=home)
    privacy = trained.manifest["privacy"]
    assert privacy["guarantee"] == "dp" and privacy["epsilon"] <= 8.0 and privacy["unit"] == "subject"
    assert privacy["delta"] < 1 / privacy["dataset_size"]
    assert privacy["cross_check"]["agree"] is True
    subjects = {d.subject for d in trained.members}
    assert privacy["dataset_size"] == len(subjects)  # one unit per person
    assert not subjects & {d.subject for d in trained.holdout}  # the split keeps a person on one side
    ledger = Ledger(home / "ledger.db")
    [total] = ledger.datasets()
    assert total.to_dict()["epsilon"] == pytest.approx(privacy["epsilon"], rel=1e-6)
    # a second run on the same data composes with the first and is refused when the cap is too small
    with pytest.raises(PolicyViolation) as info:
        train_expert(anchor_dir=tiny_anchor, data=corpus_dir / "finance.jsonl", name="finance2", out=tmp_path / "fin2",
                     options=ExpertOptions(steps=4, batch_size=10, dp=DPOptions(target_epsilon=8.0, unit="subject", budget=10.0)),
                     subject_field="subject", home=home)
    assert "10" in info.value.message and not (tmp_path / "fin2").exists()
    assert len(ledger.runs()) == 1  # refused before training: nothing planned


def test_dp_manifest_names_the_fallback_accountant(tmp_path, tiny_anchor, corpus_dir):
    """A delta below what PRV resolves: training still states an epsilon, by the accountant that produced it."""
    home = _home(tmp_path, "home")
    trained = train_expert(anchor_dir=tiny_anchor, data=corpus_dir / "finance.jsonl", name="finance", out=tmp_path / "fin",
                           options=ExpertOptions(steps=2, batch_size=10,
                                                 dp=DPOptions(noise_multiplier=1.0, delta=1e-30, unit="subject")),
                           subject_field="subject", home=home)
    privacy = trained.manifest["privacy"]
    assert privacy["requested_accountant"] == "prv" and privacy["accountant"]["name"] != "prv"
    assert privacy["fallback"]["failed"][0]["accountant"] == "prv" and privacy["epsilon"] > 0
    assert f"figure by {privacy['accountant']['name']}" in privacy["statement"]
    [total] = Ledger(home / "ledger.db").datasets()
    assert total.epsilon == pytest.approx(privacy["epsilon"], rel=1e-9) and total.accountant == privacy["accountant"]["name"]


def test_non_dp_run_is_no_formal_guarantee(tmp_path, tiny_anchor, corpus_dir):
    home = _home(tmp_path, "home")
    train_expert(anchor_dir=tiny_anchor, data=corpus_dir / "clinical.jsonl", name="clinical", out=tmp_path / "c",
                 options=ExpertOptions(steps=2, batch_size=4), home=home)
    [total] = Ledger(home / "ledger.db").datasets()
    d = total.to_dict()
    assert d["epsilon"] is None and "no formal guarantee" in json.dumps(d)


@pytest.mark.parametrize("dp,fragment", [
    (DPOptions(target_epsilon=1e-6), "target"),
    (DPOptions(target_epsilon=8.0, noise_multiplier=1.0), "exactly one"),
    (DPOptions(target_epsilon=8.0, unit="subject"), "--subject-field"),
    (DPOptions(noise_multiplier=1.0, delta=0.5), "delta"),
])
def test_impossible_requests_are_refused_before_training(tmp_path, tiny_anchor, corpus_dir, dp, fragment):
    with pytest.raises(InputError) as info:
        train_expert(anchor_dir=tiny_anchor, data=corpus_dir / "clinical.jsonl", name="c", out=tmp_path / "c",
                     options=ExpertOptions(steps=4, batch_size=8, dp=dp), home=_home(tmp_path, "h"))
    assert fragment in info.value.message
    assert not (tmp_path / "c").exists()
