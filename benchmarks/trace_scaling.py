"""Trace index build time and trace latency against corpus size; prints JSON.

    python benchmarks/trace_scaling.py --sizes 1e6,1e7,5e7 > trace_scaling.json
    python benchmarks/trace_scaling.py --anchor demo-output/anchor --sizes 1e6,1e7    # the demo's tokenizer

The corpora are synthetic records of the built-in sensitive domains (clinical, finance, support), generated
with fresh seeds until the size in tokens is reached, so every document is distinct; each smaller corpus is a
prefix of the larger ones. Without --anchor a tiny anchor (512-token vocabulary) is trained in a few seconds.

Per size: the build (tokenise, suffix array, whole), the index's bytes on disk, the time to open it, and the
latency of tracing (median and 90th percentile over --repeats) for
  member-64 / member-256  excerpts of an indexed document (one long span, found whole)
  template-256            a fresh record from an unused seed (shares the domain's template text: many spans)
  fresh-sentence          fresh random sentences, never indexed (no spans; also reports the longest
                          chance match in tokens, which is what the default --min-tokens must stay above)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from flexaudit.data.builtin import build_domain
from flexaudit.moe.tokenizer import load_tokenizer
from flexaudit.trace import DEFAULT_MIN_TOKENS, build_index, open_index
from flexaudit.trace.spans import encode, maximal_spans, trace_ids

DOMAINS = ("clinical", "finance", "support")
CHUNK = 2000  # records per (domain, seed) build


def write_corpora(root: Path, tokenizer, sizes: list[int]) -> dict[int, dict]:
    """One JSONL per size, each a prefix of the next; returns {size: {path, documents, tokens}}."""
    files = {n: open(root / f"corpus-{n}.jsonl", "w", encoding="utf-8") for n in sizes}
    done, tokens, documents, seed = {}, 0, 0, 1
    while len(done) < len(sizes):
        for domain in DOMAINS:
            records = build_domain(domain, n_documents=CHUNK, seed=seed)
            texts = [r.document().text for r in records]
            for record, ids in zip(records, tokenizer(texts, add_special_tokens=False)["input_ids"]):
                line = json.dumps({"id": f"{record.id}-s{seed}", "text": record.document().text}, ensure_ascii=False) + "\n"
                tokens += len(ids)
                documents += 1
                for n, fh in files.items():
                    if n in done:
                        continue
                    fh.write(line)
                    if tokens >= n:
                        fh.close()
                        done[n] = {"path": root / f"corpus-{n}.jsonl", "documents": documents, "tokens": tokens}
        seed += 1
    return done


def queries(tokenizer, corpus: Path) -> dict[str, list[list[int]]]:
    from faker import Faker

    with open(corpus, encoding="utf-8") as fh:
        member = [json.loads(next(fh))["text"] for _ in range(20)]
    member_ids = [encode(tokenizer, t)[0] for t in member]
    fake = Faker("en_US")
    fake.seed_instance(12345)
    fresh = [encode(tokenizer, " ".join(fake.sentence(nb_words=14) for _ in range(3)))[0][:64] for _ in range(20)]
    templates = [encode(tokenizer, r.document().text)[0][:256] for d in DOMAINS
                 for r in build_domain(d, n_documents=7, seed=10**6)]
    return {
        "member-64": [ids[:64] for ids in member_ids if len(ids) >= 64],
        "member-256": [ids[:256] for ids in member_ids if len(ids) >= 256],
        "template-256": [ids for ids in templates if len(ids) == 256],
        "fresh-sentence": fresh,
    }


def latency(index, tokenizer, batches: dict[str, list[list[int]]], repeats: int) -> dict:
    out = {}
    for name, texts in batches.items():
        times, spans, longest = [], [], []
        for _ in range(repeats):
            for ids in texts:
                chars = [(0, 0)] * len(ids)
                began = time.perf_counter()
                result = trace_ids(index, tokenizer, ids, chars, text=None, min_tokens=DEFAULT_MIN_TOKENS)
                times.append(time.perf_counter() - began)
                spans.append(len(result.spans))
        if name == "fresh-sentence":
            longest = [max((m.end - m.start for m in maximal_spans(index, ids, min_tokens=1)), default=0) for ids in texts]
        times.sort()
        out[name] = {
            "texts": len(texts),
            "tokens_per_text": round(statistics.mean(len(t) for t in texts), 1),
            "median_ms": round(1000 * statistics.median(times), 2),
            "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 2),
            "mean_spans": round(statistics.mean(spans), 2),
            **({"longest_chance_match_tokens": max(longest)} if longest else {}),
        }
    return out


def tiny_anchor(root: Path) -> Path:
    from flexaudit.data.builtin import write_domain
    from flexaudit.moe.anchor import train_anchor

    write_domain("public", root / "public.jsonl", n_documents=300)
    train_anchor([root / "public.jsonl"], root / "anchor", preset="tiny", steps=30)
    return root / "anchor"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,5e7", help="corpus sizes in tokens, comma-separated")
    parser.add_argument("--anchor", type=Path, help="anchor whose tokenizer to use (default: train a tiny one)")
    parser.add_argument("--workdir", type=Path, help="where corpora and indexes go (default: a temporary directory)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="indexer threads (default: the library's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = sorted(int(float(s)) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="trace-scaling-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        anchor = args.anchor or tiny_anchor(root)
        tokenizer = load_tokenizer(anchor)
        corpora = write_corpora(root, tokenizer, sizes)
        generation_s = time.perf_counter() - began
        batches = queries(tokenizer, corpora[sizes[0]]["path"])
        rows = []
        for n in sizes:
            corpus = corpora[n]
            out = root / f"index-{n}"
            t0 = time.perf_counter()
            built = build_index(corpus["path"], anchor, out, threads=args.threads, overwrite=True)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            index = open_index(out)
            open_s = time.perf_counter() - t0
            rows.append({
                "target_tokens": n,
                "documents": built.documents,
                "tokens": built.tokens,
                "build_s": round(build_s, 2),
                "build_detail_s": built.info["build_seconds"],  # tokenise (incl. loading the data), suffix array
                "index_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
                "open_s": round(open_s, 3),
                "trace": latency(index, tokenizer, batches, args.repeats),
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        result = {
            "benchmark": "trace_scaling",
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": __import__("os").cpu_count()},
            "anchor": str(anchor) if args.anchor else "tiny anchor trained here (512-token vocabulary)",
            "vocab_size": len(tokenizer),
            "min_tokens": DEFAULT_MIN_TOKENS,
            "corpus_generation_s": round(generation_s, 1),
            "sizes": rows,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
