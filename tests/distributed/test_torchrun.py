"""Training and audits under `torchrun --nproc-per-node 2` (gloo, CPU) give what one process gives.

Each torchrun launch costs seconds (two fresh interpreters and a rendezvous), so there are three: one job that
runs the library's training entry points (DDP, FSDP, DP-SGD, the anchor) and one DP noise step, a DP training
resumed and killed through the command line, and an audit through the command line. The tests share one xdist
group, so the single-process references are made once.

Tolerances: float32 summation order. One process sums a batch's gradients in one order, two processes sum two
halves and then the halves; measured after 20 steps the expert's weights differ by 2e-7 to 3e-7 (non-DP) and 1e-8
(DP), so 1e-6 is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flexaudit.audit.run import EXTRACTION_ATTACKS, MEMBERSHIP_ATTACKS
from flexaudit.data.split import owner_key
from flexaudit.moe.distributed import World
from flexaudit.privacy import Ledger
from flexaudit.privacy.expert_training import train_expert
from flexaudit.report import read_report
from flexaudit.workflows import AuditOptions, run_audit

from .job_settings import DP, DP_ARGS, NON_DP

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torchrun")]
HERE = Path(__file__).parent
TOLERANCE = 1e-6  # max |weight difference| after 20 steps, 1 vs 2 processes (measured: 2-3e-7 and 1e-8)


def torchrun(*args, home: Path, fault: str | None = None, processes: int = 2) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --nproc-per-node 2 --standalone ARGS` (a free rendezvous port each time);
    with processes=1 plain `python ARGS`. FLEXAUDIT_FAULT=fault kills every process at that point."""
    env = {**os.environ, "FLEXAUDIT_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("FLEXAUDIT_FAULT", None)
    if fault:
        env["FLEXAUDIT_FAULT"] = fault
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--standalone"] \
        if processes > 1 else []
    return subprocess.run([sys.executable, *launcher, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600)


def weights_differ(a: Path, b: Path) -> float:
    x, y = load_file(a / "expert.safetensors"), load_file(b / "expert.safetensors")
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def home_with_key(path: Path, key_from: Path) -> Path:
    """An owner home with the same secret key (so the same DP sampling and noise) and its own ledger."""
    path.mkdir(parents=True)
    shutil.copy(key_from / "owner.key", path / "owner.key")
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_anchor, corpus_dir):
    """The single-process runs every two-process run is compared with."""
    root = tmp_path_factory.mktemp("single")
    owner_key(root / "key")  # one owner: every run below and in the tests uses this key
    runs = {}
    for name, options in (("non_dp", NON_DP), ("dp", DP)):
        home = home_with_key(root / f"home-{name}", root / "key")
        runs[name] = train_expert(anchor_dir=tiny_anchor, data=corpus_dir / "finance.jsonl", name="finance",
                                  out=root / name, options=options, public_data=corpus_dir / "public.jsonl", home=home)
    runs["key"] = root / "home-dp"
    return runs


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_anchor, corpus_dir, single):
    work = tmp_path_factory.mktemp("torchrun-job")
    for name in ("ddp", "fsdp", "dp"):
        home_with_key(work / f"home-{name}", single["key"])
    done = torchrun(HERE / "torchrun_job.py", work, tiny_anchor, corpus_dir / "finance.jsonl",
                    corpus_dir / "public.jsonl", home=work)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, json.loads((work / "results.json").read_text())


