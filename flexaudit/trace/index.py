"""The owner's trace index: its own corpus, tokenised with the anchor's tokenizer, in an infini-gram index.

An index directory holds the owner's whole corpus in tokenised form, so it is private by construction: it is
built on the owner's machine, stays there, and is never part of an expert package, a pool or an audit.

Layout of INDEX_DIR (created atomically, mode 0700):
    README.txt        says what this is and that it must never leave the owner
    index.json        manifest: anchor root digest, tokenizer fingerprint, counts, settings, file digests
    documents.jsonl   one line per document in index order: {"id": ..., "hash": ...}, or {"hash": ...} only
                      when the owner asked for hashes only. The hash is HMAC-SHA256 under the owner's key of
                      the document's SHA-256, exactly as an expert manifest's member/holdout record lists it.
    engine/           infini-gram "v4" files, read by `infini_gram.engine.InfiniGramEngine`:
                        tokenized.0  per document: a separator token (all bits set) then its token ids
                        offset.0     u64 byte offset of each document's separator in tokenized.0
                        table.0      the suffix array, built by the package's `rust_indexing` binary

Why the first two engine files are written here rather than by `infini_gram.indexing`: that script tokenises
JSONL with one of three hub tokenizers (GPT-2, Llama-2, OLMo) fetched at run time, while we need the anchor's
own local tokenizer and every document format flexaudit reads. The suffix array comes from the package's own
`rust_indexing` binary, run through the same three steps (make-part, merge, concat) as
`infini_gram.indexing.build_sa`; that function is not called directly because it prints to stdout, changes the
process's working directory, builds shell command lines from paths, and calls exit() when a step fails.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexaudit import __version__
from flexaudit.data import load_documents
from flexaudit.data.split import dataset_fingerprint, keyed_hash, owner_key
from flexaudit.digest import file_digests, text_sha256
from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json, atomic_write_text, canonical_json, staged_directory
from flexaudit.moe.checkpoint import read_json
from flexaudit.moe.tokenizer import load_tokenizer
from flexaudit.progress import NULL_PROGRESS, Progress

INDEX_FORMAT = "flexaudit-trace-index/1"
INDEX_FILE = "index.json"
DOCUMENTS_FILE = "documents.jsonl"
README_FILE = "README.txt"
ENGINE_DIR = "engine"
ENGINE_FILES = ("tokenized.0", "offset.0", "table.0")
ENGINE_VERSION = 4  # infini-gram's forward (non-reversed) index layout
# Files that mark a directory as a flexaudit artifact that gets shared; an index is never written inside one.
SHARED_ARTIFACTS = {"manifest.json": "an expert package", "anchor.json": "an anchor", "flexaudit.json": "a merged pool",
                    "report.json": "an audit directory", "pool.db": "a pool registry"}
_BATCH_DOCUMENTS = 1024
_HACK_BYTES = 100_000  # overlap between suffix-array parts; infini_gram.indexing's HACK
_SINGLE_PART_BYTES = 1 << 24  # below this a single make-part job is fastest

README = """\
PRIVATE - DO NOT SHARE - flexaudit trace index

This directory is a full-text search index of {documents:,} of your own documents ({tokens:,} tokens),
built by `flexaudit trace index` with the tokenizer of anchor {anchor}.
The files under engine/ hold the complete text of every indexed document in tokenised form: anyone who has
this directory and the (public) anchor tokenizer can read all of it.

