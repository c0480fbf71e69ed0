"""Devices and precision: every command that runs a model takes --device and --dtype, weights go straight into
the requested dtype, packages and merged pools keep the anchor's, and bfloat16 audits agree with float32 ones."""

from __future__ import annotations

import json

import pytest
import torch

from flexaudit.errors import InputError
from flexaudit.moe.device import Placement, resolve_device

from ..conftest import invoke, one_error_line

BF16 = ("--device", "cpu", "--dtype", "bfloat16")


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def bf16_chain(tmp_path_factory, corpus_dir):
    """A bfloat16 anchor, a bfloat16 expert and a DP one, and the merged pool, all made through the CLI."""
    root = tmp_path_factory.mktemp("bf16")
    _ok(invoke("anchor", "train", "--corpus", corpus_dir / "public.jsonl", "--preset", "tiny", "--steps", 20,
               "--out", root / "anchor", *BF16))
    _ok(invoke("expert", "train", "--anchor", root / "anchor", "--data", corpus_dir / "clinical.jsonl",
               "--name", "clinical", "--steps", 6, "--batch-size", 4, "--out", root / "clinical", *BF16))
    _ok(invoke("expert", "train", "--anchor", root / "anchor", "--data", corpus_dir / "finance.jsonl",
               "--name", "finance", "--steps", 3, "--batch-size", 4, "--dp", "--noise-multiplier", 1.0,
               "--out", root / "finance", *BF16))
    _ok(invoke("merge", "--anchor", root / "anchor", root / "clinical", root / "finance", "--out", root / "merged",
               *BF16))
    return root


