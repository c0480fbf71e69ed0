"""Experts people already have: pools and owner checkpoints written by other tools, through the whole chain.

The pools here are written by plain transformers (`FlexOlmoForCausalLM.save_pretrained`, sharded) or by another
tool that saves transformers 5's fused in-memory tensors as they are; flexaudit imports the anchor and the
experts, audits one, gates it, admits it to a pool and merges the pool, and the merged model gives the original
pool's logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ..conftest import invoke, one_error_line

pytestmark = pytest.mark.slow

RELAXED_POLICY = """format = "flexaudit-policy/1"
name = "relaxed test policy"
[defaults]
min_samples = 10
on_missing = "skip"
[controls.PRIV-MIA-AUC]
max = 0.95
attacks = ["FA-MIA-LOSS", "FA-MIA-REF"]
"""


def _write_checkpoint(out: Path, *, experts: int, dtype: torch.dtype, layout: str, seed: int) -> Path:
    from transformers import FlexOlmoConfig, FlexOlmoForCausalLM

    from flexaudit.data import load_documents
    from flexaudit.moe.tokenizer import train_tokenizer

    tokenizer = train_tokenizer((d.text for d in load_documents("builtin:public")[:200]), vocab_size=384)
    cfg = FlexOlmoConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_experts=experts, num_experts_per_tok=2,
                         max_position_embeddings=96, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = FlexOlmoForCausalLM(cfg)
    with torch.no_grad():  # distinct experts and router rows, so a mix-up would show in the logits
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.08)
    model = model.to(dtype)
    if layout == "per-expert":
        model.save_pretrained(out, max_shard_size="60KB")  # several shards and an index
    else:  # what a tool that saves the in-memory state dict writes: fused gate_up_proj / down_proj
        from safetensors.torch import save_file

        out.mkdir(parents=True)
        model.config.save_pretrained(out)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    _write_checkpoint(root / "pool", experts=3, dtype=torch.bfloat16, layout="per-expert", seed=1)
    _write_checkpoint(root / "owner", experts=2, dtype=torch.float16, layout="fused", seed=2)
    from flexaudit.data.builtin import build_domain

    records = build_domain("public", n_documents=48, seed=9)
    for name, part in (("members.jsonl", records[:24]), ("nonmembers.jsonl", records[24:])):
        (root / name).write_text("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in part))
    (root / "policy.toml").write_text(RELAXED_POLICY)
    return root


def _logits(directory: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype="auto").eval()
    with torch.no_grad():
        return model(ids).logits.float()


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def _chain(root: Path, source: Path, experts: list[int], tag: str) -> Path:
    """anchor import -> expert import -> audit (bfloat16 on the CPU) -> gate -> pool admit, per expert -> merge."""
    anchor = root / f"{tag}-anchor"
    assert "layout" in _ok(invoke("anchor", "import", source, "--public-expert", 0, "--out", anchor))
    registry = root / f"{tag}-registry"
    _ok(invoke("pool", "init", registry, "--policy", root / "policy.toml", "--anchor", anchor))
    for k in experts:
        package, audit = root / f"{tag}-e{k}", root / f"{tag}-a{k}"
        _ok(invoke("expert", "import", source, "--anchor", anchor, "--expert", k, "--out", package))
        _ok(invoke("audit", package, "--anchor", anchor, "--out", audit, "--members", root / "members.jsonl",
                   "--nonmembers", root / "nonmembers.jsonl", "--max-documents", 24, "--attacks",
                   "FA-MIA-LOSS,FA-MIA-REF", "--device", "cpu", "--dtype", "bfloat16"))
        assert invoke("gate", audit, "--policy", root / "policy.toml").exit_code == 0
        assert "admitted" in _ok(invoke("pool", "admit", registry, package, "--audit", audit))
    merged = root / f"{tag}-merged"
    _ok(invoke("merge", "--anchor", anchor, "--pool", registry, "--out", merged, "--top-k", 2))
    return merged


def test_a_transformers_pool_goes_through_the_whole_chain(sources):
    """3 experts, bfloat16, sharded: experts 2 and 1 imported (in that order), audited, admitted and merged;
    the merged model's logits are the original pool's, exactly (same weights, same dtype)."""
    merged = _chain(sources, sources / "pool", [2, 1], "pool")
    info = json.loads((merged / "flexaudit.json").read_text())
    assert [e["name"] for e in info["experts"]] == ["public", "expert-2", "expert-1"]
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"
    ids = torch.randint(3, 300, (3, 60), generator=torch.Generator().manual_seed(0))
    original, ours = _logits(sources / "pool", ids), _logits(merged, ids)
    assert torch.equal(original, ours)  # routing is a softmax then top-k: invariant to the experts' order
    from flexaudit.moe.checkpoint import load_flexolmo

    with torch.no_grad():
        own = load_flexolmo(merged, dtype=torch.bfloat16)(ids).float()
    assert (own - ours).abs().max().item() <= 0.05  # bfloat16 tolerance stated in the README


def test_an_owner_checkpoint_in_the_fused_layout_goes_through_the_whole_chain(sources):
    merged = _chain(sources, sources / "owner", [1], "owner")
    ids = torch.randint(3, 300, (2, 50), generator=torch.Generator().manual_seed(1))
    assert torch.equal(_logits(sources / "owner", ids), _logits(merged, ids))
    assert json.loads((merged / "config.json").read_text())["dtype"] == "float16"


def test_importing_against_another_anchor_or_a_changed_pool_is_an_integrity_failure(sources, tmp_path):
    anchor = tmp_path / "anchor"
    _ok(invoke("anchor", "import", sources / "pool", "--public-expert", 0, "--out", anchor))
    wrong = invoke("expert", "import", sources / "owner", "--anchor", anchor, "--expert", 1, "--out", tmp_path / "x")
    assert wrong.exit_code == 3 and "differs from the anchor's" in one_error_line(wrong)
    changed = tmp_path / "changed"
    shutil.copytree(sources / "pool", changed)
    from safetensors.torch import load_file, save_file

    index = json.loads((changed / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.self_attn.q_norm.weight"
    shard = changed / index[name]
    tensors = load_file(shard)
    tensors[name] = tensors[name] * 1.01
    save_file(tensors, str(shard), metadata={"format": "pt"})
    result = invoke("expert", "import", changed, "--anchor", anchor, "--expert", 1, "--out", tmp_path / "y")
    assert result.exit_code == 3 and name in one_error_line(result)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_import_refuses_what_it_cannot_do_in_one_line(sources, tmp_path):
    no_slot = invoke("anchor", "import", sources / "pool", "--out", tmp_path / "a")
    assert no_slot.exit_code == 2 and "--public-expert" in one_error_line(no_slot)
    anchor = tmp_path / "anchor"
    _ok(invoke("anchor", "import", sources / "pool", "--public-expert", 0, "--out", anchor))
    public = invoke("expert", "import", sources / "pool", "--anchor", anchor, "--expert", 0, "--out", tmp_path / "p")
    assert public.exit_code == 2 and "public expert" in one_error_line(public)
    missing = invoke("expert", "import", sources / "pool", "--anchor", anchor, "--expert", 7, "--out", tmp_path / "p")
    assert missing.exit_code == 2 and "experts 0..2" in one_error_line(missing)
    _ok(invoke("expert", "import", sources / "pool", "--anchor", anchor, "--expert", 1, "--out", tmp_path / "e1"))
    manifest = json.loads((tmp_path / "e1" / "manifest.json").read_text())
    assert manifest["source"]["expert_index"] == 1 and manifest["source"]["layout"] == "per-expert"
    assert manifest["source"]["root_digest"].startswith("sha256:") and manifest["split"]["recorded"] is False
    assert manifest["privacy"]["guarantee"] == "none"
    assert {t["dtype"] for t in manifest["tensors"]} == {"bfloat16"}  # the anchor's dtype
    audit = invoke("audit", tmp_path / "e1", "--anchor", anchor, "--out", tmp_path / "audit")
    assert audit.exit_code == 2 and "--members" in one_error_line(audit)
    assert not (tmp_path / "audit").exists()
