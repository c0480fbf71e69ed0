"""The audit: every attack against one expert (anchor + expert), and against the anchor alone as baseline.

flexaudit builds the models to attack and hands them to the model-agnostic `attacks` library:
  target     anchor + this expert, as a standard Hugging Face FlexOlmo checkpoint in a temporary directory
  reference  the frozen public anchor, which never saw the owner's data: the calibration model of the
             reference-based attacks, and the baseline every figure is compared with

Members are the expert's training split and non-members its recorded holdout split (the owner's local
copies, `<package>.local/members.jsonl` and `holdout.jsonl`, unless given): the same distribution by
construction, which the blind baseline checks. `run_attacks` returns the results (AuditRun); flexaudit.report
turns them into report.json (counts, rates, intervals and keyed hashes; raw text only with reveal), and
flexaudit.workflows.run_audit does the whole job, tracing extracted text to the owner's documents when asked.

Under torchrun (flexaudit.moe.distributed) every process holds both models and runs this same function; the
attack library splits every scoring and decoding pass over the processes by whole batches of the single-process
plan and gathers each text's result on every process (attacks.sharding), so every process computes the same
results as one process would, and rank 0 alone writes the report (flexaudit.workflows.run_audit).

Unusable texts (one token, no extraction window, ...) are skipped by the attack library and counted in each
result (`n_skipped`, `skipped`); the report shows the counts. An extraction attack left with no usable document,
prompt or canary is recorded as not run, with the reason and the counts, and the audit goes on.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flexaudit.audit.personal_data import NOT_SEARCHED, find_personal_data, inference_trials
from flexaudit.data import load_documents
from flexaudit.data.split import owner_home, owner_key
from flexaudit.errors import InputError, IntegrityError, require_at_least
from flexaudit.moe import distributed
from flexaudit.moe.anchor import load_anchor, local_dir
from flexaudit.moe.device import CPU_FLOAT32, Placement, dtype_name
from flexaudit.moe.expert import load_package
from flexaudit.moe.merge import export_for_transformers, read_pool
from flexaudit.progress import NULL_PROGRESS, Progress

MEMBERSHIP_ATTACKS = ("FA-MIA-LOSS", "FA-MIA-ZLIB", "FA-MIA-MINK", "FA-MIA-MINKPP", "FA-MIA-REF", "FA-MIA-RMIA")
EXTRACTION_ATTACKS = ("FA-EXT-DISC", "FA-EXT-SAMPLED", "FA-EXT-PROB", "FA-EXT-CANARY", "FA-EXT-PII", "FA-EXT-PII-INF")
MIN_PERSONAL_ITEMS = 10  # below this, text without personal data (e.g. code): the personal-data attacks are not run


@dataclass(frozen=True)
class AuditOptions:
    max_documents: int = 400  # members and as many non-members, sampled deterministically
    extraction_documents: int = 100  # members attacked by each extraction attack
    prefix_len: int = 32
    suffix_len: int = 32
    sampled_window: int | None = None  # tokens incl. the prefix; None: the anchor's context, at most 128
    samples_per_prefix: int = 10
    pii_prompts: int = 100
    pii_trials: int = 100  # personal-data inference trials, at most (each candidate one short text to score)
    pii_candidates: int = 9  # other values per inference trial (chance 1 in 10 where the non-members have 9)
    # FA-EXT-CANARY ranks each canary's secret among this many sampled secrets, each scored as a whole canary text:
    # the attack's cost (24 canaries score 24,000 texts per model at 1,000); exposure is censored at log2(n + 1)
    canary_references: int = 1000
    attacks: tuple[str, ...] | None = None  # None: every attack that can run
    batch_size: int = 64  # text windows per forward pass, at most (batch_tokens bounds the memory)
    batch_tokens: int = 16_384  # padded tokens per forward pass, at most; halved on out-of-memory
    seed: int = 0
    reveal: bool = False
    policy: Path | None = None
    trace_index: Path | None = None  # the owner's trace index: extracted samples are traced to documents
    trace_min_match: float = 0.5  # discoverable samples matching at least this share of their suffix are traced
    long_texts: str = "window"  # texts longer than the context: score every token in sliding windows, or "truncate"
    # Opt-out verification: attack this merged pool (with these experts switched off) instead of anchor + expert,
    # still with the expert's own members and non-members.
    model: Path | None = None
    exclude: tuple[str, ...] = ()
    # The extraction table (flexaudit.audit.comparison), beside anchor and anchor + expert: the owner's dense
    # baseline, and the other experts of the pool this expert joins (() for a pool of the anchor alone).
    dense_baseline: Path | None = None
    pool_experts: tuple[Path, ...] | None = None

    def __post_init__(self) -> None:
        """Refuse counts no audit could use, before anything is loaded (flags of `flexaudit audit` by their names)."""
        require_at_least(self, {"max_documents": 1, "extraction_documents": 1, "canary_references": 1,
                                "batch_tokens": 1, "prefix_len": 1, "suffix_len": 1, "samples_per_prefix": 1,
                                "pii_prompts": 0, "pii_trials": 0, "pii_candidates": 1, "batch_size": 1},
                         flags=("max_documents", "extraction_documents", "canary_references", "batch_tokens"))
        if self.sampled_window is not None and self.sampled_window <= self.prefix_len:
            raise InputError(f"AuditOptions.sampled_window ({self.sampled_window} tokens) must be longer than the "
                             f"prefix ({self.prefix_len})")
        if not 0 < self.trace_min_match <= 1:
            raise InputError(f"AuditOptions.trace_min_match must be in (0, 1], got {self.trace_min_match}")


class ExtractionTracer(Protocol):
    """Traces what the discoverable attack extracted back to the owner's documents (flexaudit.trace.evidence
    implements it over the owner's index); returns the report's `trace_evidence` block."""

    def __call__(self, lm: Any, tokenizer: Any, texts: list[str], discoverable: Any, *, prefix: int,
                 suffix: int) -> dict: ...


@dataclass
class AuditRun:
    """Every attack's results on one expert, and how the audit ran: what report.json is built from
    (flexaudit.report.build_report; flexaudit.workflows.run_audit does both)."""

    package: Any  # the verified ExpertPackage
    anchor_digest: str
    anchor_path: Path
    membership: dict  # {"target": MembershipResults, "anchor": MembershipResults}
    extraction: dict[str, list]  # {"target": [...], "anchor": [...]}, one result per extraction attack
    hygiene: Any
    epsilon_lower_bounds: list[dict]
    record: dict  # the report's empirical.audit block: seed, sources, counts, timings, target
    data: dict  # additions to the report's data section
    seconds: dict[str, float] = field(default_factory=dict)
    comparison: dict | None = None  # the extraction table (flexaudit.audit.comparison), when asked for


def _texts(path: Path) -> list[str]:
    # Distinct texts only: data with repeated records (copies share a side of the split) would otherwise put
    # one copy in a cross-validation fold and its twin in another, and the blind baseline (and every
    # membership figure) would count the same text several times.
    return list(dict.fromkeys(d.text for d in load_documents(path)))


def _sample(texts: list[str], n: int, seed: int) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    return random.Random(seed).sample(texts, n)


def _pii_prompts(members: list[str], limit: int, seed: int) -> tuple[list[dict], list[str], dict[str, int]]:
    """Personal-data items of the training texts, and prompts that end right before one of them (the
    realistic query: the context that preceded the value in a record)."""
    items, prompts, categories = {}, [], {}
    for text in members:
        for f in find_personal_data(text):
            items[(f.category, f.value)] = None
            categories[f.category] = categories.get(f.category, 0) + 1
            prompt = f.context(text)
            if prompt is not None:
                prompts.append(prompt)
    chosen = _sample(prompts, limit, seed)
    return [{"category": c, "value": v} for c, v in items], chosen, categories


def _pii_new_tokens(tokenizer, items: list[dict], context: int) -> int:
    """Tokens each personal-data prompt may generate: at least 32, and room for the longest item's value plus
    4 (it may tokenise differently after its prompt), within half the context (the prompt keeps the rest). A
    budget shorter than a value can never reproduce it: measured on the demo's careless owner (a 1,024-token
    vocabulary spells an IBAN in 22-24 tokens, a card number in 16-19), every occurrence prompted, its dense
    fine-tune leaked 3 of 75 items with 16 new tokens and 10 with 32 (every IBAN among them)."""
    longest = max((len(tokenizer(it["value"], add_special_tokens=False)["input_ids"]) for it in items), default=0)
    return min(context // 2, max(32, longest + 4))


def _last_tokens(tokenizer, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= n else tokenizer.decode(ids[-n:])


def _target(package, anchor, options: AuditOptions) -> tuple[Path, dict]:
    """The model under attack: anchor + the expert (the default), or a merged pool for opt-out verification;
    and the report's record of it."""
    if options.model is None:
        if options.exclude:
            raise InputError("--exclude needs --model: the merged pool to switch experts off in")
        return package.directory, {"model": f"anchor + {package.name}", "excluded": []}
    pool = read_pool(Path(options.model))
    if pool is None:
        raise InputError(f"{options.model} is not a merged pool (no flexaudit.json): build one with `flexaudit merge`")
    if pool.info["anchor"]["root_digest"] != anchor.root_digest:
        raise IntegrityError(f"the merged pool {options.model} was built on another anchor than {anchor.directory}: "
                             "audit it with the anchor it was merged on")
    name = "merged pool" + (f" without {', '.join(options.exclude)}" if options.exclude else "")
    return Path(options.model), {"model": name, "excluded": list(options.exclude),
                                 "merged_pool_digest": pool.info.get("weights_root_digest") or ""}


