"""The command line: outputs, the exit-code contract, and one clear line for every bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Olmo2Config, Olmo2ForCausalLM

from ..conftest import invoke, one_error_line


def test_eval_json(tiny_anchor, clinical_expert, corpus_dir):
    holdout = clinical_expert.with_name("clinical.local") / "holdout.jsonl"
    result = invoke("eval", clinical_expert, "--anchor", tiny_anchor, "--data", f"clinical={holdout}",
                    "--data", f"public={corpus_dir / 'public.jsonl'}", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["experts"] == ["public", "clinical"]
    for domain in ("clinical", "public"):
        assert report["domains"][domain]["tokens"] > 0
        assert 1.0 < report["domains"][domain]["perplexity"] < 600  # vocabulary size bounds a sane model


def test_merge_eval_generate_exclude(tiny_anchor, clinical_expert, finance_expert, tmp_path, corpus_dir):
    pool = tmp_path / "pool"
    result = invoke("merge", clinical_expert, finance_expert, "--anchor", tiny_anchor, "--out", pool)
    assert result.exit_code == 0, result.output
    assert "public, clinical, finance" in result.stdout
    data = f"finance={corpus_dir / 'finance.jsonl'}"
    full = json.loads(invoke("eval", pool, "--data", data, "--json").stdout)
    without = json.loads(invoke("eval", pool, "--data", data, "--exclude", "finance", "--json").stdout)
    assert without["experts"] == ["public", "clinical"]
    assert without["domains"]["finance"]["perplexity"] != full["domains"]["finance"]["perplexity"]
    gen = invoke("generate", pool, "--prompt", "Patient name:", "--max-new-tokens", "8", "--exclude", "clinical")
    assert gen.exit_code == 0, gen.output
    assert gen.stdout.startswith("Patient name:")
    again = invoke("generate", pool, "--prompt", "Patient name:", "--max-new-tokens", "8", "--exclude", "clinical")
    assert again.stdout == gen.stdout  # greedy decoding is deterministic
    bad = invoke("generate", pool, "--prompt", "x", "--exclude", "nobody")
    assert bad.exit_code == 2 and "no expert named 'nobody'" in one_error_line(bad)


def test_integrity_failures_exit_3(tiny_anchor, clinical_expert, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(clinical_expert, pkg)
    tensors = load_file(pkg / "expert.safetensors")
    key = next(iter(tensors))
    tensors[key] = tensors[key] * 2
    save_file(tensors, str(pkg / "expert.safetensors"))
    result = invoke("merge", pkg, "--anchor", tiny_anchor, "--out", tmp_path / "pool")
    assert result.exit_code == 3
    assert "does not match its manifest" in one_error_line(result)
    assert not (tmp_path / "pool").exists()
    assert not list(tmp_path.glob(".pool*"))  # no staging leftovers


@pytest.mark.parametrize("content,fragment", [(b"", "no non-empty documents"), (b"\xff\xfe\x00", "not valid UTF-8"),
                                              (b'{"body": 1}\n', "missing field 'text'")])
def test_bad_training_data_exit_2_and_write_nothing(tiny_anchor, tmp_path, content, fragment):
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    out = tmp_path / "expert"
    result = invoke("expert", "train", "--anchor", tiny_anchor, "--data", data, "--name", "x", "--out", out, "--steps", "2")
    assert result.exit_code == 2
    assert fragment in one_error_line(result)
    assert not out.exists()


def test_usage_errors(tiny_anchor, tmp_path):
    assert invoke("eval", tiny_anchor, "--data", "nopath").exit_code == 2
    result = invoke("expert", "train", "--anchor", tmp_path / "missing", "--data", tmp_path, "--name", "x", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "anchor directory not found" in one_error_line(result)
    result = invoke("expert", "train", "--anchor", tiny_anchor, "--data", "builtin:finance", "--name", "public", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "invalid expert name" in one_error_line(result)
    result = invoke("anchor", "train", "--corpus", "builtin:public", "--out", tiny_anchor)
    assert result.exit_code == 2 and "already exists" in one_error_line(result)
    for flag, value in (("--anchor-weight", "-1"), ("--canary-repeats", "0"), ("--steps", "0")):
        result = invoke("expert", "train", "--anchor", tiny_anchor, "--data", "builtin:finance", "--name", "x",
                        "--out", tmp_path / "o", flag, value)
        assert result.exit_code == 2 and f"{flag} must be" in one_error_line(result)
        assert not (tmp_path / "o").exists() and not (tmp_path / "o.local").exists()


def test_progress_is_one_line_per_task_in_a_log_and_on_a_terminal(clinical_expert, tiny_anchor, corpus_dir, capsys):
    """Each task says one complete line when it ends: in a log (CI, a file) instead of every bar's last frame
    squeezed into the log's width at the end, and on a terminal beside the live bars."""
    import re

    from flexaudit.cli._common import RichProgress

    result = invoke("eval", clinical_expert, "--anchor", tiny_anchor, "--data", f"finance={corpus_dir / 'finance.jsonl'}")
    assert result.exit_code == 0, result.output
    assert re.search(r"^eval finance: ([\d,]+)/\1 in \d+\.\d s$", result.stderr, re.M), result.stderr
    assert "━" not in result.stderr and "…" not in result.stderr

    with pytest.raises(KeyboardInterrupt), RichProgress(live=False) as progress:
        steps = progress.task("expert x", total=3)
        steps.advance(1, loss=4.25)
        steps.advance(2, loss=3.5, **{"tok/s": 21_560.0})
        steps.close()
        steps.close()  # a second close says nothing more
        told = capsys.readouterr().err.splitlines()
        assert len(told) == 1 and re.fullmatch(r"expert x: 3/3 in \d+\.\d s  loss 3\.5  tok/s 21,560", told[0]), told
        decoding = progress.task("decoding", total=None)
        decoding.advance(5)
        raise KeyboardInterrupt  # the command ends before the task does
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"decoding: stopped at 5 in \d+\.\d s", lines[0]), lines
    with RichProgress(live=False) as progress:
        progress.task("merging", total=2).advance(2)  # a task the code left open ends with the command
    assert re.fullmatch(r"merging: 2/2 in \d+\.\d s\n", capsys.readouterr().err)

    # on a terminal the same lines, each when its task ends, beside the live bars
    import io

    from rich.console import Console

    screen = io.StringIO()
    with RichProgress(console=Console(file=screen, force_terminal=True, width=100)) as progress:
        steps = progress.task("anchor", total=2)
        steps.advance(2, loss=4.0)
        steps.close()
        progress.task("scoring", total=4).advance(1)
    # each row as left by its last carriage return, without control codes (the live bars between are redrawn)
    shown = [row.split("\r")[-1] for row in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).split("\n")]
    told = [row for row in shown if ": " in row]
    assert len(told) == 2 and re.fullmatch(r"anchor: 2/2 in \d+\.\d s  loss 4", told[0]), shown
    assert re.fullmatch(r"scoring: 1/4 in \d+\.\d s", told[1]), shown


