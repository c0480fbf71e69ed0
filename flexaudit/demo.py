"""The demo: the whole main job on built-in data, and the method's table in miniature.

  1. write the built-in corpus (public prose, Python code, synthetic clinical notes and bank records)
  2. train the public anchor on the public prose
  3. each data owner trains an expert on its own domain against the frozen anchor
  4. merge the experts into one Hugging Face FlexOlmo checkpoint, without retraining
  5. evaluate held-out perplexity per domain: the anchor, each expert alone (anchor + that expert), the
     merged pool, and the pool with each expert opted out

Every owner gets its own FLEXAUDIT_HOME-style state under owners/<name>, as separate organisations would.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flexaudit.anchor import load_anchor, local_dir, train_anchor
from flexaudit.data import load_documents
from flexaudit.data.builtin import write_domain
from flexaudit.errors import InputError
from flexaudit.evaluate import perplexity
from flexaudit.expert import ExpertOptions, load_package, train_expert
from flexaudit.fsutil import atomic_write_json
from flexaudit.merge import compose, merge, open_model
from flexaudit.progress import NULL_PROGRESS, Progress

MARKER = ".flexaudit-demo"
EXPERT_DOMAINS = ("code", "clinical", "finance")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes for one demo run; `quick` is the version the tests run."""

    preset: str
    documents: int  # per domain
    expert_steps: int
    anchor_steps: int | None = None  # None: the preset's
    router_init: str = "hidden-mean"
    router_bias: bool = False
    top_k: int | None = None  # None: merge's measured default
    seed: int = 0

    @classmethod
    def full(cls) -> "DemoPlan":
        return cls(preset="small", documents=2000, expert_steps=300)

    @classmethod
    def quick(cls) -> "DemoPlan":
        return cls(preset="tiny", documents=300, expert_steps=60, anchor_steps=120)


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
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)

    def as_dict(self) -> dict:
        return {
            "workdir": str(self.workdir),
            "plan": asdict(self.plan),
            "domains": self.domains,
            "rows": [asdict(r) for r in self.rows],
            "artifacts": self.artifacts,
            "checks": self.checks,
            "seconds": self.seconds,
        }


def _prepare_workdir(workdir: Path, overwrite: bool) -> None:
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists() and not overwrite:
        raise InputError(f"{workdir} is not empty and was not made by the demo: choose another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()


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


def run_demo(
    workdir: Path,
    *,
    quick: bool = False,
    plan: DemoPlan | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> DemoResult:
    plan = plan or (DemoPlan.quick() if quick else DemoPlan.full())
    workdir = Path(workdir)
    _prepare_workdir(workdir, overwrite)
    seconds: dict[str, float] = {}
    began = time.perf_counter()

    # 1. data: one file per domain, as each owner would hold it
    data = workdir / "data"
    domains = ["public", *EXPERT_DOMAINS]
    for d in domains:
        write_domain(d, data / f"{d}.jsonl", n_documents=plan.documents, seed=plan.seed)
    seconds["data"] = time.perf_counter() - began

    # 2. the public anchor
    t = time.perf_counter()
    anchor_dir = workdir / "anchor"
    progress.note(f"[1/4] training the public anchor ({plan.preset}) on {data / 'public.jsonl'}")
    train_anchor([data / "public.jsonl"], anchor_dir, preset=plan.preset, steps=plan.anchor_steps, seed=plan.seed,
                 router_init=plan.router_init, overwrite=True, progress=progress)
    seconds["anchor"] = time.perf_counter() - t

    # 3. one expert per owner, each with its own private state
    t = time.perf_counter()
    expert_dirs = {}
    options = ExpertOptions(steps=plan.expert_steps, seed=plan.seed, router_init=plan.router_init, router_bias=plan.router_bias)
    for i, d in enumerate(EXPERT_DOMAINS, start=1):
        progress.note(f"[2/4] owner {i} of {len(EXPERT_DOMAINS)} trains the {d} expert on {data / f'{d}.jsonl'}")
        expert_dirs[d] = workdir / "experts" / d
        train_expert(anchor_dir=anchor_dir, data=data / f"{d}.jsonl", name=d, out=expert_dirs[d], options=options,
                     subject_field=None if d == "code" else "subject", overwrite=True, progress=progress,
                     home=workdir / "owners" / d)
    seconds["experts"] = time.perf_counter() - t

    # 4. merge
    t = time.perf_counter()
    pool_dir = workdir / "pool"
    progress.note(f"[3/4] merging {', '.join(EXPERT_DOMAINS)} into {pool_dir}")
    pool = merge(anchor_dir, list(expert_dirs.values()), pool_dir, top_k=plan.top_k, overwrite=True)
    seconds["merge"] = time.perf_counter() - t

    # 5. the table: held-out text per domain (the anchor's holdout for public prose)
    t = time.perf_counter()
    holdout_files = {"public": local_dir(anchor_dir) / "holdout.jsonl"} | {
        d: local_dir(expert_dirs[d]) / "holdout.jsonl" for d in EXPERT_DOMAINS
    }
    holdout = {d: [doc.text for doc in load_documents(p)] for d, p in holdout_files.items()}
    anchor = load_anchor(anchor_dir)
    models = {"anchor": ("anchor", anchor.model)}
    for d in EXPERT_DOMAINS:
        models[f"anchor + {d}"] = ("expert", compose(anchor, [load_package(expert_dirs[d], anchor=anchor)], top_k=2))
    models["merged pool"] = ("pool", open_model(pool_dir)[0])
    for d in EXPERT_DOMAINS:
        models[f"pool without {d}"] = ("opt-out", open_model(pool_dir, exclude=[d])[0])
    progress.note(f"[4/4] evaluating {len(models)} models on {len(domains)} held-out domains")
    task = progress.task("evaluation", total=len(models) * len(domains))
    rows = {}
    for label, (kind, model) in models.items():
        scores = {}
        for d in domains:
            scores[d] = perplexity(model, anchor.tokenizer, holdout[d]).perplexity
            task.advance(1)
        rows[label] = Row(label=label, kind=kind, perplexity=scores)
    task.close()
    seconds["evaluation"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - began

    result = DemoResult(
        workdir=workdir,
        plan=plan,
        domains=domains,
        rows=list(rows.values()),
        artifacts={
            "data": str(data),
            "anchor": str(anchor_dir),
            **{f"expert {d}": str(p) for d, p in expert_dirs.items()},
            **{f"owner-only {d}": str(local_dir(p)) for d, p in expert_dirs.items()},
            "merged pool": str(pool.directory),
            "results": str(workdir / "results.json"),
        },
        checks=_criteria(rows, domains, list(EXPERT_DOMAINS)),
        seconds={k: round(v, 1) for k, v in seconds.items()},
    )
    atomic_write_json(workdir / "results.json", result.as_dict())
    return result
