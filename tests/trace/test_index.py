"""The owner's trace index: what it records, that it is private and atomic, and that it refuses what it must."""

from __future__ import annotations

import json
import os
import socket
import stat
from importlib.metadata import distribution

import numpy as np
import pytest

from flexaudit.data.split import keyed_hash, owner_key
from flexaudit.digest import text_sha256
from flexaudit.errors import InputError, IntegrityError
from flexaudit.moe.tokenizer import load_tokenizer
from flexaudit.trace import build_index, open_index, trace_texts
from flexaudit.trace.index import DOCUMENTS_FILE, INDEX_FILE, README_FILE

from ..conftest import invoke, one_error_line


def test_index_records_anchor_counts_and_keys(records_index, overfit_anchor, record_list):
    info = json.loads((records_index / INDEX_FILE).read_text())
    anchor = json.loads((overfit_anchor / "anchor.json").read_text())
    tokenizer = load_tokenizer(overfit_anchor)
    assert info["anchor"]["root_digest"] == anchor["root_digest"]
    assert info["documents"]["count"] == len(record_list) and info["documents"]["keys"] == "ids"
    assert info["tokens"] == sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for _, t in record_list)
    assert info["engine"]["token_dtype"] == "u16" and info["private"] is True
    keys = [json.loads(line) for line in (records_index / DOCUMENTS_FILE).read_text().splitlines()]
    key = owner_key()
    assert keys == [{"id": i, "hash": keyed_hash(key, text_sha256(t))} for i, t in record_list]
    readme = (records_index / README_FILE).read_text()
    assert "PRIVATE - DO NOT SHARE" in readme and "never part of an expert package" in readme
    assert stat.S_IMODE(records_index.stat().st_mode) == 0o700  # owner-only
    open_index(records_index, verify=True)  # every digest in index.json holds


def test_hashes_match_the_expert_manifest_split_record(clinical_index, clinical_expert):
    """An index's keyed hashes are the manifest's: a traced document can be looked up as member or holdout."""
    manifest = json.loads((clinical_expert / "manifest.json").read_text())
    split = manifest["split"]
    indexed = {json.loads(line)["hash"] for line in (clinical_index / DOCUMENTS_FILE).read_text().splitlines()}
    assert indexed == set(split["members"]["hashes"]) | set(split["holdout"]["hashes"])


def test_hashes_only_index_names_no_document(tmp_path, records, overfit_anchor, record_list):
    built = build_index(records, overfit_anchor, tmp_path / "index", hashes_only=True)
    assert built.info["documents"]["keys"] == "hashes"
    raw = (tmp_path / "index" / DOCUMENTS_FILE).read_text()
    assert not any(i in raw for i, _ in record_list)
    [result] = trace_texts(tmp_path / "index", load_tokenizer(overfit_anchor), [record_list[1][1]])
    [span] = result.spans
    assert span.documents[0].id is None and span.documents[0].hash == keyed_hash(owner_key(), text_sha256(record_list[1][1]))


def test_failed_build_leaves_nothing(tmp_path, records, overfit_anchor, monkeypatch):
    failing = tmp_path / "rust_indexing"
    failing.write_text("#!/bin/sh\necho 'disk full' >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setattr("flexaudit.trace.index._rust_indexer", lambda: failing)
    out = tmp_path / "out" / "index"
    with pytest.raises(InputError, match="indexer failed at make-part .*disk full"):
        build_index(records, overfit_anchor, out)
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []  # no staging leftovers


def test_damaged_index_is_refused(tmp_path, records, overfit_anchor):
    out = tmp_path / "index"
    build_index(records, overfit_anchor, out)
    table = out / "engine" / "table.0"
    table.write_bytes(table.read_bytes()[:-1])  # the engine maps files unchecked: we must check sizes
    with pytest.raises(IntegrityError, match="damaged"):
        open_index(out)
    build_index(records, overfit_anchor, out, overwrite=True)
    keys = out / DOCUMENTS_FILE
    keys.write_text(keys.read_text().replace("rec-anselm", "rec-anselX"))  # same size, other bytes
    open_index(out)  # sizes alone cannot see it ...
    with pytest.raises(IntegrityError, match="digests"):
        open_index(out, verify=True)  # ... the digests can


def test_index_cli_and_bad_inputs(tmp_path, records, overfit_anchor, clinical_expert, record_list):
    ok = invoke("trace", "index", "--data", records, "--anchor", overfit_anchor, "--out", tmp_path / "idx")
    assert ok.exit_code == 0, ok.output
    assert f"{len(record_list)} documents" in ok.stdout and "never share" in ok.stdout
    as_json = invoke("trace", "index", "--data", records, "--anchor", overfit_anchor, "--out", tmp_path / "idx",
                     "--force", "--json")
    assert json.loads(as_json.stdout)["documents"]["count"] == len(record_list)

    bad_bytes = tmp_path / "latin1.jsonl"
    bad_bytes.write_bytes(b'{"text": "caf\xe9"}\n')
    cases = [
        (("--data", tmp_path / "missing.jsonl", "--anchor", overfit_anchor), "data not found"),
        (("--data", bad_bytes, "--anchor", overfit_anchor), "not valid UTF-8"),
        (("--data", records, "--anchor", tmp_path / "no-anchor"), "anchor directory not found"),
        (("--data", records, "--anchor", overfit_anchor, "--threads", "0"), "--threads must be at least 1, got 0"),
    ]
    for args, fragment in cases:
        result = invoke("trace", "index", *args, "--out", tmp_path / "new")
        assert result.exit_code == 2 and fragment in one_error_line(result)
        assert not (tmp_path / "new").exists()
    exists = invoke("trace", "index", "--data", records, "--anchor", overfit_anchor, "--out", tmp_path / "idx")
    assert exists.exit_code == 2 and "already exists" in one_error_line(exists)
    inside = invoke("trace", "index", "--data", records, "--anchor", overfit_anchor, "--out", clinical_expert / "idx")
    assert inside.exit_code == 2 and "inside an expert package" in one_error_line(inside)
    assert not (clinical_expert / "idx").exists()


def test_engine_and_indexer_come_from_the_package_offline(tmp_path, records, overfit_anchor, record_list, monkeypatch):
    """A clean install has everything: the wheel ships the engine and the indexer binary, and neither building
    nor querying an index opens a network connection."""
    shipped = {str(f) for f in distribution("infini-gram").files}
    assert {"infini_gram/engine.py", "infini_gram/rust_indexing"} <= shipped
    assert any(f.startswith("infini_gram/cpp_engine") and f.endswith(".so") for f in shipped)

    def no_network(*args, **kwargs):
        raise AssertionError("tracing tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    build_index(records, overfit_anchor, tmp_path / "index")
    [result] = trace_texts(tmp_path / "index", load_tokenizer(overfit_anchor), [record_list[0][1]])
    assert result.spans[0].documents[0].id == record_list[0][0]


def test_pointer_to_document_mapping(records_index):
    index = open_index(records_index)
    offsets = np.fromfile(records_index / "engine" / "offset.0", dtype=np.uint64)
    # a pointer at a document's separator, just after it, and at the last byte before the next one
    pointers = np.concatenate([offsets, offsets + 2, np.append(offsets[1:], os.path.getsize(records_index / "engine" / "tokenized.0")) - 2])
    expected = np.tile(np.arange(len(offsets)), 3)
    assert (index.document_of(pointers) == expected).all()