def _stored_dtypes(path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {str(fh.get_tensor(k).dtype) for k in fh.keys()}


def test_the_anchor_packages_and_merged_pool_are_stored_in_bfloat16(bf16_chain):
    assert _stored_dtypes(bf16_chain / "anchor" / "model.safetensors") == {"torch.bfloat16"}
    for name in ("clinical", "finance"):
        manifest = json.loads((bf16_chain / name / "manifest.json").read_text())
        assert {t["dtype"] for t in manifest["tensors"]} == {"bfloat16"}
        assert manifest["training"]["frozen_tensors_verified_identical"] > 0
        assert manifest["training"]["compute_dtype"] == "bfloat16"
    assert json.loads((bf16_chain / "finance" / "manifest.json").read_text())["privacy"]["guarantee"] == "dp"
    assert _stored_dtypes(bf16_chain / "merged" / "model.safetensors") == {"torch.bfloat16"}
    assert json.loads((bf16_chain / "merged" / "config.json").read_text())["dtype"] == "bfloat16"


def test_eval_generate_audit_and_trace_run_in_bfloat16(bf16_chain, tmp_path):
    held_out = bf16_chain / "clinical.local" / "holdout.jsonl"
    table = invoke("eval", bf16_chain / "merged", "--data", f"clinical={held_out}", "--json", *BF16)
    assert json.loads(_ok(table) and table.stdout)["domains"]["clinical"]["perplexity"] > 1
    assert _ok(invoke("generate", bf16_chain / "merged", "--prompt", "PROGRESS NOTE", "--max-new-tokens", 4, *BF16))
    _ok(invoke("audit", bf16_chain / "clinical", "--anchor", bf16_chain / "anchor", "--out", tmp_path / "audit",
               "--max-documents", 16, "--extraction-documents", 4, "--attacks", "FA-MIA-LOSS,FA-EXT-DISC", *BF16))
    record = json.loads((tmp_path / "audit" / "report.json").read_text())["empirical"]["audit"]
    assert record["dtype"] == "bfloat16" and record["device"] == "cpu"
    _ok(invoke("trace", "index", "--data", held_out, "--anchor", bf16_chain / "anchor", "--out", tmp_path / "index"))
    traced = invoke("trace", "output", bf16_chain / "merged", "--index", tmp_path / "index",
                    "--text", "OUTPATIENT PROGRESS NOTE", "--json", *BF16)
    assert json.loads(_ok(traced) and traced.stdout)["experts"] == ["public", "clinical", "finance"]


def test_weights_are_read_straight_into_the_requested_dtype(bf16_chain):
    from flexaudit.moe.checkpoint import load_flexolmo

    for dtype in (torch.float32, torch.bfloat16):
        model = load_flexolmo(bf16_chain / "merged", dtype=dtype)
        assert {p.dtype for p in model.parameters()} == {dtype}
    assert {p.dtype for p in load_flexolmo(bf16_chain / "merged").parameters()} == {torch.bfloat16}  # as stored


def test_bfloat16_and_float32_audits_agree_within_the_bootstrap_interval(tiny_anchor, clinical_expert, tmp_path):
    from flexaudit.workflows import AuditOptions, run_audit

    options = AuditOptions(max_documents=60, attacks=("FA-MIA-LOSS", "FA-MIA-MINK", "FA-MIA-REF", "FA-MIA-ZLIB"))
    runs = {dtype: run_audit(clinical_expert, anchor_dir=tiny_anchor, out=tmp_path / dtype, options=options,
                             placement=Placement.of("cpu", dtype)).report
            for dtype in ("float32", "bfloat16")}
    attacks = runs["float32"]["empirical"]["membership"]["attacks"]
    assert set(attacks) == set(options.attacks)
    for attack, pair in attacks.items():
        exact = pair["target"]
        low = runs["bfloat16"]["empirical"]["membership"]["attacks"][attack]["target"]
        lo, hi = exact["auc_ci"]["low"], exact["auc_ci"]["high"]
        assert lo <= low["auc"] <= hi, (attack, exact["auc"], low["auc"], (lo, hi))


def test_unusable_devices_and_dtypes_are_one_line(tiny_anchor, tmp_path):
    (tmp_path / "x.txt").write_text("held-out text")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no usable CUDA GPU"):
            resolve_device("cuda")
        result = invoke("eval", tiny_anchor, "--data", f"x={tmp_path / 'x.txt'}", "--device", "cuda:1")
        assert result.exit_code == 2 and "CUDA" in one_error_line(result)
    result = invoke("generate", tiny_anchor, "--prompt", "hi", "--device", "cpu", "--dtype", "float16")
    assert result.exit_code == 2 and "bfloat16" in one_error_line(result)
    result = invoke("generate", tiny_anchor, "--prompt", "hi", "--device", "tpu")
    assert result.exit_code == 2 and "unknown device" in one_error_line(result)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_sharded_checkpoints_are_written_and_read_back(tiny_anchor, tmp_path):
    from transformers import AutoModelForCausalLM

    from flexaudit.moe.anchor import load_anchor
    from flexaudit.moe.checkpoint import INDEX, load_flexolmo, write_hf_checkpoint

    model = load_anchor(tiny_anchor).model
    write_hf_checkpoint(tmp_path / "sharded", model, tokenizer_from=tiny_anchor, max_shard_bytes=40_000)
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "sharded" / INDEX).is_file()
    ids = torch.randint(2, 400, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = load_flexolmo(tmp_path / "sharded")(ids)
        theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded", local_files_only=True)(ids).logits
    assert torch.equal(ours, model(ids)) and (ours - theirs).abs().max().item() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_anchor_gives_the_cpu_logits(tiny_anchor):
    from flexaudit.moe.checkpoint import load_flexolmo

    ids = torch.randint(2, 400, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = load_flexolmo(tiny_anchor)(ids)
        gpu32 = load_flexolmo(tiny_anchor, device="cuda")(ids.cuda()).cpu()
        gpu16 = load_flexolmo(tiny_anchor, device="cuda", dtype=torch.bfloat16)(ids.cuda()).float().cpu()
    assert (cpu - gpu32).abs().max().item() < 1e-3
    assert (cpu - gpu16).abs().max().item() < 0.5