def _selected(options: AuditOptions, attack_id: str) -> bool:
    return options.attacks is None or attack_id in options.attacks


def _attempt(attack_id: str, attack, *args, **kwargs):
    """`attack(*args, **kwargs)`; or, when none of its documents, prompts or canaries was usable, a not-run
    record that says why and carries the counts (the report shows them; the rest of the audit goes on)."""
    import attacks

    try:
        return attack(*args, **kwargs)
    except attacks.NothingUsable as exc:
        return {"attack_id": attack_id, "status": "not_run", "reason": exc.message, "n_skipped": exc.n_skipped,
                "skipped": exc.skipped}


def run_attacks(
    expert_dir: Path,
    *,
    anchor_dir: Path,
    members: Path | None = None,
    nonmembers: Path | None = None,
    options: AuditOptions = AuditOptions(),
    home: Path | None = None,
    tracer: ExtractionTracer | None = None,
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
) -> AuditRun:
    """Run every selected attack on anchor + the expert (or a merged pool, `options.model`) and on the anchor
    alone, over the expert's members and non-members, with both models on `placement`. Under torchrun every
    rank calls this and gets the same AuditRun (the work is split; only rank 0 shows progress). Raises
    InputError (missing split files, unknown attack, an imported expert without --members/--nonmembers) or
    IntegrityError (package or pool not of this anchor)."""
    import attacks

    world = distributed.current()
    progress = world.progress(progress)
    shard = attacks.Shard.of_process_group() if world.distributed else None

    unknown = [a for a in (options.attacks or ()) if a not in MEMBERSHIP_ATTACKS + EXTRACTION_ATTACKS + ("FA-MIA-LIRA",)]
    if unknown:
        raise InputError(f"unknown attack {unknown[0]!r}: choose from {', '.join(MEMBERSHIP_ATTACKS + EXTRACTION_ATTACKS)}")
    compared = options.dense_baseline is not None or options.pool_experts is not None
    if compared and options.model is not None:
        raise InputError("the extraction table compares models with anchor + expert: drop --model (opt-out "
                         "verification) or the table's --dense-baseline and --pool-registry")
    began = time.perf_counter()
    seconds: dict[str, float] = {}
    anchor = load_anchor(anchor_dir, weights=False)
    package = load_package(expert_dir, anchor=anchor)
    local = local_dir(Path(expert_dir))
    if (members is None or nonmembers is None) and package.manifest.get("split", {}).get("recorded") is False:
        raise InputError(f"expert {package.name!r} was imported ({package.manifest.get('source', {}).get('from', 'from another tool')}), "
                         "so no training split was recorded: pass --members (texts it was trained on) and --nonmembers "
                         "(texts from the same source it never saw)")
    members = members or local / "members.jsonl"
    nonmembers = nonmembers or local / "holdout.jsonl"
    for path, what in ((members, "members (the training split)"), (nonmembers, "non-members (the holdout split)")):
        if not Path(path).exists():
            raise InputError(f"{what} not found at {path}: run the audit where the expert was trained, or pass "
                             f"--members/--nonmembers")
    key = owner_key(home or owner_home())
    member_texts = _sample(_texts(members), options.max_documents, options.seed)
    nonmember_texts = _sample(_texts(nonmembers), options.max_documents, options.seed + 1)
    texts = member_texts + nonmember_texts
    labels = [True] * len(member_texts) + [False] * len(nonmember_texts)

    target_path, target_record = _target(package, anchor, options)
    with export_for_transformers(target_path, anchor_dir=anchor.directory, exclude=list(options.exclude)) as target_dir:
        target = attacks.load_causal_lm(target_dir, name=target_record["model"], device=placement.device,
                                        dtype=placement.dtype, shard=shard)
        reference = attacks.load_causal_lm(anchor.directory, name="anchor", device=placement.device,
                                           dtype=placement.dtype, shard=shard)
        context = anchor.config.max_seq_len

        t = time.perf_counter()
        scoring = dict(batch_size=options.batch_size, batch_tokens=options.batch_tokens, max_length=context,
                       long_texts=options.long_texts, progress=progress)
        target_cache = attacks.score_texts(target, texts, **scoring)
        reference_cache = attacks.score_texts(reference, texts, **scoring)
        chosen = [a for a in MEMBERSHIP_ATTACKS if _selected(options, a)]
        membership = {
            "target": attacks.run_membership(target_cache, reference_cache, is_member=labels, attacks=chosen, seed=options.seed),
            # The anchor is its own reference: REF is then exactly at chance, and offline RMIA (whose marginal
            # is not the reference's own likelihood) measures what it would say about a model that saw nothing.
            "anchor": attacks.run_membership(reference_cache, reference_cache, is_member=labels, attacks=chosen,
                                             seed=options.seed),
        }
        seconds["membership"] = time.perf_counter() - t

        t = time.perf_counter()
        extraction: dict[str, list] = {"target": [], "anchor": []}
        attacked = _sample(member_texts, options.extraction_documents, options.seed + 2)
        window = options.sampled_window or min(context, 128)
        prefix = min(options.prefix_len, context // 2)
        suffix = min(options.suffix_len, context - prefix)
        canary_file = local / "canaries.json"
        canaries = []
        if canary_file.is_file():
            canaries = [attacks.Canary.from_dict(c) for c in json.loads(canary_file.read_text())["canaries"]]
        items, prompts, categories = _pii_prompts(member_texts, options.pii_prompts, options.seed)
        pii_new_tokens = _pii_new_tokens(anchor.tokenizer, items, context)
        prompts = [_last_tokens(anchor.tokenizer, p, context - pii_new_tokens) for p in prompts]
        trials = [t | {"prompt": _last_tokens(anchor.tokenizer, t["prompt"], context - pii_new_tokens)} for t in
                  inference_trials(member_texts, nonmember_texts, limit=options.pii_trials,
                                   candidates=options.pii_candidates, seed=options.seed)
                  ] if _selected(options, "FA-EXT-PII-INF") else []
        leak = len(items) >= MIN_PERSONAL_ITEMS and bool(prompts)
        infer = len(trials) >= MIN_PERSONAL_ITEMS
        for side, lm in (("target", target), ("anchor", reference)):
            runs = extraction[side]
            if _selected(options, "FA-EXT-DISC"):
                runs.append(_attempt("FA-EXT-DISC", attacks.discoverable_extraction, lm, attacked, prefix_len=prefix,
                                     suffix_len=suffix, seed=options.seed, reveal=options.reveal, progress=progress))
            if _selected(options, "FA-EXT-SAMPLED"):
                runs.append(_attempt("FA-EXT-SAMPLED", attacks.sampled_extraction, lm, attacked, prefix_len=prefix,
                                     window_len=window, n_samples=options.samples_per_prefix, seed=options.seed,
                                     reveal=options.reveal, progress=progress))
            if _selected(options, "FA-EXT-PROB"):
                runs.append(_attempt("FA-EXT-PROB", attacks.probabilistic_extraction, lm, attacked, prefix_len=prefix,
                                     suffix_len=suffix, seed=options.seed, progress=progress))
            if _selected(options, "FA-EXT-CANARY"):
                if canaries:
                    runs.append(_attempt("FA-EXT-CANARY", attacks.canary_exposure, lm, canaries, seed=options.seed,
                                         n_reference=options.canary_references, reveal=options.reveal, hash_key=key,
                                         progress=progress))
                elif side == "target":
                    runs.append({"attack_id": "FA-EXT-CANARY", "status": "not_run",
                                 "reason": "the expert was trained without canaries (expert train --canaries N)"})
            if _selected(options, "FA-EXT-PII"):
                if leak:
                    runs.append(_attempt("FA-EXT-PII", attacks.pii_leakage, lm, items, prompts,
                                         max_new_tokens=pii_new_tokens, seed=options.seed, reveal=options.reveal,
                                         hash_key=key, progress=progress))
                elif side == "target":
                    runs.append({"attack_id": "FA-EXT-PII", "status": "not_run",
                                 "reason": f"{len(items)} personal-data items found in the training texts audited, "
                                           f"fewer than {MIN_PERSONAL_ITEMS}: no leakage rate to measure"})
            if _selected(options, "FA-EXT-PII-INF"):
                if infer:
                    runs.append(_attempt("FA-EXT-PII-INF", attacks.pii_inference, lm, trials,
                                         batch_size=options.batch_size, batch_tokens=options.batch_tokens,
                                         reveal=options.reveal, hash_key=key, progress=progress))
                elif side == "target":
                    runs.append({"attack_id": "FA-EXT-PII-INF", "status": "not_run",
                                 "reason": f"{len(trials)} personal-data items of the training texts audited have a "
                                           f"value of the same kind among the non-members, fewer than "
                                           f"{MIN_PERSONAL_ITEMS}: no inference rate to measure"})
        seconds["extraction"] = time.perf_counter() - t
        comparison = None
        if compared:
            from flexaudit.audit.comparison import compare

            t = time.perf_counter()
            comparison = compare(package, anchor, extraction, dense_baseline=options.dense_baseline,
                                 pool_experts=options.pool_experts, attacked=attacked, prefix=prefix, suffix=suffix,
                                 window=window, samples=options.samples_per_prefix, items=items, prompts=prompts,
                                 pii_new_tokens=pii_new_tokens, trials=trials, seed=options.seed, key=key,
                                 attempt=_attempt, placement=placement, shard=shard,
                                 run=[a for a in ("FA-EXT-DISC", "FA-EXT-SAMPLED") if _selected(options, a)]
                                 + (["FA-EXT-PII"] if _selected(options, "FA-EXT-PII") and leak else [])
                                 + (["FA-EXT-PII-INF"] if infer else []), progress=progress)
            seconds["comparison"] = time.perf_counter() - t
        evidence = None
        discoverable = next((r for r in extraction["target"]
                             if isinstance(r, attacks.extraction.DiscoverableResult)), None)
        if tracer is not None and discoverable is not None:
            t = time.perf_counter()
            evidence = tracer(target, anchor.tokenizer, attacked, discoverable, prefix=prefix, suffix=suffix)
            seconds["tracing"] = time.perf_counter() - t

    hygiene = attacks.blind_baseline(member_texts, nonmember_texts, seed=options.seed)
    bounds = []
    strongest = membership["target"].worst_case()
    if strongest is not None:
        bound = attacks.metrics.epsilon_lower_bound_split(strongest.member_scores, strongest.nonmember_scores,
                                                          seed=options.seed)
        bounds.append({**bound.as_dict(), "source": strongest.attack_id})
    seconds["total"] = time.perf_counter() - began
    record = {
        "seed": options.seed,
        "members_source": "the expert's training split" if members == local / "members.jsonl" else "given",
        "nonmembers_source": "the expert's recorded holdout split" if nonmembers == local / "holdout.jsonl" else "given",
        "members": len(member_texts),
        "nonmembers": len(nonmember_texts),
        "extraction_documents": len(attacked),
        "personal_data": {"categories_searched": list(categories) or [], "not_searched": list(NOT_SEARCHED),
                          "items": len(items), "prompts": len(prompts)},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "target": target_record,
        "device": str(placement.device),
        "dtype": dtype_name(placement.dtype),
        "processes": world.size,
        **({"trace_evidence": evidence} if evidence is not None else {}),
    }
    return AuditRun(package=package, anchor_digest=anchor.root_digest, anchor_path=anchor.directory,
                    membership=membership, extraction=extraction, hygiene=hygiene, epsilon_lower_bounds=bounds,
                    record=record, data={"personal_data_categories": categories}, seconds=seconds,
                    comparison=comparison)
