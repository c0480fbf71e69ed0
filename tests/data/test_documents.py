"""Loaders for every supported format, and one clear error line for every kind of bad data file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flexaudit.data import load_documents
from flexaudit.data.split import dataset_fingerprint, split_documents
from flexaudit.errors import InputError


def _rows():
    return [{"id": f"r{i}", "text": f"record number {i} of the test set", "person": f"p{i % 3}"} for i in range(9)]


def test_formats_agree(tmp_path):
    rows = _rows()
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    folder = tmp_path / "txt"
    folder.mkdir()
    for r in rows:
        (folder / f"{r['id']}.txt").write_text(r["text"])
    loaded = {ext: load_documents(tmp_path / f"d.{ext}", subject_field="person") for ext in ("jsonl", "csv", "parquet")}
    loaded["txt"] = [d.__class__(id=d.id.removesuffix(".txt"), text=d.text) for d in load_documents(folder)]
    for ext, docs in loaded.items():
        assert sorted((d.id, d.text) for d in docs) == sorted((r["id"], r["text"]) for r in rows), ext
    assert {d.subject for d in loaded["parquet"]} == {"p0", "p1", "p2"}
    assert all(d.subject is None for d in loaded["txt"])


def test_builtin_pseudo_path():
    docs = load_documents("builtin:finance")
    assert len(docs) > 100 and all(d.subject for d in docs)


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("empty.jsonl", b"", "no non-empty documents"),
        ("latin1.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"), "not valid UTF-8"),
        ("nofield.jsonl", b'{"body": "x"}\n', "missing field 'text'"),
        ("broken.jsonl", b'{"text": "x"\n', "not valid JSON"),
        ("array.jsonl", b'["x"]\n', "JSON object"),
        ("nottext.jsonl", b'{"text": 5}\n', "must be a string"),
        ("latin1.csv", "text\ncaf\xe9\n".encode("latin-1"), "not valid UTF-8"),
        ("nocolumn.csv", b"body\nhello\n", "missing column 'text'"),
        ("bad.parquet", b"not parquet at all", "cannot read"),
        ("data.xlsx", b"whatever", "unsupported data file"),
    ],
)
def test_bad_files_get_one_clear_line(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_documents(path)
    assert fragment in info.value.message
    assert "\n" not in info.value.message
    assert str(path) in info.value.message or name.endswith(".xlsx")


def test_missing_subject_field_is_reported(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(InputError, match="missing field 'person'"):
        load_documents(path, subject_field="person")


def test_missing_path_and_duplicate_ids(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_documents(tmp_path / "nope.jsonl")
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(InputError, match="duplicate document id"):
        load_documents(path)


def test_errors_never_echo_document_text(tmp_path):
    path = tmp_path / "d.jsonl"
    secret = "patient Jane Roe, SSN 123-45-6789"
    path.write_text(json.dumps({"text": secret}) + "\n" + json.dumps({"text": 7}) + "\n")
    with pytest.raises(InputError) as info:
        load_documents(path)
    assert "Jane" not in info.value.message and "123-45" not in info.value.message


def test_split_is_deterministic_and_content_based():
    docs = load_documents("builtin:clinical")
    a = split_documents(docs, seed=0, holdout_fraction=0.1)
    b = split_documents(list(reversed(docs)), seed=0, holdout_fraction=0.1)
    c = split_documents(docs, seed=1, holdout_fraction=0.1)
    assert {d.id for d in a.holdout} == {d.id for d in b.holdout}
    assert {d.id for d in a.holdout} != {d.id for d in c.holdout}
    assert 0.05 < len(a.holdout) / len(docs) < 0.15
    assert not {d.sha256 for d in a.holdout} & {d.sha256 for d in a.members}


def test_split_record_holds_keyed_hashes_only():
    docs = load_documents("builtin:finance")[:50]
    split = split_documents(docs, seed=0, holdout_fraction=0.2)
    key_a, key_b = b"a" * 32, b"b" * 32
    record = split.record(key_a)
    plain = {d.sha256 for d in docs}
    hashes = set(record["members"]["hashes"]) | set(record["holdout"]["hashes"])
    assert len(hashes) == len({d.sha256 for d in docs})
    assert not hashes & plain  # a plain hash would let anyone test a candidate text for membership
    assert set(split.record(key_b)["members"]["hashes"]) != set(record["members"]["hashes"])
    text = json.dumps(record)
    assert all(d.text[:30] not in text for d in docs)
    fp = dataset_fingerprint(docs, key_a)
    assert fp["documents"] == 50 and fp["fingerprint"].startswith("hmac-sha256:")
    assert fp == dataset_fingerprint(list(reversed(docs)), key_a)


def test_tiny_data_still_gets_a_holdout():
    docs = load_documents("builtin:finance")[:3]
    split = split_documents(docs, seed=0, holdout_fraction=0.01)
    assert len(split.holdout) == 1 and len(split.members) == 2
    with pytest.raises(InputError, match="at least two distinct"):
        split_documents(docs[:1], seed=0)