Keep it on the machine where the data lives. It is never part of an expert package, a merged pool or an
audit directory; do not copy it into one, onto a shared drive, or to another organisation.
`flexaudit trace MODEL_DIR --index {name} --text TEXT` uses it to find which of your documents a model's
output repeats. Delete it when you no longer need it: `flexaudit trace index` rebuilds it from the data.
"""


# --- identity of a tokenizer ------------------------------------------------------------------------------

def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 over what decides token ids: the model type, the vocabulary (added tokens included) and the BPE
    merges. Unlike a file digest it ignores JSON formatting, so the copy of the anchor's tokenizer inside a
    merged pool or any checkpoint has the same fingerprint as the anchor's own."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError("tracing needs a fast (tokenizers-library) tokenizer; this checkpoint's tokenizer is not one")
    model = json.loads(backend.to_str()).get("model", {})
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]
    identity = {"type": model.get("type"), "vocab": sorted(tokenizer.get_vocab().items()), "merges": merges}
    return "sha256:" + text_sha256(canonical_json(identity))


def token_dtype(vocab_size: int) -> tuple[str, type]:
    """The narrowest infini-gram token width whose all-ones value (the document separator) is not a token id."""
    if vocab_size < 2**16 - 1:
        return "u16", np.uint16
    if vocab_size < 2**32 - 1:
        return "u32", np.uint32
    raise InputError(f"a vocabulary of {vocab_size:,} tokens is too large for an infini-gram index")


# --- building ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuiltIndex:
    directory: Path
    info: dict

    @property
    def documents(self) -> int:
        return self.info["documents"]["count"]

    @property
    def tokens(self) -> int:
        return self.info["tokens"]


def build_index(
    data: str | os.PathLike,
    anchor_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    hashes_only: bool = False,
    home: Path | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> BuiltIndex:
    """Index the owner's documents at `data` with the anchor's tokenizer into `out` (atomically: a failed build
    leaves nothing). With hashes_only, the index keeps keyed hashes instead of document ids. `home` holds the
    owner's secret key (default $FLEXAUDIT_HOME)."""
    out = Path(out)
    if threads is not None and threads < 1:  # 0 would otherwise mean the default in silence
        raise InputError(f"--threads must be at least 1, got {threads}")
    _refuse_shared_location(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists: choose another --out or pass --force to replace it")
    indexer = _rust_indexer()
    anchor_digest, tokenizer = _anchor_tokenizer(Path(anchor_dir))
    docs = load_documents(data)
    vocab_size = len(tokenizer)
    dtype_name, dtype = token_dtype(vocab_size)
    key = owner_key(home)
    threads = max(1, threads or min(4, os.cpu_count() or 1))

    with staged_directory(out, replace=overwrite) as tmp:
        os.chmod(tmp, 0o700)  # the index is the owner's data: no one else on this machine reads it
        (tmp / ENGINE_DIR).mkdir()
        began = time.perf_counter()
        tokens = _write_tokens(tmp, docs, tokenizer, dtype, key=key, hashes_only=hashes_only, progress=progress)
        tokenised = time.perf_counter()
        _suffix_array(indexer, tmp / ENGINE_DIR, width=np.dtype(dtype).itemsize, threads=threads, scratch=tmp,
                      progress=progress)
        sorted_at = time.perf_counter()
        info = {
            "format": INDEX_FORMAT,
            "private": True,
            "notice": "owner-only: holds the full text of the indexed documents; never share it (see README.txt)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "anchor": {"root_digest": anchor_digest},
            "tokenizer": {"fingerprint": tokenizer_fingerprint(tokenizer), "vocab_size": vocab_size,
                          "eos_token_id": tokenizer.eos_token_id},
            "documents": {
                "count": len(docs),
                "keys": "hashes" if hashes_only else "ids",
                "hash": "HMAC-SHA256(owner key, SHA-256 of document text), as in expert manifests' split record",
                "fingerprint": dataset_fingerprint(docs, key)["fingerprint"],
            },
            "tokens": tokens,
            "engine": {"package": "infini-gram", "version": _infini_gram_version(), "index_version": ENGINE_VERSION,
                       "token_dtype": dtype_name, "directory": ENGINE_DIR},
            "files": file_digests(tmp),
            "build_seconds": {"tokenise": round(tokenised - began, 3), "suffix_array": round(sorted_at - tokenised, 3)},
            "software": {"flexaudit": __version__},
        }
        atomic_write_text(tmp / README_FILE, README.format(documents=len(docs), tokens=tokens, anchor=anchor_digest,
                                                           name=out.name))
        atomic_write_json(tmp / INDEX_FILE, info)
    return BuiltIndex(directory=out, info=info)


def _write_tokens(root: Path, docs, tokenizer, dtype, *, key: bytes, hashes_only: bool, progress: Progress) -> int:
    """engine/tokenized.0, engine/offset.0 and documents.jsonl, streamed batch by batch; returns the token count
    (separators excluded)."""
    separator = np.array([np.iinfo(dtype).max], dtype=dtype).tobytes()
    tokens = offset = 0
    task = progress.task("tokenise", total=len(docs))
    with open(root / ENGINE_DIR / "tokenized.0", "wb") as ds, open(root / ENGINE_DIR / "offset.0", "wb") as od, \
            open(root / DOCUMENTS_FILE, "w", encoding="utf-8") as names:
        for start in range(0, len(docs), _BATCH_DOCUMENTS):
            batch = docs[start : start + _BATCH_DOCUMENTS]
            for doc, ids in zip(batch, tokenizer([d.text for d in batch], add_special_tokens=False)["input_ids"]):
                body = np.asarray(ids, dtype=dtype).tobytes()
                od.write(np.array([offset], dtype=np.uint64).tobytes())
                ds.write(separator + body)
                offset += len(separator) + len(body)
                tokens += len(ids)
                entry = {"hash": keyed_hash(key, doc.sha256)} if hashes_only else {"id": doc.id, "hash": keyed_hash(key, doc.sha256)}
                names.write(json.dumps(entry, ensure_ascii=False) + "\n")
            task.advance(len(batch), tokens=tokens)
    task.close()
    return tokens


def _refuse_shared_location(out: Path) -> None:
    """Refuse to write an index inside a flexaudit artifact that gets shared (package, anchor, pool, audit)."""
    out = Path(os.path.abspath(out))
    for parent in out.parents:
        for marker, what in SHARED_ARTIFACTS.items():
            path = parent / marker
            if path.is_file() and (parent == out.parent or _is_flexaudit_json(path)):
                raise InputError(
                    f"{out} is inside {what} ({parent}): a trace index holds your documents' text and must stay "
                    "outside anything that is shared; choose another --out"
                )


def _is_flexaudit_json(path: Path) -> bool:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads(path.read_text(encoding="utf-8")).get("format", "")).startswith("flexaudit-")
    return False


