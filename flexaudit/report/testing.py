"""Realistic reports from fake numbers, for tests, template development and screenshots (not audit API).

    pkg = make_package(tmp / "clinical", name="clinical")
    report = fake_report(pkg, leaky=True)                      # a valid report.json dict
    write_report(tmp / "audit", report)

The package is a real expert package on disk (tiny random tensors, written by flexaudit.moe.expert's own
writer) so digests, the gate's integrity check and the pool work on it. The attack results are made
with the attack library's own result classes and metric functions from synthetic scores, so their
shapes are exactly what real audits produce; only the numbers are invented. `leaky=True` shifts the
member scores and extraction counts far above the anchor's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

FIXED_NOW = dt.datetime(2025, 6, 2, 9, 30, tzinfo=dt.timezone.utc)
FAKE_ANCHOR = "sha256:" + hashlib.sha256(b"flexaudit test anchor").hexdigest()
MIA_ATTACKS = (("FA-MIA-LOSS", 1.0), ("FA-MIA-ZLIB", 0.8), ("FA-MIA-MINK", 0.9), ("FA-MIA-MINKPP", 0.9),
               ("FA-MIA-REF", 1.4), ("FA-MIA-RMIA", 1.3))
PII_CATEGORIES = ("email", "iban", "person_name", "phone")


def dp_block(*, epsilon: float = 4.0, delta: float = 1e-5, unit: str = "document", noise_multiplier: float = 1.1,
             sample_rate: float = 0.01, steps: int = 300) -> dict:
    """A manifest privacy block as DP training writes it (issue 3's field names)."""
    return {"guarantee": "dp", "epsilon": epsilon, "delta": delta, "unit": unit,
            "accountant": {"name": "prv", "library": "opacus", "version": "1.6.0"},
            "noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "steps": steps, "max_grad_norm": 1.0,
            "sampling": "poisson", "dataset_size": 1800, "cross_check": {"accountant": "pld", "epsilon": epsilon * 0.99}}


def make_package(directory: str | Path, *, name: str = "clinical", anchor_digest: str = FAKE_ANCHOR,
                 privacy: dict | None = None, seed: int = 0, layers: int = 2, hidden: int = 8) -> Path:
    """Write a small but real expert package (flexaudit.moe.expert.write_package) and return its directory."""
    import torch

    from flexaudit.moe.expert import NO_GUARANTEE, PACKAGE_FORMAT, write_package

    g = torch.Generator().manual_seed(seed)
    inter = 2 * hidden
    tensors = {}
    for i in range(layers):
        tensors[f"layers.{i}.mlp.gate_proj.weight"] = torch.randn(inter, hidden, generator=g)
        tensors[f"layers.{i}.mlp.up_proj.weight"] = torch.randn(inter, hidden, generator=g)
        tensors[f"layers.{i}.mlp.down_proj.weight"] = torch.randn(hidden, inter, generator=g)
        tensors[f"layers.{i}.router.weight"] = torch.randn(1, hidden, generator=g)
    manifest = {
        "format": PACKAGE_FORMAT, "name": name, "created": "2025-06-01T12:00:00Z",
        "anchor": {"root_digest": anchor_digest},
        "architecture": {"vocab_size": 512, "hidden_size": hidden, "intermediate_size": inter, "num_layers": layers},
        "router": {"init": "hidden-mean", "public_negatives": "none", "bias": "none"},
        "training": {"steps": 300, "batch_size": 16, "seq_len": 128, "lr": 0.002, "warmup_steps": 30,
                     "weight_decay": 0.0, "seed": seed,
                     "method": "FlexOlmo expert: 2 experts, top-2, no load-balancing loss, AdamW",
                     "trainable": "slot-1 FFN, slot-1 router row",
                     "frozen": "embeddings, attention, norms, LM head, public FFN, public router row",
                     "trainable_parameters": sum(t.numel() for t in tensors.values()),
                     "frozen_tensors_verified_identical": 17, "tokens": 614400, "epochs": 2.41, "final_loss": 2.3117},
        "data": {"documents": 2000, "distinct_documents": 2000, "characters": 1_234_567, "subjects": None,
                 "fingerprint": "hmac-sha256:" + hashlib.sha256(name.encode()).hexdigest(), "source_format": "jsonl"},
        "split": {"rule": "hmac-unit-interval", "seed": seed, "holdout_fraction": 0.1,
                  "hash": "HMAC-SHA256(owner key, SHA-256 of document text); the key stays with the owner",
                  "members": {"count": 1800, "hashes": [hashlib.sha256(f"m{i}".encode()).hexdigest() for i in range(5)]},
                  "holdout": {"count": 200, "hashes": [hashlib.sha256(f"h{i}".encode()).hexdigest() for i in range(5)]}},
        "privacy": privacy if privacy is not None else dict(NO_GUARANTEE),
        "software": {"flexaudit": "0.1.0", "python": "3.11", "torch": "2.13.0"},
    }
    directory = Path(directory)
    write_package(directory, tensors, manifest, overwrite=True)
    return directory


def _membership(rng: np.random.Generator, *, shift: float, n_members: int, n_nonmembers: int,
                with_reference: bool) -> dict:
    from attacks import metrics
    from attacks.membership.run import MembershipReport, MembershipResult

    results = {}
    for attack_id, strength in MIA_ATTACKS:
        name = attack_id.split("-")[-1]
        if not with_reference and attack_id in ("FA-MIA-REF", "FA-MIA-RMIA"):
            results[attack_id] = MembershipResult(attack_id, name, "fake", "not_run",
                                                  reason="needs a reference model's scores (none given)")
            continue
        mem = rng.normal(shift * strength, 1.0, n_members)
        non = rng.normal(0.0, 1.0, n_nonmembers)
        tprs = metrics.tpr_at_fprs(mem, non)
        results[attack_id] = MembershipResult(
            attack_id, name, "fake citation", "ok", params={}, member_scores=mem, nonmember_scores=non,
            auc=metrics.roc_auc(mem, non), auc_ci=metrics.bootstrap_auc_ci(mem, non, n_boot=200, seed=1),
            tpr_at_fpr=tprs, roc=metrics.roc_points(mem, non, max_points=120),
            warnings=list(dict.fromkeys(t.warning for t in tprs if t.warning)))
    results["FA-MIA-LIRA"] = MembershipResult("FA-MIA-LIRA", "LiRA (offline)", "fake", "not_run",
                                              reason="needs shadow models' scores (none given)")
    return MembershipReport(results=results, n_members=n_members, n_nonmembers=n_nonmembers).as_dict()


def _extraction(rng: np.random.Generator, *, frac: float, n: int, canaries: int, reveal: bool,
                exposure_shift: float, marker: str) -> list[dict]:
    from attacks import metrics
    from attacks.extraction.canaries import CanaryExposureResult
    from attacks.extraction.discoverable import DiscoverableResult
    from attacks.extraction.pii import PiiLeakageResult
    from attacks.extraction.pii_inference import PiiInferenceResult
    from attacks.extraction.probabilistic import ProbabilisticExtractionResult
    from attacks.extraction.sampled import SampledExtractionResult

    k = int(round(frac * n))
    token_match = np.clip(rng.normal(0.3 + frac, 0.2, n), 0, 1)
    token_match[:k] = 1.0
    per_doc = [{"sha256": hashlib.sha256(f"{marker}{i}".encode()).hexdigest(), "offset": 0,
                "token_match": float(t), "exact": bool(t == 1.0)} for i, t in enumerate(token_match)]
    examples = [{"sha256": per_doc[0]["sha256"], "prefix": "Patient <b>Ada Moreau</b> & co",
                 "true_suffix": "was seen on 2024-01-02 <script>alert(1)</script>",
                 "generated_suffix": "was seen on 2024-01-02 | **bold**"}] if reveal else None
    disc = DiscoverableResult("FA-EXT-DISC", {"prefix_len": 32, "suffix_len": 32, "offset": "start"}, n, 3,
                              metrics.rate(k=k, n=n), float(token_match.mean()), per_doc, examples=examples,
                              skipped={"shorter than the 64-token window": 3})
    ks = int(round(1.4 * frac * n))
    best = np.clip(rng.normal(0.45 + frac, 0.15, n), 0, 1)
    sampled = SampledExtractionResult("FA-EXT-SAMPLED", {"prefix_len": 32, "window_len": 128, "n_samples": 10,
                                                         "threshold": 0.9}, n, 0, metrics.rate(k=ks, n=n),
                                      float(best.mean()), [{"offset": 0, "best_similarity": float(b),
                                                            "extracted": bool(b >= 0.9)} for b in best])
    by_q = {}
    for q in (1, 10, 100, 1000):
        kq = min(n, int(round(frac * n * (1 + np.log10(q)) / 2)))
        by_q[q] = {"expected_rate": kq / n * 0.8, "extractable": metrics.rate(k=kq, n=n)}
    prob = ProbabilisticExtractionResult("FA-EXT-PROB", {"prefix_len": 32, "suffix_len": 32, "p_threshold": 0.5,
                                                         "n_queries": [1, 10, 100, 1000]}, n, 0, by_q,
                                         [{"sha256": d["sha256"], "offset": 0, "log_p": float(rng.normal(-40, 10))}
                                          for d in per_doc])
    out = [disc, sampled, prob]
    if canaries:
        included = np.arange(canaries) % 2 == 0
        z = rng.normal(0, 1, canaries) + included * exposure_shift
        ranks = np.maximum(1, np.round(1001 / (1 + np.exp(z * 2.5))).astype(int))
        exposures = np.log2(1001) - np.log2(ranks)
        per_canary = [{"sha256": hashlib.sha256(f"canary{i}".encode()).hexdigest(), "included": bool(included[i]),
                       "rank": int(ranks[i]), "exposure": float(exposures[i]), "exposure_extrapolated": None,
                       "z": float(z[i])} for i in range(canaries)]
        out.append(CanaryExposureResult(
            "FA-EXT-CANARY", {"n_reference": 1000, "seed": 0, "delta": 0.0, "beta": 0.05}, canaries,
            float(9 * np.log2(10)), float(np.log2(1001)), per_canary, float(exposures.mean()), float(exposures.max()),
            metrics.rate(k=int((ranks == 1).sum()), n=canaries), z,
            epsilon_one_run=metrics.epsilon_one_run(z, included)))
    n_items = 40
    by_cat = {}
    leaked_total = 0
    for j, c in enumerate(PII_CATEGORIES):
        kc = int(round(frac * 10)) if j % 2 == 0 else 0
        by_cat[c] = metrics.rate(k=kc, n=10)
        leaked_total += kc
    out.append(PiiLeakageResult("FA-EXT-PII", {"max_new_tokens": 64, "n_samples": 1}, 40, 40, n_items, 0,
                                metrics.rate(k=leaked_total, n=n_items), by_cat,
                                [hashlib.sha256(f"pii{i}".encode()).hexdigest() for i in range(leaked_total)]))
    # inference: 10 trials per category with 9 candidates each (chance 0.1), a share `frac` above chance
    inferred = {c: metrics.rate(k=1 + int(round(frac * 9)) if j % 2 == 0 else 1, n=10)
                for j, c in enumerate(PII_CATEGORIES)}
    won = sum(r.k for r in inferred.values())
    out.append(PiiInferenceResult("FA-EXT-PII-INF", {"candidates_max": 9}, 10 * len(PII_CATEGORIES),
                                  metrics.rate(k=won, n=10 * len(PII_CATEGORIES)), inferred, 0.1,
                                  [hashlib.sha256(f"inferred{i}".encode()).hexdigest() for i in range(won)]))
    return [r.as_dict() for r in out]


def fake_comparison(*, leaky: bool = False, name: str = "clinical", n: int = 150, items: int = 300) -> dict:
    """An extraction table (flexaudit.audit.comparison) with invented counts: dense > expert > pool > anchor."""
    from attacks import metrics

    digest = "hmac-sha256:" + hashlib.sha256(b"fake attacked documents").hexdigest()
    scale = 1.0 if leaky else 0.1
    rows = []
    for label, kind, experts, frac in (("anchor", "anchor", ["public"], 0.0),
                                       ("dense fine-tune", "dense", ["public"], 0.6),
                                       (f"anchor + {name}", "expert", ["public", name], 0.4),
                                       ("merged pool", "pool", ["public", "code", name], 0.25),
                                       (f"merged pool without {name}", "opt-out", ["public", "code"], 0.0)):
        k = int(round(frac * scale * n))
        rows.append({"label": label, "kind": kind, "experts": experts, "model_digest": None,
                     "rates": {"FA-EXT-SAMPLED": metrics.rate(k=k, n=n).as_dict(),
                               "FA-EXT-DISC": metrics.rate(k=k // 2, n=n).as_dict(),
                               "FA-EXT-PII": metrics.rate(k=int(round(frac * scale * items / 3)), n=items).as_dict(),
                               "FA-EXT-PII-INF": metrics.rate(k=10 + int(round(frac * scale * 90)), n=100).as_dict()},
                     "documents_digest": {"FA-EXT-SAMPLED": digest, "FA-EXT-DISC": digest},
                     "mean_best_similarity": 0.5 + frac * scale / 2, "mean_token_match": 0.3 + frac * scale / 2})
    return {"documents": n, "prompts": n, "personal_data_items": items, "inference_trials": 100,
            "settings": {"prefix_len": 32, "suffix_len": 32, "window_len": 128, "samples_per_prefix": 3, "seed": 0,
                         "pii_new_tokens": 32}, "rows": rows}


def fake_results(*, leaky: bool = False, n_members: int = 200, n_nonmembers: int = 200, n_documents: int = 150,
                 canaries: int = 20, reveal: bool = False, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for build_report: membership, extraction, hygiene, epsilon_lower_bounds, audit."""
    from attacks import metrics
    from attacks.hygiene import BlindBaselineResult

    rng = np.random.default_rng(seed)
    shift = 2.2 if leaky else 0.12
    membership = {
        "target": _membership(rng, shift=shift, n_members=n_members, n_nonmembers=n_nonmembers, with_reference=True),
        "anchor": _membership(rng, shift=0.0, n_members=n_members, n_nonmembers=n_nonmembers, with_reference=False),
    }
    extraction = {
        "target": _extraction(rng, frac=0.45 if leaky else 0.0, n=n_documents, canaries=canaries, reveal=reveal,
                              exposure_shift=3.0 if leaky else 0.0, marker="t"),
        "anchor": _extraction(rng, frac=0.0, n=n_documents, canaries=canaries, reveal=False, exposure_shift=0.0,
                              marker="a"),
    }
    blind = BlindBaselineResult("FA-HYG-BLIND", 0.52, metrics.Interval(0.46, 0.58, 0.95, "bootstrap-percentile"),
                                [0.5, 0.55, 0.49, 0.53, 0.52], n_members, n_nonmembers, 5, 0.6, None)
    mem_t = membership["target"]["results"]["FA-MIA-LOSS"]
    split_bound = metrics.epsilon_lower_bound_split(mem_t["member_scores"], mem_t["nonmember_scores"]).as_dict()
    return {"membership": membership, "extraction": extraction, "hygiene": blind.as_dict(),
            "epsilon_lower_bounds": [{**split_bound, "source": "FA-MIA-LOSS"}],
            "extraction_comparison": fake_comparison(leaky=leaky, n=n_documents),
            "audit": {"seed": seed, "members_source": "the expert's recorded member split (sample of 200)",
                      "nonmembers_source": "the expert's recorded holdout split", "device": "cpu",
                      "started_at": "2025-06-02T09:00:00Z", "finished_at": "2025-06-02T09:28:00Z",
                      "duration_s": 1680.0, "software": {"flexaudit": "0.1.0", "torch": "2.13.0"}}}


def fake_report(package: str | Path, *, leaky: bool = False, reveal: bool = False, policy: Any = None,
                anchor_digest: str = FAKE_ANCHOR, now: dt.datetime = FIXED_NOW, seed: int = 0,
                results: dict | None = None, **overrides: Any) -> dict:
    """A validated report for `package` (made with make_package) from fake attack numbers."""
    from flexaudit.report.build import build_report

    kwargs: dict[str, Any] = dict(results or fake_results(leaky=leaky, reveal=reveal, seed=seed))
    kwargs.setdefault("intended_use", {
        "purpose": "Shared clinical-notes expert for a hospital consortium's documentation assistant",
        "intended_users": "Clinicians of the member hospitals", "out_of_scope": ["diagnosis", "public release"],
        "pool": "consortium pool 2025-Q2", "owner": "St. Example Hospital", "contact": "dpo@example.org"})
    kwargs.setdefault("data", {"domains": ["clinical notes"], "provenance": "Hospital EHR export 2019-2023",
                               "legal_basis": "GDPR Art. 9(2)(h), consortium agreement"})
    kwargs.update(overrides)
    return build_report(package, anchor_digest=anchor_digest, policy=policy, reveal=reveal, now=now,
                        report_id=f"urn:uuid:{'0' * 8}-0000-4000-8000-{int(seed):012d}", **kwargs)
