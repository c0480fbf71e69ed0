"""The extraction table: one owner's member documents attacked in every model that could leak them.

The method's privacy result (Shi et al. 2025, §5.3) compares models on the same training documents: the
extraction attack recovered them 0.7% of the time from the merged model, 1.6% from a dense model fine-tuned
on the same data and 0.1% from the public model. The audit reproduces that table for one owner, on the
documents and settings of its own extraction attacks:

  anchor                     the public model, which never saw the owner's data: the floor
  dense fine-tune            the anchor with every parameter trained on the same members, same schedule
                             (flexaudit.moe.dense): what sharing a conventionally fine-tuned model would leak
  anchor + expert            what the owner shares, alone
  merged pool                the pool this expert joins: the experts already admitted plus this one
  merged pool without it     the same pool with this expert opted out (exactly the pool before it joined)

A pool of this expert alone is anchor + expert, and a pool without any expert is the anchor: those rows repeat
the audit's own results rather than attacking the same weights twice (their `experts` field shows it).

Rows: the paper's sampled attack (FA-EXT-SAMPLED), discoverable extraction (FA-EXT-DISC) and, where the data
holds personal data, personal-data leakage (FA-EXT-PII) and inference (FA-EXT-PII-INF), each a rate with its
Clopper-Pearson interval. The anchor and expert rows are the audit's own results; the other models are attacked
with exactly the same documents, prompts, trials, seeds and settings, and every row records a keyed digest of
the documents its attacks ran on, so a reader can check that all rows measured the same documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from flexaudit.errors import InputError
from flexaudit.moe.anchor import load_anchor
from flexaudit.moe.checkpoint import write_hf_checkpoint
from flexaudit.moe.dense import read_dense_baseline
from flexaudit.moe.device import CPU_FLOAT32, Placement
from flexaudit.moe.expert import compose, load_package
from flexaudit.moe.merge import PUBLIC
from flexaudit.progress import NULL_PROGRESS

ATTACKS = ("FA-EXT-SAMPLED", "FA-EXT-DISC", "FA-EXT-PII", "FA-EXT-PII-INF")
RATE_FIELD = {"FA-EXT-SAMPLED": "extracted", "FA-EXT-DISC": "exact", "FA-EXT-PII": "leaked",
              "FA-EXT-PII-INF": "inferred"}
PERSONAL = ("FA-EXT-PII", "FA-EXT-PII-INF")  # prompts, not documents: no documents digest


@dataclass(frozen=True)
class Compared:
    """One model of the table, as a standard checkpoint directory the attack library can load."""

    label: str
    kind: str  # anchor | dense | expert | pool | opt-out
    directory: Path
    experts: tuple[str, ...]  # expert slots, public first ("public" alone for anchor and dense)
    digest: str | None = None  # root digest of the artifact it came from, where there is one
    same_as: str | None = None  # "anchor" or "expert": the same weights as a model the audit attacked already


@contextlib.contextmanager
def extra_models(package, anchor, *, dense_baseline: Path | None, pool_experts: Sequence[Path] | None,
                 placement: Placement = CPU_FLOAT32) -> Iterator[list[Compared]]:
    """The models beyond anchor and anchor + expert: the dense baseline (if given) and the merged pool with and
    without this expert (if the pool's other experts are given, possibly none). Pools are composed in memory
    exactly as `flexaudit merge` composes them and written to temporary checkpoints for the attack library; a pool
    of this expert alone is anchor + expert (top-k 2 of 2, as the audit composes it) and a pool without any expert
    is the anchor, so those two are neither composed nor written but marked `same_as`."""
    models: list[Compared] = []
    with contextlib.ExitStack() as stack:
        if dense_baseline is not None:
            dense = read_dense_baseline(Path(dense_baseline), expert_root_digest=package.root_digest,
                                        anchor_root_digest=anchor.root_digest)
            models.append(Compared("dense fine-tune", "dense", dense.directory, (PUBLIC,), dense.root_digest))
        if pool_experts is not None:
            others = [load_package(p, anchor=anchor) for p in pool_experts]
            others = [p for p in others if p.root_digest != package.root_digest]
            clash = [p.name for p in others if p.name == package.name]
            if clash:
                raise InputError(f"the pool already holds another expert named {package.name!r}: compare against "
                                 "the pool without it")
            for label, kind, members in (("merged pool", "pool", [*others, package]),
                                         (f"merged pool without {package.name}", "opt-out", others)):
                names = (PUBLIC, *(p.name for p in members))
                if not others:  # the pool of this expert alone, and that pool without it
                    same_as, directory = ("expert", package.directory) if members else ("anchor", anchor.directory)
                    models.append(Compared(label, kind, directory, names, same_as=same_as))
                    continue
                if anchor.model is None:  # the audit checks packages against the anchor without its weights
                    anchor = load_anchor(anchor.directory, placement=placement)
                model = compose(anchor, members)
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="flexaudit-compare-"))
                write_hf_checkpoint(Path(tmp), model, tokenizer_from=anchor.directory,
                                    extra_config={"expert_names": list(names)})
                models.append(Compared(label, kind, Path(tmp), names))
        yield models


def run_comparison_attacks(lm, attacked: list[str], *, prefix: int, suffix: int, window: int, samples: int,
                           items: list[dict], prompts: list[str], pii_new_tokens: int, trials: list[dict], seed: int,
                           key: bytes, run: Sequence[str], attempt: Callable, progress) -> dict[str, Any]:
    """The table's attacks (those in `run`) on one model, with the audit's own settings, each through the audit's
    `attempt` (flexaudit.audit.run: an attack left with nothing usable becomes a not-run record)."""
    import attacks

    out: dict[str, Any] = {}
    if "FA-EXT-DISC" in run:
        out["FA-EXT-DISC"] = attempt("FA-EXT-DISC", attacks.discoverable_extraction, lm, attacked, prefix_len=prefix,
                                      suffix_len=suffix, seed=seed, progress=progress)
    if "FA-EXT-SAMPLED" in run:
        out["FA-EXT-SAMPLED"] = attempt("FA-EXT-SAMPLED", attacks.sampled_extraction, lm, attacked,
                                         prefix_len=prefix, window_len=window, n_samples=samples, seed=seed,
                                         progress=progress)
    if "FA-EXT-PII" in run:
        out["FA-EXT-PII"] = attempt("FA-EXT-PII", attacks.pii_leakage, lm, items, prompts,
                                     max_new_tokens=pii_new_tokens, seed=seed, hash_key=key, progress=progress)
    if "FA-EXT-PII-INF" in run:
        out["FA-EXT-PII-INF"] = attempt("FA-EXT-PII-INF", attacks.pii_inference, lm, trials, hash_key=key,
                                         progress=progress)
    return out


def _as_dict(result: Any) -> dict | None:
    if result is None:
        return None
    return result.as_dict() if hasattr(result, "as_dict") else dict(result)


def documents_digest(result: dict | None, key: bytes) -> str | None:
    """Keyed digest of the documents an extraction result ran on, in order (None where it did not run)."""
    if not result or result.get("status", "ok") != "ok" or not result.get("per_document"):
        return None
    joined = "\n".join(str(d.get("sha256")) for d in result["per_document"])
    return "hmac-sha256:" + hmac.new(key, joined.encode(), hashlib.sha256).hexdigest()


def table_row(model: Compared, results: dict[str, Any], key: bytes) -> dict:
    """One row of the table: each attack's rate and interval, and which documents it measured."""
    row: dict[str, Any] = {"label": model.label, "kind": model.kind, "experts": list(model.experts),
                           "model_digest": model.digest, "rates": {}, "documents_digest": {}}
    for attack_id in ATTACKS:
        r = _as_dict(results.get(attack_id))
        ok = r is not None and r.get("status", "ok") == "ok"
        row["rates"][attack_id] = r[RATE_FIELD[attack_id]] if ok else None
        if attack_id not in PERSONAL:
            row["documents_digest"][attack_id] = documents_digest(r, key) if ok else None
    sampled, disc = _as_dict(results.get("FA-EXT-SAMPLED")), _as_dict(results.get("FA-EXT-DISC"))
    row["mean_best_similarity"] = (sampled or {}).get("mean_best_similarity")
    row["mean_token_match"] = (disc or {}).get("mean_token_match")
    return row


def build_table(rows: list[dict], *, documents: int, prompts: int, items: int, settings: dict,
                trials: int = 0) -> dict:
    """The report's empirical.extraction_comparison block. Raises InputError if two rows measured different
    documents (every row must attack the same members for the comparison to mean anything)."""
    for attack_id in ("FA-EXT-SAMPLED", "FA-EXT-DISC"):
        digests = {r["documents_digest"][attack_id] for r in rows if r["documents_digest"].get(attack_id)}
        if len(digests) > 1:
            raise InputError(f"the extraction table's rows attacked different documents with {attack_id}: "
                             "every model must be attacked on the same members")
    return {"documents": documents, "prompts": prompts, "personal_data_items": items, "inference_trials": trials,
            "settings": settings, "rows": rows}


def compare(package, anchor, extraction: dict[str, list], *, dense_baseline: Path | None,
            pool_experts: Sequence[Path] | None, attacked: list[str], prefix: int, suffix: int, window: int,
            samples: int, items: list[dict], prompts: list[str], pii_new_tokens: int, trials: list[dict],
            run: Sequence[str], seed: int,
            key: bytes, attempt: Callable, placement: Placement = CPU_FLOAT32, shard=None,
            progress=NULL_PROGRESS) -> dict:
    """The table for one audit: the anchor and expert rows from the audit's own extraction results
    (`extraction`: {"target": [...], "anchor": [...]}), the other models attacked here the same way."""
    import attacks

    def by_id(results: list) -> dict[str, Any]:
        return {(_as_dict(r) or {}).get("attack_id"): r for r in results}

    rows = [table_row(Compared("anchor", "anchor", anchor.directory, (PUBLIC,), anchor.root_digest),
                      by_id(extraction["anchor"]), key)]
    own = table_row(Compared(f"anchor + {package.name}", "expert", package.directory, (PUBLIC, package.name),
                             package.root_digest), by_id(extraction["target"]), key)
    audited = {"anchor": by_id(extraction["anchor"]), "expert": by_id(extraction["target"])}
    with extra_models(package, anchor, dense_baseline=dense_baseline, pool_experts=pool_experts,
                      placement=placement) as models:
        for model in models:
            if model.same_as is not None:  # attacked already: the same weights, the same results
                rows.append(table_row(model, audited[model.same_as], key))
                continue
            lm = attacks.load_causal_lm(model.directory, name=model.label, device=placement.device,
                                        dtype=placement.dtype, shard=shard)  # split under torchrun, as the audit's
            results = run_comparison_attacks(lm, attacked, prefix=prefix, suffix=suffix, window=window,
                                             samples=samples, items=items, prompts=prompts,
                                             pii_new_tokens=pii_new_tokens, trials=trials, seed=seed, key=key, run=run,
                                             attempt=attempt, progress=progress)
            rows.append(table_row(model, results, key))
    order = {"anchor": 0, "dense": 1, "expert": 2, "pool": 3, "opt-out": 4}
    rows = sorted([*rows, own], key=lambda r: order[r["kind"]])
    settings = {"prefix_len": prefix, "suffix_len": suffix, "window_len": window, "samples_per_prefix": samples,
                "seed": seed, "pii_new_tokens": pii_new_tokens}
    pii = "FA-EXT-PII" in run
    return build_table(rows, documents=len(attacked), prompts=len(prompts) if pii else 0,
                       items=len(items) if pii else 0, settings=settings,
                       trials=len(trials) if "FA-EXT-PII-INF" in run else 0)
