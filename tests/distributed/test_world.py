"""The multi-process plumbing that needs no second process: shares, batch plans, result transport, devices, and
what the command line refuses (tests/distributed/test_torchrun.py runs the real thing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.batching import plan_batches, run_batches
from attacks.sharding import _pack, _unpack
from flexaudit.errors import InputError
from flexaudit.moe import distributed
from flexaudit.moe.distributed import SINGLE, World
from flexaudit.moe.training import Batch

from ..conftest import invoke, one_error_line


def test_batch_shares_split_owner_and_public_rows_separately():
    ids = torch.arange(9 * 3).view(9, 3)
    router_only = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.bool)
    batch = Batch(ids, router_only)
    parts = [batch.share(World(r, 2)) for r in range(2)]
    assert [int((~p.router_only).sum()) for p in parts] == [2, 3]
    assert [int(p.router_only.sum()) for p in parts] == [2, 2]
    own = torch.cat([p.ids[~p.router_only] for p in parts])
    public = torch.cat([p.ids[p.router_only] for p in parts])
    assert torch.equal(own, ids[:5]) and torch.equal(public, ids[5:])
    assert batch.share(SINGLE) is batch


def test_the_sharded_plan_is_the_single_process_plan():
    widths = sorted(np.random.default_rng(0).integers(2, 300, 57).tolist(), reverse=True)
    seen = []
    run_batches(widths, lambda a, b: seen.append((a, b)), max_rows=8, max_tokens=1000)
    assert plan_batches(widths, max_rows=8, max_tokens=1000) == seen
    assert plan_batches(widths, max_rows=5, max_tokens=None)[:2] == [(0, 5), (5, 10)]


def test_results_travel_as_npz_without_pickle():
    results = {3: (np.arange(4.0), None, np.float64(2.5)), 0: (np.zeros(0), np.ones((2, 2)), np.int64(7))}
    back = _unpack(_pack(results))
    assert sorted(back) == [0, 3] and back[3][1] is None and float(back[3][2]) == 2.5
    assert np.array_equal(back[0][1], np.ones((2, 2))) and back[0][0].shape == (0,)
    assert _unpack(_pack({})) == {}


def test_one_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = distributed.current()
    assert world == SINGLE and world.main and not world.distributed
    t = torch.ones(3)
    assert world.all_reduce_(t) is t and torch.equal(t, torch.ones(3))
    assert world.broadcast_json({"a": 1}) == {"a": 1} and world.on_main(lambda: 5) == 5
    with pytest.raises(InputError, match="boom"):
        world.on_main(lambda: (_ for _ in ()).throw(InputError("boom")))
    with distributed.session(torch.device("cpu")) as same:  # no torchrun: no process group
        assert same == SINGLE and not torch.distributed.is_initialized()
    assert distributed.local_device("auto") == "auto" and distributed.local_device("cuda:1") == "cuda:1"


def test_under_torchrun_each_process_takes_its_own_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device("cuda") == "cuda:1"
    assert distributed.local_device("cpu") == "cpu"
    with pytest.raises(InputError, match="LOCAL_RANK"):
        distributed.local_device("cuda:0")


def test_only_training_and_audits_run_under_torchrun(monkeypatch, capsys):
    from flexaudit.cli._common import refuse_other_commands_under_torchrun

    monkeypatch.setenv("WORLD_SIZE", "2")
    for allowed in (["expert", "train", "--anchor", "a"], ["anchor", "train"], ["audit", "x"], ["--help"]):
        refuse_other_commands_under_torchrun(allowed)
    with pytest.raises(SystemExit) as exc:
        refuse_other_commands_under_torchrun(["merge", "--anchor", "a"])
    assert exc.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: `flexaudit merge` does not run under torchrun")


def test_fsdp_needs_torchrun_and_is_not_for_dp(tiny_anchor, corpus_dir, tmp_path):
    common = ("expert", "train", "--anchor", tiny_anchor, "--data", corpus_dir / "finance.jsonl", "--name", "f",
              "--steps", 1, "--fsdp", "--device", "cpu")
    result = invoke(*common, "--out", tmp_path / "a")
    assert result.exit_code == 2 and "--fsdp shards a model across processes" in one_error_line(result)
    result = invoke(*common, "--out", tmp_path / "b", "--dp", "--noise-multiplier", 1)
    assert result.exit_code == 2 and "--fsdp is not available with --dp" in one_error_line(result)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
