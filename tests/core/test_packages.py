"""Expert packages and merging: integrity checks refuse every kind of bad package with exit code 3."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from flexaudit.errors import InputError, IntegrityError
from flexaudit.moe.anchor import load_anchor
from flexaudit.moe.checkpoint import load_flexolmo
from flexaudit.moe.expert import load_package
from flexaudit.moe.merge import merge, open_model


def _copy(src, tmp_path, name="pkg"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_manifest_describes_the_package_without_text(clinical_expert, tiny_anchor, corpus_dir):
    manifest = json.loads((clinical_expert / "manifest.json").read_text())
    assert sorted(p.name for p in clinical_expert.iterdir()) == ["expert.safetensors", "manifest.json"]
    assert manifest["anchor"]["root_digest"] == load_anchor(tiny_anchor).root_digest
    assert manifest["privacy"]["guarantee"] == "none"
    assert manifest["training"]["frozen_tensors_verified_identical"] > 0
    assert manifest["split"]["members"]["count"] + manifest["split"]["holdout"]["count"] == manifest["data"]["documents"]
    raw = (clinical_expert / "manifest.json").read_text()
    for line in (corpus_dir / "clinical.jsonl").read_text().splitlines()[:20]:
        record = json.loads(line)
        assert record["text"][:40] not in raw
        assert all(item["value"] not in raw for item in record["pii"])
    names = {t["name"] for t in manifest["tensors"]}
    assert names == set(load_file(clinical_expert / "expert.safetensors"))
    assert not any("self_attn" in n or "embed" in n for n in names)  # only the expert is shared


def test_owner_only_files_stay_outside_the_package(clinical_expert):
    local = clinical_expert.with_name(clinical_expert.name + ".local")
    assert (local / "holdout.jsonl").is_file() and (local / "checkpoints").is_dir()


def test_tampered_weights_are_refused(clinical_expert, tmp_path, tiny_anchor):
    pkg = _copy(clinical_expert, tmp_path)
    tensors = load_file(pkg / "expert.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(pkg / "expert.safetensors"))
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        load_package(pkg, anchor=load_anchor(tiny_anchor))


def test_pickle_file_in_package_is_refused(clinical_expert, tmp_path):
    pkg = _copy(clinical_expert, tmp_path)
    (pkg / "extra.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(IntegrityError, match="pickle"):
        load_package(pkg)


def _rewrite(pkg, tensors):
    """Write new tensors *and* a consistent manifest, as a careless or malicious owner could."""
    from flexaudit.digest import file_digests, root_digest_of

    save_file(tensors, str(pkg / "expert.safetensors"))
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["tensors"] = [{"name": n, "shape": list(t.shape), "dtype": "float32"} for n, t in sorted(tensors.items())]
    manifest["files"] = file_digests(pkg, exclude=["manifest.json"])
    manifest["content_root_digest"] = root_digest_of(manifest["files"])
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def test_wrong_shapes_and_nonfinite_values_are_refused(clinical_expert, tmp_path, tiny_anchor):
    anchor = load_anchor(tiny_anchor)
    pkg = _copy(clinical_expert, tmp_path, "shapes")
    tensors = load_file(pkg / "expert.safetensors")
    tensors["layers.0.router.weight"] = torch.zeros(1, 7)
    _rewrite(pkg, tensors)
    with pytest.raises(IntegrityError, match="shapes"):
        load_package(pkg, anchor=anchor)
    pkg = _copy(clinical_expert, tmp_path, "nan")
    tensors = load_file(pkg / "expert.safetensors")
    tensors["layers.0.router.weight"][0, 0] = float("nan")
    _rewrite(pkg, tensors)
    with pytest.raises(IntegrityError, match="NaN"):
        load_package(pkg, anchor=anchor)


def test_expert_from_another_anchor_is_refused(clinical_expert, tiny_anchor, tmp_path):
    other = _copy(tiny_anchor, tmp_path, "other-anchor")
    info = json.loads((other / "anchor.json").read_text())
    tensors = load_file(other / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.01
    save_file(tensors, str(other / "model.safetensors"), metadata={"format": "pt"})
    from flexaudit.digest import root_digest

    info["root_digest"] = root_digest(other, exclude=["anchor.json"])
    (other / "anchor.json").write_text(json.dumps(info))
    with pytest.raises(IntegrityError, match="another anchor"):
        merge(other, [clinical_expert], tmp_path / "pool")
    assert not (tmp_path / "pool").exists()


def test_modified_anchor_is_refused(tiny_anchor, tmp_path):
    other = _copy(tiny_anchor, tmp_path, "edited")
    (other / "generation_config.json").write_text("{}")
    with pytest.raises(IntegrityError, match="was modified"):
        load_anchor(other)


def test_merged_pool_loads_in_transformers_with_equal_logits(clinical_expert, finance_expert, tiny_anchor, tmp_path):
    pool = merge(tiny_anchor, [clinical_expert, finance_expert], tmp_path / "pool", top_k=2)
    assert pool.expert_names == ["public", "clinical", "finance"]
    assert [e.get("package_root_digest") for e in pool.info["experts"][1:]] == [
        load_package(clinical_expert).root_digest, load_package(finance_expert).root_digest]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "pool", local_files_only=True).eval()
    assert hf.config.expert_names == ["public", "clinical", "finance"]
    ours = load_flexolmo(tmp_path / "pool")
    ids = torch.randint(0, ours.config.vocab_size, (2, 50))
    with torch.no_grad():
        assert torch.allclose(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="already exists"):
        merge(tiny_anchor, [clinical_expert], tmp_path / "pool")


def test_opt_out_by_name(clinical_expert, finance_expert, tiny_anchor, tmp_path):
    merge(tiny_anchor, [clinical_expert, finance_expert], tmp_path / "pool", top_k=3)
    without, names, _ = open_model(tmp_path / "pool", exclude=["finance"])
    assert names == ["public", "clinical"] and without.config.num_experts == 2 and without.config.top_k == 2
    full, _, _ = open_model(tmp_path / "pool")
    full.mask_experts([2])
    ids = torch.randint(0, full.config.vocab_size, (2, 40))
    with torch.no_grad():
        assert torch.allclose(full(ids), without(ids), atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="no expert named"):
        open_model(tmp_path / "pool", exclude=["nobody"])
    with pytest.raises(InputError, match="public expert cannot be excluded"):
        open_model(tmp_path / "pool", exclude=["public"])


def test_duplicate_names_are_refused(clinical_expert, tiny_anchor, tmp_path):
    with pytest.raises(InputError, match="appears twice"):
        merge(tiny_anchor, [clinical_expert, clinical_expert], tmp_path / "pool")