def test_counts_no_run_could_use_are_one_line(tiny_anchor, clinical_expert, tmp_path, corpus_dir):
    result = invoke("merge", clinical_expert, "--anchor", tiny_anchor, "--out", tmp_path / "pool", "--top-k", "0")
    assert result.exit_code == 2 and "--top-k must be at least 1, got 0" in one_error_line(result)
    assert not (tmp_path / "pool").exists()  # not the default top-k in silence
    for flag in ("--batch-size", "--batch-tokens"):
        result = invoke("eval", clinical_expert, "--anchor", tiny_anchor, "--data",
                        f"finance={corpus_dir / 'finance.jsonl'}", flag, "0")
        assert result.exit_code == 2 and f"{flag} must be at least 1, got 0" in one_error_line(result)


def _olmo2_checkpoint(path, tokenizer_dir):
    from flexaudit.moe.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    cfg = Olmo2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(3)
    Olmo2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def test_anchor_import_from_dense_olmo2(tiny_anchor, tmp_path, corpus_dir):
    src = tmp_path / "olmo2"
    _olmo2_checkpoint(src, tiny_anchor)
    result = invoke("anchor", "import", src, "--out", tmp_path / "anchor", "--public-data", corpus_dir / "public.jsonl")
    assert result.exit_code == 0, result.output
    from flexaudit.moe.anchor import load_anchor

    anchor = load_anchor(tmp_path / "anchor")
    assert anchor.info["provenance"]["from_model_type"] == "olmo2"
    assert anchor.config.num_experts == 1
    assert anchor.model.model.layers[0].mlp.gate.rows[0].weight.abs().sum() > 0  # public row derived from data
    # an expert trains on the imported anchor
    result = invoke("expert", "train", "--anchor", tmp_path / "anchor", "--data", corpus_dir / "finance.jsonl",
                    "--name", "finance", "--out", tmp_path / "fin", "--steps", "3", "--batch-size", "2")
    assert result.exit_code == 0, result.output