def _anchor_tokenizer(anchor_dir: Path):
    """The anchor's verified root digest and its tokenizer. The weights are not loaded: indexing needs only
    the tokenizer, and the digest check covers the tokenizer files."""
    from flexaudit.moe.anchor import verify_anchor

    return verify_anchor(anchor_dir)["root_digest"], load_tokenizer(anchor_dir)


def _infini_gram_version() -> str:
    from importlib.metadata import version

    return version("infini-gram")


def _rust_indexer() -> Path:
    try:
        import infini_gram
    except ImportError:
        raise InputError("tracing needs the infini-gram package (its engine and indexer): pip install 'infini-gram==2.6.*'") from None
    binary = Path(infini_gram.__file__).parent / "rust_indexing"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise InputError(f"the infini-gram indexer {binary} is missing or not executable: reinstall infini-gram")
    return binary


def _available_memory() -> int:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return 4 << 30


def _suffix_array(indexer: Path, engine: Path, *, width: int, threads: int, scratch: Path, progress: Progress) -> None:
    """table.0 for engine/tokenized.0: sort suffixes in parts, merge the parts, concatenate (the package's
    three steps, with its part sizing: as many parallel parts as threads, more batches when memory is short)."""
    data = engine / "tokenized.0"
    size = data.stat().st_size
    ratio = max(1, math.ceil(math.log2(size) / 8))  # bytes per suffix-array pointer
    threads = 1 if size < _SINGLE_PART_BYTES else threads
    parallel = threads
    batches = 1
    while batches * (_available_memory() // 2 // 8) < size:
        batches *= 2
    jobs = batches * parallel
    part = size // jobs
    part += (-part) % width  # parts hold whole tokens
    parts, merged = scratch / ".parts", scratch / ".merged"
    parts.mkdir()
    merged.mkdir()
    common = ["--data-file", str(data), "--ratio", str(ratio), "--token-width", str(width)]
    task = progress.task("suffix array", total=jobs + 2)
    for first in range(0, jobs, parallel):
        running = []
        for i in range(first, min(first + parallel, jobs)):
            start, end = i * part, min((i + 1) * part + _HACK_BYTES, size)
            running.append(_start(indexer, "make-part", *common, "--parts-dir", str(parts),
                                  "--start-byte", str(start), "--end-byte", str(end)))
        for proc in running:
            _finish(proc, "make-part")
            task.advance()
    _finish(_start(indexer, "merge", *common, "--parts-dir", str(parts), "--merged-dir", str(merged),
                   "--num-threads", str(threads), "--hacksize", str(_HACK_BYTES)), "merge")
    task.advance()
    # merge writes fewer pieces than threads for small data; concat must be told how many there are
    pieces = sum(1 for _ in merged.iterdir())
    _finish(_start(indexer, "concat", *common, "--merged-dir", str(merged), "--merged-file", str(engine / "table.0"),
                   "--num-threads", str(pieces)), "concat")
    task.advance()
    task.close()
    for d in (parts, merged):
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    expected = (size // width) * ratio
    if (engine / "table.0").stat().st_size != expected:
        raise InputError(f"the infini-gram indexer wrote a suffix array of the wrong size "
                         f"({(engine / 'table.0').stat().st_size} bytes, expected {expected}): nothing was written")


def _start(indexer: Path, step: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(indexer), step, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen, step: str) -> None:
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else "no message"
        raise InputError(f"the infini-gram indexer failed at {step} (exit {proc.returncode}: {detail}); nothing was written")


# --- opening ----------------------------------------------------------------------------------------------

# InfiniGramEngine sorts a directory's files by whether their *full path* contains one of these words, so an
# index stored under e.g. /srv/notable-cases/ would be misread; such directories are opened via /proc/self/fd.
_ENGINE_WORDS = ("tokenized", "table", "offset", "metadata", "metaoff", "unigram")


class TraceIndex:
    """An opened index: the infini-gram engine plus the document keys. Built with `build_index`."""

    def __init__(self, directory: Path, info: dict, engine):
        self.directory = directory
        self.info = info
        self.engine = engine  # infini_gram.engine.InfiniGramEngine
        files = directory / ENGINE_DIR
        self._offsets = np.fromfile(files / "offset.0", dtype=np.uint64)  # each document's separator, in bytes
        table = np.memmap(files / "table.0", dtype=np.uint8, mode="r")
        self._table = table.reshape(-1, table.size // (self.tokens + self.documents))  # rank -> pointer bytes
        self._keys: list[dict] | None = None

    @property
    def documents(self) -> int:
        return self.info["documents"]["count"]

    @property
    def tokens(self) -> int:
        return self.info["tokens"]

    @property
    def hashes_only(self) -> bool:
        return self.info["documents"]["keys"] == "hashes"

    def check_tokenizer(self, tokenizer) -> None:
        """Refuse a tokenizer other than the one the index was built with: its token ids would mean other text."""
        stated = self.info["tokenizer"]["fingerprint"]
        if tokenizer_fingerprint(tokenizer) != stated:
            raise IntegrityError(
                f"index {self.directory} was built with another tokenizer (anchor {self.info['anchor']['root_digest'][:19]}…, "
                f"tokenizer {stated[:19]}…): rebuild it with `flexaudit trace index --anchor` set to this model's anchor"
            )

    def find(self, ids: list[int]) -> tuple[int, tuple[int, int]]:
        """Occurrences of a token sequence, and the range of suffix-array ranks that holds them."""
        result = self.engine.find(input_ids=ids)
        if "error" in result:  # ids outside the token width, which a checked tokenizer cannot produce
            raise InputError(f"the infini-gram engine refused the query: {result['error']}")
        [segment] = result["segment_by_shard"]
        return result["cnt"], (int(segment[0]), int(segment[1]))

    def pointers(self, first: int, last: int) -> np.ndarray:
        """Byte offsets into the token file of the suffixes ranked [first, last) (little-endian in table.0)."""
        rows = np.asarray(self._table[first:last], dtype=np.uint64)
        return (rows << (np.arange(rows.shape[1], dtype=np.uint64) * np.uint64(8))).sum(axis=1, dtype=np.uint64)

    def document_of(self, pointers: np.ndarray) -> np.ndarray:
        """Document index of each byte pointer into tokenized.0 (as the engine reports matches)."""
        return np.searchsorted(self._offsets, np.asarray(pointers, dtype=np.uint64), side="right").astype(np.int64) - 1

    def key(self, document: int) -> dict:
        """{"id": ..., "hash": ...} (or {"hash": ...} for a hashes-only index) of one document."""
        if self._keys is None:
            with open(self.directory / DOCUMENTS_FILE, encoding="utf-8") as fh:
                self._keys = [json.loads(line) for line in fh]
        return self._keys[document]

    def context(self, pointer: int, length: int, tokens: int) -> tuple[list[int], list[int]]:
        """Up to `tokens` token ids before and after a match of `length` tokens at `pointer` (same document)."""
        doc = self.engine.get_doc_by_ptr_2(s=0, ptr=int(pointer), needle_len=int(length), max_ctx_len=int(tokens))
        ids = doc["token_ids"]
        at = doc["needle_offset"]
        return ids[:at], ids[at + length :]


def open_index(directory: str | os.PathLike, *, verify: bool = False) -> TraceIndex:
    """Open an index built by `build_index`. File sizes are always checked against the manifest (the engine maps
    the files without bounds checks); with verify, every file's SHA-256 is checked too."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"trace index not found: {directory} (build one with `flexaudit trace index`)")
    info = read_json(directory / INDEX_FILE, "index.json (is this a trace index made by `flexaudit trace index`?)")
    if info.get("format") != INDEX_FORMAT:
        raise InputError(f"{directory / INDEX_FILE} has format {info.get('format')!r}, expected {INDEX_FORMAT!r}")
    _check_files(directory, info, verify=verify)
    from infini_gram.engine import InfiniGramEngine

    dtype_name = info["engine"]["token_dtype"]
    with _neutral_path(directory / ENGINE_DIR) as path:
        engine = InfiniGramEngine(
            index_dir=path,
            eos_token_id=int(info["tokenizer"]["eos_token_id"]),
            vocab_size=int(info["tokenizer"]["vocab_size"]),
            version=ENGINE_VERSION,
            token_dtype=dtype_name,
        )
    return TraceIndex(directory, info, engine)


def _check_files(directory: Path, info: dict, *, verify: bool) -> None:
    stated = info.get("files") or {}
    expected = {f"{ENGINE_DIR}/{name}" for name in ENGINE_FILES} | {DOCUMENTS_FILE}
    if not expected <= set(stated):
        raise IntegrityError(f"{directory / INDEX_FILE} does not list the index files: rebuild the index")
    width = {"u16": 2, "u32": 4}.get((info.get("engine") or {}).get("token_dtype"))
    if width is None:
        raise IntegrityError(f"{directory / INDEX_FILE} names no supported token width: rebuild the index")
    sizes = {}
    for rel in sorted(expected):
        path = directory / rel
        if not path.is_file():
            raise IntegrityError(f"trace index {directory} is incomplete ({rel} is missing): rebuild it")
        sizes[rel] = path.stat().st_size
    tokens = sizes[f"{ENGINE_DIR}/tokenized.0"] // width
    docs = info["documents"]["count"]
    consistent = (
        sizes[f"{ENGINE_DIR}/tokenized.0"] % width == 0
        and tokens == info["tokens"] + docs
        and sizes[f"{ENGINE_DIR}/offset.0"] == 8 * docs
        and tokens > 0
        and sizes[f"{ENGINE_DIR}/table.0"] % tokens == 0
    )
    if not consistent:
        raise IntegrityError(f"trace index {directory} is damaged (file sizes do not match index.json): rebuild it")
    if verify:
        if file_digests(directory, exclude=[INDEX_FILE, README_FILE]) != stated:
            raise IntegrityError(f"trace index {directory} does not match its index.json digests: rebuild it")


@contextlib.contextmanager
def _neutral_path(directory: Path):
    path = str(directory.resolve())
    if not any(word in path for word in _ENGINE_WORDS):
        yield path
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        alias = f"/proc/self/fd/{fd}"
        if not os.path.isdir(alias):
            raise InputError(f"cannot open an index under {path}: move it to a path without the words "
                             f"{', '.join(_ENGINE_WORDS)} (the infini-gram engine misreads such paths)")
        yield alias
    finally:
        os.close(fd)
