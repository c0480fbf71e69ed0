"""The demo: the whole main job on built-in data.

  1. write the built-in corpus (public prose, one Python codebase, synthetic clinical notes and bank records, with
     their duplication profile: repeated records, form letters, a few subjects with many records)
  2. train the public anchor on the public prose
  3. each data owner trains an expert on its own domain against the frozen anchor; the clinical owner also
     trains a differentially private expert (epsilon 8) on the same data; a careless owner overfits an expert
     on a few bank records
  4. each owner offering an expert also fine-tunes the whole anchor on the same documents (the dense
     baseline of the extraction table; never shared)
  5. the owners apply to the pool one after another: each expert is audited (membership inference and
     extraction, the anchor beside every figure, and the extraction table: anchor, dense fine-tune, the expert,
     the pool it would join and that pool without it), its report rendered and judged by the shipped policy,
     and the pool admits it only if the audit passes
  6. merge the admitted experts into one Hugging Face FlexOlmo checkpoint, without retraining them
  7. the method's table: held-out perplexity per domain for the anchor, each expert alone (anchor + that
     expert), the merged pool, and the pool with each expert opted out
  8. index.html: the method's table, the extraction table with its figure, each gate decision with its report

Every owner has its own private state (secret key, privacy ledger) under owners/<name>, as separate
organisations would.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from flexaudit.data import load_documents
from flexaudit.data.builtin import write_domain
from flexaudit.errors import FlexauditError, InputError
from flexaudit.fsutil import atomic_write_json, atomic_write_text
from flexaudit.jobs import Jobs
from flexaudit.moe.anchor import PRESETS, load_anchor, local_dir, train_anchor
from flexaudit.moe.device import CPU_FLOAT32, Placement, dtype_name
from flexaudit.moe.evaluate import perplexity
from flexaudit.moe.expert import ExpertOptions, compose, load_package
from flexaudit.moe.merge import merge, open_model
from flexaudit.privacy.expert_training import DPOptions, train_expert
from flexaudit.progress import NULL_PROGRESS, Progress

MARKER = ".flexaudit-demo"
EXPERT_DOMAINS = ("code", "clinical", "finance")
DP_DOMAIN = "clinical"
LEAKY = "finance-leaky"
DP_EXPERT = f"{DP_DOMAIN}-dp"  # shown beside the clinical expert, never offered to the pool
OFFERED = (*EXPERT_DOMAINS, LEAKY)  # the experts their owners offer to the pool, in the order they apply
STEPS = 8


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and choices for one demo run; `quick` is the version the tests run."""

    preset: str
    documents: int  # per domain
    expert_steps: int
    code_steps: int | None = None  # None: expert_steps (an owner trains as long as its domain needs)
    anchor_steps: int | None = None  # None: the preset's
    expert_lr: float = 1e-2
    holdout_fraction: float = 0.1
    dp_steps: int = 100
    dp_batch: int = 32  # expected units per DP step
    dp_lr: float = 5e-3
    eval_documents: int = 50  # held-out documents per domain in the table
    audit_documents: int = 150  # members (and as many non-members) per audit
    audit_extraction: int = 50  # members attacked by each extraction attack (0 of 50: upper bound 0.07)
    audit_samples: int = 3  # samples per prefix in the sampled attack
    audit_pii_prompts: int = 200  # prompts before personal data (about every occurrence in the careless file)
    leaky_documents: int = 60  # records of the careless owner's file (its customers with the most records)
    # 1,000 steps: the expert alone reproduces members at every seed tried (0-3: 14 of 43, 7 of 42, 6 of 37,
    # 13 of 42) and infers their personal data 0.29-0.51 above the anchor's rate (session 20's anchor; session
    # 19's: 12, 7, 5, 8 and 0.30-0.37); at 500 steps (session 18) 10, 6, 0 and 0, and 0.13-0.32 above it (the
    # full demo 8.6% longer: 215 s against 198 s, run after run)
    leaky_steps: int = 1000
    leaky_lr: float = 2e-2
    leaky_holdout: float = 0.3
    leaky_anchor_weight: float = 0.0  # careless: without the pull towards the public expert on public rows
    dense_baselines: bool = True  # the extraction table's dense fine-tune, one per owner that offers an expert
    router_init: str = "hidden-mean"
    router_bias: bool = False
    public_negatives: bool = True
    anchor_weight: float = 1.0
    tune_router: bool = False  # measured on this demo: tuning moved the pool to worse mean perplexity (README)
    top_k: int | None = None  # None: merge's measured default
    policy: str | None = None  # None: the shipped default policy
    seed: int = 0

    def steps_for(self, domain: str) -> int:
        """Steps of the expert of a clean owner's domain (`EXPERT_DOMAINS`)."""
        return self.code_steps if domain == "code" and self.code_steps is not None else self.expert_steps

    @classmethod
    def full(cls) -> "DemoPlan":
        return cls(preset="mini", documents=2000, expert_steps=300)

    @classmethod
    def quick(cls) -> "DemoPlan":
        # A short anchor and shorter experts: an expert learns on what the frozen anchor's attention and embeddings
        # already tell apart. Measured on this demo with the anchor's embeddings drawn from N(0, 1) (session 20,
        # the mini preset's embedding_std): on a 150-step anchor the code expert 2.17x better than it after 50
        # steps, clinical and finance 3.04x and 3.20x after 40 (3.25x and 3.21x after 50); with the earlier
        # N(0, 0.02) embeddings a 250-step anchor and 75 code steps gave 2.08x, 2.63x, 2.47x.
        # The careless owner: 150 steps leave its dense fine-tune clearly above the anchor (sampled 11 of 33,
        # personal data inferred 0.80 [0.70, 0.88] against the anchor's 0.26 [0.17, 0.37]); 120 steps left its
        # sampled rate's interval meeting the anchor's (7 of 33, [0.09, 0.39] against [0, 0.11]), and with the
        # earlier embeddings 100 steps did not (sampled 2 of 33, inferred 0.48 [0.37, 0.60])
        return cls(preset="mini", documents=600, expert_steps=40, code_steps=50, anchor_steps=150, dp_steps=15,
                   dp_batch=16, eval_documents=30, audit_documents=40, audit_extraction=40, audit_samples=2,
                   leaky_steps=150, policy="quick")