def test_anchor_import_refuses_pickle(tiny_anchor, tmp_path):
    src = tmp_path / "olmo2"
    _olmo2_checkpoint(src, tiny_anchor)
    (src / "model.safetensors").unlink()
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    result = invoke("anchor", "import", src, "--out", tmp_path / "anchor")
    assert result.exit_code == 3 and "pickle" in one_error_line(result)
    assert not (tmp_path / "anchor").exists()


@pytest.mark.slow
def test_demo_quick(tmp_path):
    # two worker processes, as on a 2-core machine (the test session itself runs one torch thread)
    result = invoke("demo", "--quick", "--workdir", tmp_path / "demo", "--json", "--jobs", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["machine"]["workers"] == 2
    owners = ("code", "clinical", "finance", "clinical-dp", "finance-leaky")
    assert set(report["job_seconds"]) == {*owners, *(f"audit {o}" for o in owners),
                                          *(f"dense {o}" for o in owners if o != "clinical-dp")}
    labels = [r["label"] for r in report["rows"]]
    assert labels[0] == "anchor" and "merged pool" in labels
    assert {"anchor + code", "anchor + clinical", "anchor + finance", "anchor + clinical-dp"} <= set(labels)
    assert report["domains"] == ["public", "code", "clinical", "finance"]
    for row in report["rows"]:
        assert all(1.0 < v < 1000 for v in row["perplexity"].values())
    rows = {r["label"]: r["perplexity"] for r in report["rows"]}
    for d in ("code", "clinical", "finance"):  # each expert at least 2x on its own domain, even in the quick
        assert 2 * rows[f"anchor + {d}"][d] < rows["anchor"][d]  # version: issue 14 (measured 2.08x, 2.63x, 2.47x)
    # the extraction table finds the careless owner's records in its dense fine-tune, never in the anchor
    careless = {r["kind"]: r["rates"] for r in report["extraction"]["finance-leaky"]["table"]["rows"]}
    assert careless["anchor"]["FA-EXT-DISC"]["k"] == 0 and careless["dense"]["FA-EXT-DISC"]["k"] > 0
    dense, anchor = careless["dense"]["FA-EXT-DISC"]["ci"], careless["anchor"]["FA-EXT-DISC"]["ci"]
    assert dense["low"] > anchor["high"]  # clearly above
    # and its customers' personal data: the dense fine-tune picks out the true value among other customers'
    # (measured 0.81 [0.71, 0.89] against the anchor's 0.26 [0.17, 0.37])
    dense, anchor = careless["dense"]["FA-EXT-PII-INF"]["ci"], careless["anchor"]["FA-EXT-PII-INF"]["ci"]
    assert dense["low"] > anchor["high"]
    for admitted in report["pool"]["admitted"]:
        assert f"pool without {admitted}" in labels or admitted == "finance-leaky"
    # differential privacy: the guarantee holds and is reported beside the non-DP expert
    privacy = report["privacy"]
    assert privacy["epsilon"] <= 8.0 and privacy["unit"] == "subject"
    assert privacy["perplexity"] > 1 and privacy["non_dp_perplexity"] > 1
    # every expert audited, rendered and judged; the leaky one never enters the pool
    assert set(report["audits"]) == {"code", "clinical", "finance", "clinical-dp", "finance-leaky"}
    for name, audit in report["audits"].items():
        assert audit["gate"]["decision"] in ("pass", "fail", "inconclusive")
        if audit["gate"]["decision"] != "pass":  # every other decision says which controls it rests on
            assert audit["gate"]["failing"] or audit["gate"]["undecided"], (name, audit["gate"])
        assert (tmp_path / "demo" / "audits" / name / "report.html").is_file()
    assert "finance-leaky" in report["pool"]["refused"]
    assert report["pool"]["admitted"] == ["code", "clinical", "finance"]  # the clean experts pass, even quick
    assert report["pool"]["admitted"] and report["pool"]["merged_experts"][0] == "public"
    for path in report["artifacts"].values():
        assert (tmp_path / "demo").joinpath(path).exists()


def test_demo_workdir_rules(tmp_path):
    from flexaudit.demo import MARKER, _prepare_workdir

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    result = invoke("demo", "--quick", "--workdir", foreign)
    assert result.exit_code == 2 and "not made by the demo" in one_error_line(result)
    assert (foreign / "thesis.txt").read_text() == "keep me"
    own = tmp_path / "demo"
    _prepare_workdir(own)
    (own / "audits").mkdir()
    _prepare_workdir(own)  # the demo's own directory: a rerun replaces its outputs
    assert (own / MARKER).exists() and not (own / "audits").exists()


def test_paths_the_file_system_refuses_get_one_line_not_internal_error(tiny_anchor, clinical_expert, tmp_path,
                                                                       corpus_dir):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    result = invoke("demo", "--quick", "--workdir", a_file)
    assert result.exit_code == 2 and "is a file, not a folder" in one_error_line(result)
    # an output under a file: the operating system's refusal, said as such and before any training, for every
    # command that writes
    under, not_a_folder = a_file / "out", f"{a_file}"
    for args, expected in (
        (("anchor", "train", "--corpus", corpus_dir / "public.jsonl", "--preset", "tiny", "--out", under), not_a_folder),
        (("expert", "train", "--anchor", tiny_anchor, "--data", corpus_dir / "finance.jsonl", "--name", "x",
          "--out", under), not_a_folder),
        (("baseline", "dense", clinical_expert, "--anchor", tiny_anchor, "--out", under), not_a_folder),
        (("merge", clinical_expert, "--anchor", tiny_anchor, "--out", under), f"{a_file}: File exists (a file is in"),
        (("demo", "--quick", "--workdir", under), not_a_folder),
    ):
        result = invoke(*args)
        line = one_error_line(result)
        assert result.exit_code == 2 and expected in line and "internal error" not in line, (args[:2], line)
        assert "Not a directory (part of the path is a file" in line or "File exists" in line, line
        assert "expert x" not in result.output and "anchor:" not in result.output  # refused before training
    assert a_file.read_text() == "keep me"


def test_file_system_errors_are_told_apart_from_bugs(tmp_path):
    import errno

    from safetensors import safe_open

    from flexaudit.cli._common import file_system_error
    from flexaudit.fsutil import check_can_create, save_tensors

    assert file_system_error(OSError(errno.ENOSPC, "No space left on device")).startswith("No space left on device (free")
    assert file_system_error(PermissionError(errno.EACCES, "Permission denied", "/srv/out")).startswith(
        "/srv/out: Permission denied (choose a path you may write to")
    # Rust libraries (tokenizers, safetensors) raise their own types with the OS error's number in the message,
    # at its end or before more text
    assert "Read-only file system (choose a path on a writable" in file_system_error(
        Exception("Read-only file system (os error 30)"))
    assert file_system_error(Exception('No space left on device (os error 28) at path "/srv/w.safetensors"')) == \
        "No space left on device (free some space or choose another path, then rerun)"
    # a file the program itself expected to find is a bug, and stays one
    assert file_system_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None
    assert file_system_error(ValueError("shape mismatch")) is None
    # a training command's check before it trains: the file in the way is named, and nothing is made
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(NotADirectoryError) as refused:
        check_can_create(a_file / "expert.local")
    assert refused.value.filename == str(a_file)
    check_can_create(tmp_path / "new" / "deeper" / "expert.local")
    assert not (tmp_path / "new").exists()
    # safetensors' I/O failures come out as the OSError they are, naming the file
    with pytest.raises(FileNotFoundError) as failed:
        save_tensors({"w": torch.zeros(2)}, tmp_path / "missing" / "w.safetensors")
    assert failed.value.filename == str(tmp_path / "missing" / "w.safetensors")
    save_tensors({"w": torch.ones(2)}, tmp_path / "w.safetensors", metadata={"format": "pt"})
    with safe_open(tmp_path / "w.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"} and f.get_tensor("w").tolist() == [1.0, 1.0]


def test_demo_unknown_preset_touches_nothing(tmp_path):
    from flexaudit.demo import run_demo
    from flexaudit.errors import InputError

    with pytest.raises(InputError, match="unknown preset 'huge'"):
        run_demo(tmp_path / "demo", preset="huge")
    assert not (tmp_path / "demo").exists()


def test_demo_without_workers_is_refused_in_one_line_before_anything_is_written(tmp_path):
    result = invoke("demo", "--quick", "--workdir", tmp_path / "demo", "--jobs", "0")
    assert result.exit_code == 2 and "--jobs must be at least 1" in one_error_line(result)
    assert not (tmp_path / "demo").exists()