def test_training_on_two_processes_takes_the_steps_of_one(job, single, corpus_dir, tmp_path):
    work, results = job
    assert results["world"] == 2 and results["ranks_agree"]
    reference = single["non_dp"].package
    assert weights_differ(work / "ddp", reference) < TOLERANCE  # DistributedDataParallel
    assert weights_differ(work / "fsdp", reference) < TOLERANCE  # FSDP2: the anchor and the expert sharded
    assert weights_differ(work / "dp", single["dp"].package) < TOLERANCE  # DP-SGD, clipping active
    for name, ref in (("ddp", single["non_dp"]), ("dp", single["dp"])):
        got = json.loads((work / name / "manifest.json").read_text())
        assert got["training"]["final_loss"] == pytest.approx(ref.manifest["training"]["final_loss"], abs=1e-4)
        assert got["split"] == ref.manifest["split"]
    got = json.loads((work / "dp" / "manifest.json").read_text())["privacy"]
    want = single["dp"].manifest["privacy"]
    assert got["epsilon"] == want["epsilon"]  # the same accountant history
    assert got["training_statistics"] == want["training_statistics"]  # the same units sampled and clipped
    assert got["training_statistics"]["clipped"] > 0
    [run] = Ledger(work / "home-dp" / "ledger.db").runs()  # written once, by rank 0
    assert run.status == "released" and run.history == Ledger(single["key"] / "ledger.db").runs()[0].history
    # the anchor: the tokenizer rank 0 trained reached rank 1, and one rank wrote it
    from flexaudit.moe.anchor import train_anchor, verify_anchor

    from .job_settings import ANCHOR_STEPS

    one = train_anchor([corpus_dir / "public.jsonl"], tmp_path / "anchor", preset="tiny", steps=ANCHOR_STEPS, seed=0)
    assert verify_anchor(work / "anchor")["root_digest"] == results["anchor"]["root_digest"]
    a, b = load_file(work / "anchor" / "model.safetensors"), load_file(tmp_path / "anchor" / "model.safetensors")
    # every parameter trained: Adam divides the embeddings' tiny gradients by their own size, so rounding shows
    # more; one process with 2 threads instead of 1 differs from 1 thread by as much (measured 2.9e-5)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert (work / "anchor" / "tokenizer.json").read_bytes() == (tmp_path / "anchor" / "tokenizer.json").read_bytes()
    assert one["root_digest"].startswith("sha256:")


def test_dp_noise_enters_the_summed_gradient_once(job):
    """A step with no sampled unit leaves only the noise: its standard deviation over ~200k coordinates is
    sigma C, not sigma C sqrt(2) (each rank adding its own draw), and it is the single-process draw exactly."""
    noise = job[1]["noise"]
    assert noise["coordinates"] > 100_000
    assert noise["measured_std"] == pytest.approx(noise["sigma_c"], rel=0.01)
    assert abs(noise["measured_std"] - noise["sigma_c"] * 2 ** 0.5) > 0.3 * noise["sigma_c"]
    assert noise["coordinates_differing_from_rank0_or_one_process"] == 0


def test_sharded_passes_show_the_whole_job_and_give_one_process_results(job):
    """Under two processes each rank's scoring and decoding bars advance by every item, with the tokens one
    process shows, and the log-probabilities and samples are one process's."""
    progress = job[1]["progress"]
    assert len(progress["tasks"]) == 2 and all(t["items"] == t["total"] > 0 for t in progress["tasks"])
    assert progress["same_tasks_as_one_process"] and progress["same_results_as_one_process"]


class Killed(Exception):
    """Stands for the process dying at a fault point (what is on disk is the same)."""


def test_killed_runs_resume_on_another_number_of_processes(tmp_path, tiny_anchor, corpus_dir, single, monkeypatch):
    """Stopped at step 13 in one process, resumed on two and killed at step 17 (torchrun), resumed in one: the
    weights, epsilon, statistics and the one ledger row of an uninterrupted single-process run."""
    import flexaudit.privacy.dpsgd as dpsgd

    home = home_with_key(tmp_path / "home", single["key"])
    out, checkpoints = tmp_path / "finance", tmp_path / "finance.local" / "checkpoints"
    common = dict(anchor_dir=tiny_anchor, data=corpus_dir / "finance.jsonl", name="finance", out=out, options=DP,
                  public_data=corpus_dir / "public.jsonl", home=home)

    def fault(name: str) -> None:
        if name == "step:13":
            raise Killed(name)

    with monkeypatch.context() as patch:
        patch.setattr(dpsgd, "_fault_point", fault)
        with pytest.raises(Killed):
            train_expert(**common)
    assert (checkpoints / "step-00000012").is_dir() and not out.exists()

    killed = torchrun("-m", "flexaudit", "expert", "train", "--anchor", tiny_anchor, "--data",
                      corpus_dir / "finance.jsonl", "--name", "finance", "--public-data", corpus_dir / "public.jsonl",
                      "--out", out, "--device", "cpu", *DP_ARGS, "--resume", home=home, fault="step:17")
    assert killed.returncode != 0 and not out.exists(), killed.stderr[-3000:]
    assert (checkpoints / "step-00000015").is_dir()  # written by rank 0 of two processes
    assert [r.status for r in Ledger(home / "ledger.db").runs()] == ["planned"]

    done = train_expert(**common, resume=True)
    assert weights_differ(out, single["dp"].package) < TOLERANCE
    privacy = done.manifest["privacy"]
    assert privacy["epsilon"] == single["dp"].manifest["privacy"]["epsilon"]
    assert privacy["training_statistics"] == single["dp"].manifest["privacy"]["training_statistics"]
    [run] = Ledger(home / "ledger.db").runs()
    assert run.status == "released" and run.history[0].steps == 20