@dataclass
class Row:
    label: str
    kind: str  # anchor | expert | pool | opt-out
    perplexity: dict[str, float]


@dataclass
class DemoResult:
    workdir: Path
    plan: DemoPlan
    domains: list[str]
    rows: list[Row]
    artifacts: dict[str, str]
    checks: list[dict]
    privacy: dict = field(default_factory=dict)  # the DP expert beside the non-DP one
    audits: dict = field(default_factory=dict)  # per expert: headline figures, gate decision, pool outcome
    pool: dict = field(default_factory=dict)
    extraction: dict = field(default_factory=dict)  # per offered expert: its report's extraction table
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step of the demo
    job_seconds: dict[str, float] = field(default_factory=dict)  # each owner's training and audit on its own
    machine: dict = field(default_factory=dict)  # threads and the fp32 matmul peak measured at start and end

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)

    def as_dict(self) -> dict:
        return {
            "workdir": str(self.workdir),
            "plan": asdict(self.plan),
            "domains": self.domains,
            "rows": [asdict(r) for r in self.rows],
            "checks": self.checks,
            "privacy": self.privacy,
            "audits": self.audits,
            "pool": self.pool,
            "extraction": self.extraction,
            "artifacts": self.artifacts,
            "seconds": self.seconds,
            "job_seconds": self.job_seconds,
            "machine": self.machine,
        }