def _comparable(report: dict) -> dict:
    """The report without what differs between any two runs: timings, timestamps, ids, the process count."""
    report = json.loads(json.dumps(report))
    audit = report["empirical"]["audit"]
    for key in ("seconds", "processes"):
        audit.pop(key, None)
    report["verdict"].pop("evaluated_at", None)
    for key in ("generated_at", "id"):
        report["document"].pop(key, None)
    return report


def test_sharded_audit_report_equals_the_single_process_report(tmp_path, tiny_anchor, single):
    """Every attack but the personal-data one, whose 100 greedy prompts per model would double the time and whose
    decoding is the discoverable attack's (attacks.generate, tested here)."""
    expert = single["non_dp"].package
    chosen = tuple(a for a in MEMBERSHIP_ATTACKS + EXTRACTION_ATTACKS if a != "FA-EXT-PII")
    options = AuditOptions(max_documents=12, extraction_documents=4, attacks=chosen)
    one = run_audit(expert, anchor_dir=tiny_anchor, out=tmp_path / "one", options=options, home=single["key"])
    done = torchrun("-m", "flexaudit", "audit", expert, "--anchor", tiny_anchor, "--out", tmp_path / "two",
                    "--max-documents", 12, "--extraction-documents", 4, "--attacks", ",".join(chosen),
                    "--long-texts", "window", "--device", "cpu", home=single["key"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("verdict under the policy") == 1  # rank 0 alone prints
    two = read_report(tmp_path / "two")
    assert two["empirical"]["audit"]["processes"] == 2 and one.report["empirical"]["audit"]["processes"] == 1
    assert _comparable(two) == _comparable(one.report)  # every score, count, decision and hash


def test_cuda_nccl_training_matches_one_process(tmp_path, tiny_anchor, corpus_dir, single):
    """The same code with NCCL on two GPUs (skipped without them)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    home = home_with_key(tmp_path / "home", single["key"])
    done = torchrun("-m", "flexaudit", "expert", "train", "--anchor", tiny_anchor, "--data",
                    corpus_dir / "finance.jsonl", "--name", "finance", "--public-data", corpus_dir / "public.jsonl",
                    "--out", tmp_path / "finance", "--device", "cuda", *DP_ARGS, home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert weights_differ(tmp_path / "finance", single["dp"].package) < 1e-4  # other kernels than the CPU's
    privacy = json.loads((tmp_path / "finance" / "manifest.json").read_text())["privacy"]
    assert privacy["epsilon"] == single["dp"].manifest["privacy"]["epsilon"]


def _close(a, b, tol: float = 1e-5) -> bool:
    """Equal JSON values, numbers within `tol` (other GPUs' kernels may round otherwise)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return abs(a - b) <= tol
    return a == b


def test_cuda_nccl_sharded_audit_matches_one_process(tmp_path, tiny_anchor, single):
    """The sharded audit with NCCL on two GPUs against one process on one GPU (skipped without two GPUs)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    expert, reports = single["non_dp"].package, {}
    for processes in (1, 2):
        out = tmp_path / f"audit-{processes}"
        done = torchrun("-m", "flexaudit", "audit", expert, "--anchor", tiny_anchor, "--out", out,
                        "--max-documents", 12, "--extraction-documents", 4, "--device", "cuda",
                        home=single["key"], processes=processes)
        assert done.returncode == 0, done.stderr[-3000:]
        reports[processes] = read_report(out)
    assert reports[2]["empirical"]["audit"]["processes"] == 2
    assert _close(_comparable(reports[2]), _comparable(reports[1]))


def test_world_shares_cover_every_item_once():
    for n in range(0, 12):
        for size in (1, 2, 3, 5):
            parts = [list(range(n))[World(rank, size).share(n)] for rank in range(size)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