def _prepare_workdir(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise InputError(f"{workdir} is a file, not a folder: choose another --workdir")
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise InputError(f"{workdir} is not empty and was not made by the demo: choose another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()
    # A rerun starts a fresh simulation: its owners (keys, ledgers), experts and pool are rebuilt, never reused.
    for stale in ("owners", "experts", "pool", "pool-registry", "audits"):
        if (workdir / stale).exists():
            shutil.rmtree(workdir / stale)


def _criteria(rows: dict[str, Row], domains: list[str], experts: list[str]) -> list[dict]:
    """The method's claims, checked on this run's numbers."""
    anchor, pool = rows["anchor"].perplexity, rows["merged pool"].perplexity
    checks = []
    for d in domains:
        checks.append({"claim": f"merged pool beats the anchor on {d}", "measured": f"{pool[d]:.2f} vs {anchor[d]:.2f}",
                       "passed": pool[d] < anchor[d]})
    for e in experts:
        own = rows[f"anchor + {e}"].perplexity[e]
        checks.append({"claim": f"merged pool within 10% of the {e} expert on {e}",
                       "measured": f"{pool[e]:.2f} vs {own:.2f} ({pool[e] / own - 1:+.1%})", "passed": pool[e] <= 1.10 * own})
    for e in experts:
        without = rows[f"pool without {e}"].perplexity
        rise = without[e] / pool[e] - 1
        checks.append({"claim": f"opting out {e} raises {e} perplexity by at least 20%", "measured": f"{rise:+.1%}",
                       "passed": rise >= 0.20})
        others = {d: without[d] / pool[d] - 1 for d in domains if d != e}
        worst = max(others, key=lambda d: abs(others[d]))
        checks.append({"claim": f"opting out {e} moves every other domain by less than 5%",
                       "measured": f"largest: {worst} {others[worst]:+.1%}", "passed": all(abs(v) < 0.05 for v in others.values())})
    return checks


def _expert_options(plan: DemoPlan, **changes) -> ExpertOptions:
    base = ExpertOptions(steps=plan.expert_steps, lr=plan.expert_lr, seed=plan.seed, router_init=plan.router_init,
                         router_bias=plan.router_bias, holdout_fraction=plan.holdout_fraction,
                         anchor_weight=plan.anchor_weight if plan.public_negatives else 0.0)
    return replace(base, **changes)


def _headline(report: dict) -> dict:
    """The figures of one audit a reader looks at first, the anchor's beside each."""
    from flexaudit.report import metrics

    def pick(m):
        return None if m is None or not m.measured else {"value": m.value, "upper": m.upper, "anchor": m.anchor,
                                                         "samples": m.samples}

    worst_auc = metrics.worst(metrics.membership_auc(report))
    worst_tpr = metrics.worst(metrics.membership_tpr(report, fpr=0.01))
    return {
        "membership_auc": pick(worst_auc) | {"attack": worst_auc.attack_id} if worst_auc and worst_auc.measured else None,
        "tpr_at_1pct_fpr": pick(worst_tpr) | {"attack": worst_tpr.attack_id} if worst_tpr and worst_tpr.measured else None,
        "discoverable_extraction": pick(metrics.extraction_rate(report, "FA-EXT-DISC")),
        "sampled_extraction": pick(metrics.extraction_rate(report, "FA-EXT-SAMPLED")),
        "personal_data_leaked": pick(metrics.extraction_rate(report, "FA-EXT-PII")),
        "personal_data_inferred": pick(metrics.extraction_rate(report, "FA-EXT-PII-INF")),
        "canary_exposure_bits": pick(metrics.canary_exposure(report)),
        "epsilon": report.get("privacy_guarantee", {}).get("epsilon"),
    }


# What the demo's jobs import, once, before the workers start (flexaudit.jobs); measured in a fresh process:
# the Hugging Face FlexOlmo model 1.9-3.0 s, Opacus 1.6-2.6 s (the DP expert's accountants and per-sample
# gradients), matplotlib 0.8 s (the reports' figures), torch 1.1-1.5 s
PRELOAD = ("torch", "opacus", "transformers.models.flex_olmo.modeling_flex_olmo", "matplotlib.pyplot",
           "flexaudit.demo", "flexaudit.privacy.expert_training", "flexaudit.moe.dense", "flexaudit.workflows",
           "flexaudit.report", "flexaudit.gate.engine")


def _machine_peak() -> float:
    from flexaudit.machine import matmul_peak

    return round(matmul_peak(repeats=3) / 1e9, 1)


def run_demo(
    workdir: Path,
    *,
    quick: bool = False,
    plan: DemoPlan | None = None,
    preset: str | None = None,
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
    jobs: int | None = None,
) -> DemoResult:
    """The whole main job on built-in data, every model on `placement`. `preset` replaces the plan's model size
    (the anchor presets). `jobs`: worker processes for the steps that do not depend on each other (the owners'
    training, their audits, the evaluation; see flexaudit.jobs); None: one per core, up to four, on a CPU, and
    1 (everything in this process) on another device."""
    import torch

    plan = plan or (DemoPlan.quick() if quick else DemoPlan.full())
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        plan = replace(plan, preset=preset)
    workers, threads = _workers(jobs, placement)
    workdir = Path(workdir)
    _prepare_workdir(workdir)
    machine = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "device": str(placement.device),
               "dtype": dtype_name(placement.dtype), "workers": workers, "threads_per_worker": threads,
               "matmul_gflops_at_start": _machine_peak()}
    seconds: dict[str, float] = {}
    began = time.perf_counter()

    def lap(name: str, since: float) -> float:
        seconds[name] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    # the workers start (their fork server imports PRELOAD) while this process writes the data and trains the anchor
    with Jobs(workers, threads=threads, progress=progress, preload=PRELOAD) as work:
        # 1. data: one file per domain, as each owner would hold it
        data = workdir / "data"
        domains = ["public", *EXPERT_DOMAINS]
        progress.note(f"[1/{STEPS}] writing the built-in corpus ({plan.documents} documents per domain) to {data}")
        for d in domains:
            write_domain(d, data / f"{d}.jsonl", n_documents=plan.documents, seed=plan.seed)
        public_data = data / "public.jsonl"
        t = lap("data", began)

        # 2. the public anchor, in this process with every thread: nothing else can run yet
        anchor_dir = workdir / "anchor"
        progress.note(f"[2/{STEPS}] training the public anchor ({plan.preset}) on {public_data}")
        train_anchor([public_data], anchor_dir, preset=plan.preset, steps=plan.anchor_steps, seed=plan.seed,
                     router_init=plan.router_init, overwrite=True, placement=placement, progress=progress)
        t = lap("anchor", t)

        # 3-5. one expert per owner, each with its own private state; clinical also with DP; a careless owner;
        # each offering owner's dense baseline (the extraction table's comparison; never shared); and each
        # expert's audit, report and gate decision, started as soon as the models it reads exist
        from flexaudit.pool import init_pool

        experts, dense = _submit_owners(work, workdir, plan, anchor_dir, data, public_data, placement, progress)
        policy_path = _policy_file(workdir, plan)
        registry = workdir / "pool-registry"
        init_pool(registry, policy_path=policy_path, anchor_dir=anchor_dir)

        def submit_audits() -> Callable[..., None]:
            return _submit_audits(work, workdir, plan, anchor_dir, experts, list(OFFERED), dense, policy_path,
                                  placement, waits=lambda name: (name, *([f"dense {name}"] if name in dense else [])))

        # with one worker process or none, a job runs when submitted: the audits then go after the training, so
        # that the Time line's phases stay apart
        audit = submit_audits() if workers > 1 else None
        trained = _trained(work, experts, dense)
        t = lap("experts", t)
        audit = audit or submit_audits()

        # 5. the pool admits, in turn, only experts whose audit passes. The models of step 7 that do not wait
        # for the pool are evaluated when the audits leave a worker free.
        holdout = _holdout_texts(plan, anchor_dir, experts, domains)
        alone = _models_alone(experts)
        progress.note(f"[7/{STEPS}] evaluating the anchor and each expert alone on {len(domains)} held-out "
                      "domains, beside the audits")
        _submit_evaluations(work, alone, anchor_dir, holdout, placement)
        audits, pool_record = _admit(work, workdir, registry, experts, list(OFFERED), audit, progress)
        t = lap("audits", t)

        # 6. merge the admitted experts
        from flexaudit.pool import pool_members

        pool_dir = workdir / "pool"
        progress.note(f"[6/{STEPS}] merging the pool's admitted experts into {pool_dir}")
        pool = merge(anchor_dir, pool_members(registry), pool_dir, top_k=plan.top_k, tune_router=plan.tune_router,
                     public_data=public_data if plan.tune_router else None, overwrite=True, placement=placement,
                     progress=progress)
        pool_record["merged"] = str(pool.directory)
        pool_record["merged_experts"] = pool.expert_names
        t = lap("merge", t)

        # 7. the table: held-out text per domain (the anchor's holdout for public prose)
        in_pool = [d for d in EXPERT_DOMAINS if d in pool.expert_names]
        pooled = _pool_models(pool.directory, in_pool)
        progress.note(f"[7/{STEPS}] evaluating the merged pool and each opt-out on {len(domains)} held-out domains")
        _submit_evaluations(work, pooled, anchor_dir, holdout, placement)
        rows = _table_rows(work, alone | pooled, progress)
        audits.update(work.result(f"audit {DP_EXPERT}"))  # beside the pool's evaluation: nothing waits for it
        audits = {name: audits[name] for name in [*EXPERT_DOMAINS, DP_EXPERT, LEAKY]}
        t = lap("evaluation", t)
    dp_block = trained[DP_EXPERT]["privacy"]
    privacy = {
        "expert": DP_EXPERT, "epsilon": dp_block["epsilon"], "delta": dp_block["delta"], "unit": dp_block["unit"],
        "accountant": dp_block["accountant"]["name"], "cross_check": dp_block["cross_check"]["reference_epsilon"],
        "noise_multiplier": dp_block["noise_multiplier"], "steps": dp_block["steps"],
        "perplexity": rows[f"anchor + {DP_EXPERT}"].perplexity[DP_DOMAIN],
        "non_dp_perplexity": rows[f"anchor + {DP_DOMAIN}"].perplexity[DP_DOMAIN],
        "anchor_perplexity": rows["anchor"].perplexity[DP_DOMAIN],
    }
    extraction = {name: {"table": audits[name].pop("extraction_table"), "report": audits[name]["report"]}
                  for name in OFFERED if audits[name].get("extraction_table")}
    job_seconds = {name: m["seconds"] for name, m in trained.items()}
    for name, a in audits.items():
        a.pop("extraction_table", None)
        job_seconds[f"audit {name}"] = a.pop("seconds")

    result = DemoResult(
        workdir=workdir,
        plan=plan,
        domains=domains,
        rows=list(rows.values()),
        artifacts={
            "page": str(workdir / "index.html"),
            "data": str(data),
            "anchor": str(anchor_dir),
            **{f"expert {d}": str(p) for d, p in experts.items()},
            **{f"owner-only {d}": str(local_dir(p)) for d, p in experts.items()},
            **{f"dense baseline {d}": str(p) for d, p in dense.items()},
            "audits and reports": str(workdir / "audits"),
            "pool registry": str(registry),
            "merged pool": str(pool.directory),
            "results": str(workdir / "results.json"),
        },
        checks=_criteria(rows, domains, in_pool),
        privacy=privacy,
        audits=audits,
        pool=pool_record,
        extraction=extraction,
        seconds=seconds,
        job_seconds=job_seconds,
        machine=machine,
    )
    progress.note(f"[8/{STEPS}] writing {workdir / 'index.html'}")
    seconds["total"] = round(time.perf_counter() - began, 1)
    machine["matmul_gflops_at_end"] = _machine_peak()
    atomic_write_json(workdir / "results.json", result.as_dict())
    write_page(workdir / "index.html", result.as_dict())
    return result


def _careless_file(domain_file: Path, n_records: int) -> list[str]:
    """A careless owner's training file: every record of the customers with the most records, until about
    `n_records` (one department's file, say collections: a few customers' monthly statements and arrears letters,
    re-filed copies included), in the domain file's order. Memorisation follows duplication: this is the data
    an owner should de-duplicate, or not train many passes on."""
    import json
    from collections import Counter

    rows = domain_file.read_text(encoding="utf-8").splitlines()
    subjects = [json.loads(r)["subject"] for r in rows]
    chosen, total = set(), 0
    for subject, count in sorted(Counter(subjects).items(), key=lambda kv: (-kv[1], kv[0])):
        if total >= n_records:
            break
        chosen.add(subject)
        total += count
    return [r for r, s in zip(rows, subjects) if s in chosen]


def _workers(jobs: int | None, placement: Placement) -> tuple[int, int]:
    """(worker processes, torch threads in each): on a CPU one worker per core, up to four (the most steps
    that run side by side), on another device one (every step in this process)."""
    import torch

    cores = torch.get_num_threads()
    if jobs is None:
        jobs = min(4, cores) if placement.device.type == "cpu" else 1
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    return jobs, max(1, cores // jobs)


def _timed(fn, *args, note: str, progress: Progress, **kwargs) -> tuple:
    progress.note(note)
    began = time.perf_counter()
    out = fn(*args, progress=progress, **kwargs)
    return out, round(time.perf_counter() - began, 1)


def _train_job(note: str, *, progress: Progress, **kwargs) -> dict:
    """One owner's expert (flexaudit.privacy.train_expert's arguments): its manifest and the seconds it took."""
    trained, seconds = _timed(train_expert, note=note, progress=progress, **kwargs)
    return {"privacy": trained.manifest.get("privacy"), "seconds": seconds}


def _dense_job(note: str, expert_dir: Path, *, progress: Progress, **kwargs) -> dict:
    from flexaudit.moe.dense import default_location, train_dense_baseline

    baseline, seconds = _timed(train_dense_baseline, expert_dir, note=note, progress=progress,
                               out=default_location(expert_dir), **kwargs)
    return {"directory": baseline.directory, "seconds": seconds}


def _submit_owners(work: Jobs, workdir, plan, anchor_dir, data, public_data, placement, progress):
    """Submit every owner's expert, the clinical owner's DP expert and the careless owner's, then each offering
    owner's dense baseline, each job named as the expert it trains (the baselines "dense NAME"): ({name:
    package}, {name: dense baseline}), the folders they will be in. The DP expert waits for the clinical expert:
    both write the clinical owner's privacy ledger."""
    from flexaudit.moe.dense import default_location

    public = public_data if plan.public_negatives else None
    careless = data / f"{LEAKY}.jsonl"
    records = _careless_file(data / "finance.jsonl", plan.leaky_documents)
    atomic_write_text(careless, "\n".join(records) + "\n")
    experts = {name: workdir / "experts" / name for name in (*EXPERT_DOMAINS, DP_EXPERT, LEAKY)}
    common = {"anchor_dir": anchor_dir, "overwrite": True, "placement": placement}
    # longest first: the careless owner's many passes, then its dense baseline
    work.submit(LEAKY, _train_job, f"[3/{STEPS}] a careless owner overfits an expert on {len(records)} records of its "
                "customers with the most records (no pull towards the public expert)",
                data=careless, name=LEAKY, out=experts[LEAKY], subject_field="subject", public_data=public,
                home=workdir / "owners" / LEAKY, **common,
                options=_expert_options(plan, steps=plan.leaky_steps, lr=plan.leaky_lr,
                                        holdout_fraction=plan.leaky_holdout, anchor_weight=plan.leaky_anchor_weight))
    for i, d in enumerate(EXPERT_DOMAINS, start=1):
        work.submit(d, _train_job, f"[3/{STEPS}] owner {i} of {len(EXPERT_DOMAINS)} trains the {d} expert on "
                    f"{data / f'{d}.jsonl'}", data=data / f"{d}.jsonl", name=d, out=experts[d],
                    subject_field=None if d == "code" else "subject", public_data=public,
                    home=workdir / "owners" / d, **common,
                    options=_expert_options(plan, steps=plan.steps_for(d)))
    work.submit(DP_EXPERT, _train_job, f"[3/{STEPS}] the {DP_DOMAIN} owner trains a differentially private expert "
                "(target epsilon 8, one patient = one unit)", after=[DP_DOMAIN],
                data=data / f"{DP_DOMAIN}.jsonl", name=DP_EXPERT, out=experts[DP_EXPERT], subject_field="subject",
                public_data=public, home=workdir / "owners" / DP_DOMAIN, **common,
                options=_expert_options(plan, steps=plan.dp_steps, batch_size=plan.dp_batch, lr=plan.dp_lr,
                                        dp=DPOptions(target_epsilon=8.0, unit="subject", max_windows=2)))
    baselines = list(OFFERED) if plan.dense_baselines else []
    for name in sorted(baselines, key=lambda n: n != LEAKY):
        work.submit(f"dense {name}", _dense_job, f"[4/{STEPS}] the {_owner(name)} owner fine-tunes the whole anchor "
                    f"on the same documents (the dense baseline of {name}, kept in {local_dir(experts[name])})",
                    experts[name], after=[name], **common)
    return experts, {name: default_location(experts[name]) for name in baselines}


def _trained(work: Jobs, experts: dict[str, Path], dense: dict[str, Path]) -> dict[str, dict]:
    """Wait for the training jobs: {job: its manifest's privacy block and seconds}."""
    trained = {name: work.result(name) for name in experts}
    for name in dense:
        trained[f"dense {name}"] = work.result(f"dense {name}")
    return trained


def _owner(name: str) -> str:
    return name.removesuffix("-dp")


def _audit_one(workdir, plan, name: str, package: Path, anchor_dir: Path, policy_path: Path | None, placement,
               progress, *,
               dense: Path | None = None, pool_experts: tuple[Path, ...] | None = None) -> dict:
    """Audit one expert, render its report and judge it: {name: headline figures, gate, report, table,
    seconds}."""
    from flexaudit.gate.engine import run_gate
    from flexaudit.report import render_report
    from flexaudit.report.policy import load_policy
    from flexaudit.workflows import AuditOptions, run_audit

    began = time.perf_counter()
    options = AuditOptions(max_documents=plan.audit_documents, extraction_documents=plan.audit_extraction,
                           samples_per_prefix=plan.audit_samples, pii_prompts=plan.audit_pii_prompts,
                           seed=plan.seed, policy=policy_path, dense_baseline=dense, pool_experts=pool_experts)
    compared = " and the extraction table" if dense is not None or pool_experts is not None else ""
    progress.note(f"[5/{STEPS}] auditing {name}: anchor + {name} against the anchor alone{compared}")
    audit_dir = workdir / "audits" / name
    result = run_audit(package, anchor_dir=anchor_dir, out=audit_dir, options=options,
                       home=workdir / "owners" / _owner(name), placement=placement, progress=progress, figures=False)
    rendered = render_report(audit_dir, ("html", "md"))
    gate = run_gate(audit_dir, load_policy(policy_path), package_dir=package)
    atomic_write_json(audit_dir / "gate.json", gate.as_dict())

    def findings(status: str) -> list[dict]:
        return [{"rule_id": f.rule_id, "message": f.message} for f in gate.findings if f.status == status]

    return {name: {
        "figures": _headline(result.report),
        "gate": {"decision": gate.decision, "exit_code": gate.exit_code, "summary": gate.summary,
                 "failing": findings("fail"), "undecided": findings("inconclusive")},
        "report": str(rendered["html"]),
        "extraction_table": result.report["empirical"].get("extraction_comparison"),
        "seconds": round(time.perf_counter() - began, 1),
    }}


def _submit_audits(work: Jobs, workdir, plan, anchor_dir, experts, offered, dense, policy_path, placement, *,
                   waits: Callable[[str], tuple[str, ...]] = lambda name: ()) -> Callable[..., None]:
    """Submit the audit of each expert its owner offers (in `offered`'s order, the order they apply in), each
    against the pool it would join if every owner before it were admitted, and the DP expert's (audited, never
    offered); `waits(name)` names the jobs that write what an audit of `name` reads (its expert and dense
    baseline; the pool's experts are the jobs named as them), so that an audit starts as soon as they exist.
    Returns the function that submits an audit, `audit(job, name, pool)`, for _admit's audits again."""

    def audit(job: str, name: str, pool: tuple[Path, ...] | None, after: tuple[str, ...] = ()) -> None:
        work.submit(job, _audit_one, workdir, plan, name, experts[name], anchor_dir, policy_path, placement,
                    dense=dense.get(name), pool_experts=pool, after=after)

    for i, name in enumerate(offered):
        audit(f"audit {name}", name, tuple(experts[n] for n in offered[:i]),
              after=(*waits(name), *offered[:i]))
    audit(f"audit {DP_EXPERT}", DP_EXPERT, None, after=waits(DP_EXPERT))
    return audit


def _admit(work: Jobs, workdir: Path, registry: Path, experts, offered, audit: Callable[..., None], progress):
    """The owners apply to the pool one after another: each audit compares the expert with the pool it would
    join (the experts admitted so far, plus it) and that pool without it; the pool admits it only on a pass.

    The audits run side by side (_submit_audits), each against the pool it would join if every owner before it
    were admitted; an audit whose assumption turns out wrong (an earlier expert refused) is run again against
    the pool as it is, so the outcome is the one-after-another outcome: ({name: audit}, the pool's record). The
    DP expert's audit is not awaited: the pool does not wait for it."""
    from flexaudit.pool import admit, pool_members

    audits, record = {}, {"admitted": [], "refused": {}}
    for i, name in enumerate(offered):
        result = work.result(f"audit {name}")
        if record["admitted"] != offered[:i]:
            progress.note(f"[5/{STEPS}] the pool holds {', '.join(record['admitted']) or 'no expert'}, not every "
                          f"expert before {name}: auditing {name} again against that pool")
            audit(f"audit {name} again", name, tuple(pool_members(registry)))
            result = work.result(f"audit {name} again")
        audits.update(result)
        try:
            admit(registry, experts[name], workdir / "audits" / name)
            record["admitted"].append(name)
            progress.note(f"[5/{STEPS}] the pool admitted {name}")
        except FlexauditError as exc:
            record["refused"][name] = {"exit_code": exc.exit_code, "reason": exc.message}
            progress.note(f"[5/{STEPS}] the pool refused {name}: {exc.message}")
    if not record["admitted"]:
        raise InputError("no expert passed its audit, so the pool is empty: see the gate results in "
                         f"{workdir / 'audits'}")
    return audits, record


def _evaluate_job(what: tuple, anchor_dir: Path, holdout: dict[str, list[str]], placement: Placement, *,
                  progress: Progress) -> dict[str, float]:
    """Held-out perplexity per domain of one model of the method's table: `what` is ("anchor",),
    ("expert", package) or ("pool", merged directory, experts opted out)."""
    anchor = load_anchor(anchor_dir, placement=placement)
    if what[0] == "anchor":
        model = anchor.model
    elif what[0] == "expert":
        model = compose(anchor, [load_package(what[1], anchor=anchor)], top_k=2)
    else:
        model = open_model(what[1], exclude=list(what[2]), placement=placement)[0]
    return {d: round(perplexity(model, anchor.tokenizer, texts).perplexity, 3) for d, texts in holdout.items()}


def _holdout_texts(plan, anchor_dir, experts, domains) -> dict[str, list[str]]:
    """The method table's held-out texts per domain: the anchor's holdout for public prose, each expert's own
    holdout for its domain; read once and handed to every evaluation job."""
    files = {"public": local_dir(anchor_dir) / "holdout.jsonl"} | {
        d: local_dir(experts[d]) / "holdout.jsonl" for d in EXPERT_DOMAINS
    }
    return {d: [doc.text for doc in load_documents(files[d])][: plan.eval_documents] for d in domains}


def _models_alone(experts) -> dict[str, tuple[str, tuple]]:
    """The table's rows that do not wait for the pool: {label: (kind, what _evaluate_job evaluates)}."""
    return {"anchor": ("anchor", ("anchor",))} | {
        f"anchor + {d}": ("expert", ("expert", experts[d])) for d in [*EXPERT_DOMAINS, DP_EXPERT]
    }


def _pool_models(merged: Path, in_pool: list[str]) -> dict[str, tuple[str, tuple]]:
    """The merged pool's rows: the pool, and the pool with each of its domain experts (`in_pool`) opted out."""
    return {"merged pool": ("pool", ("pool", merged, ()))} | {
        f"pool without {d}": ("opt-out", ("pool", merged, (d,))) for d in in_pool
    }


def _submit_evaluations(work: Jobs, models: dict[str, tuple[str, tuple]], anchor_dir: Path,
                        holdout: dict[str, list[str]], placement: Placement) -> None:
    for label, (_, what) in models.items():
        work.submit(f"evaluate {label}", _evaluate_job, what, anchor_dir, holdout, placement)


def _table_rows(work: Jobs, models: dict[str, tuple[str, tuple]], progress) -> dict[str, Row]:
    task = progress.task("evaluation", total=len(models))
    rows = {}
    for label, (kind, _) in models.items():
        rows[label] = Row(label=label, kind=kind, perplexity=work.result(f"evaluate {label}"))
        task.advance(1)
    task.close()
    return rows


def _policy_file(workdir: Path, plan: DemoPlan) -> Path | None:
    """The shipped default policy; the quick demo's audits are too small for its sample-size minimums, so it
    uses the same thresholds with minimums that fit, and does not judge TPR at a low FPR: with the quick
    audit's 30-40 non-members even an attack at chance has a 95% upper bound near 0.3 at 10% FPR (measured:
    0.27 for 3 of 26), so that control would refuse every expert. Membership is judged by AUC there, and
    extraction and personal data as in the shipped policy; its name says so."""
    if plan.policy != "quick":
        return None
    from flexaudit.report.policy import default_policy_text

    text = default_policy_text()
    text = text.replace('name = "flexaudit default privacy policy"', 'name = "flexaudit default policy, demo --quick sample sizes"')
    text = re.sub(r"min_samples = \d+", "min_samples = 5", text)
    text = re.sub(r"^\[controls\.PRIV-MIA-TPR\].*$", "[controls.PRIV-MIA-TPR]\nenabled = false  # too few non-members",
                  text, count=1, flags=re.M)
    path = workdir / "quick-policy.toml"
    path.write_text(text)
    return path


def machine_text(m: dict) -> str:
    """The yardstick printed beside the demo's times: the fp32 matmul peak measured at its start and end."""
    threads = f"{m['threads']} thread{'s' if m['threads'] != 1 else ''}"
    workers = m.get("workers", 1)
    side_by_side = (f"; {workers} worker processes of {m['threads_per_worker']} thread"
                    f"{'s' if m['threads_per_worker'] != 1 else ''}" if workers > 1 else "")
    return (f"{m['matmul_gflops_at_start']:.0f} GFLOP/s at the start, {m['matmul_gflops_at_end']:.0f} at the end "
            f"({threads}, {m.get('device', 'cpu')} {m.get('dtype', 'float32')}{side_by_side})")


def _figure_text(f: dict | None) -> str:
    if not f:
        return "-"
    anchor = f" ({f['anchor']:.2f})" if f.get("anchor") is not None else ""
    return f"{f['value']:.2f}{anchor}"


def gate_reasons(gate: dict) -> list[tuple[str, str]]:
    """The controls behind a gate decision (_audit_one's "gate" record) as (label, message): those violated, then
    those that could not be decided, labelled so (an inconclusive gate has only these)."""
    return ([(x["rule_id"], x["message"]) for x in gate.get("failing", [])] +
            [(f"{x['rule_id']} (undecided)", x["message"]) for x in gate.get("undecided", [])])


def pool_status(pool: dict, name: str) -> str | None:
    """What the pool did with an expert (DemoResult.pool): "admitted", "refused", or None when its owner never
    offered it (the DP expert)."""
    return "admitted" if name in pool.get("admitted", []) else "refused" if name in pool.get("refused", {}) else None


def _reasons(gate: dict) -> str:
    return "; ".join(label for label, _ in gate_reasons(gate)) or "-"


def write_page(path: Path, d: dict) -> None:
    """The demo's overview page from its results (DemoResult.as_dict()): one self-contained HTML file (no
    script, nothing fetched; figures inline), written atomically; links are relative to its directory."""
    from flexaudit import __version__
    from flexaudit.report import figures as F
    from flexaudit.report.render import comparison_rows, environment

    root = Path(path).parent.resolve()

    def rel(p: str) -> str:
        try:
            return Path(p).resolve().relative_to(root).as_posix()
        except ValueError:
            return Path(p).as_posix()

    extraction = []
    for name, entry in d["extraction"].items():
        table = comparison_rows(entry["table"])
        extraction.append({"name": name, "report": rel(entry["report"]), **table})
    figure = F.draw_comparison({f"{name}'s members": entry["table"] for name, entry in d["extraction"].items()})
    audits = []
    for name, a in d["audits"].items():
        f, pool = a["figures"], d["pool"]
        status = pool_status(pool, name) or "not offered"
        audits.append({"name": name, "decision": a["gate"]["decision"], "pool": status,
                       "auc": _figure_text(f.get("membership_auc")), "sampled": _figure_text(f.get("sampled_extraction")),
                       "personal": _figure_text(f.get("personal_data_leaked")),
                       "inferred": _figure_text(f.get("personal_data_inferred")),
                       "reasons": _reasons(a["gate"]),
                       "report": rel(a["report"])})
    m = d["machine"]
    peak = machine_text(m)
    timings = [(k.replace("_", " "), f"{v:.0f} s") for k, v in d["seconds"].items()]
    html = environment("html").get_template("html/demo.html.jinja").render(
        d=d, version=__version__, title="quick" if d["plan"]["policy"] == "quick" else "full",
        s_total=f"{d['seconds']['total']:.0f} s", peak=peak, extraction=extraction,
        attacks=[name for _, name, _ in F.COMPARED_ATTACKS], figure=F.data_uri(figure), audits=audits,
        timings=timings, artifacts=[(k, rel(v)) for k, v in d["artifacts"].items()])
    atomic_write_text(path, html)
