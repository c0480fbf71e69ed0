"""Building report.json from an expert package and the attack library's results.

The audit command calls one function:

    report = build_report(
        package_dir,                               # or an ExpertPackage from flexaudit.moe.expert.load_package
        anchor_digest=anchor.root_digest,
        membership={"target": target_report, "anchor": anchor_report},   # attacks.MembershipReport or .as_dict()
        extraction={"target": [disc_t, sampled_t, prob_t, canary_t, pii_t],  # results or .as_dict(), any order
                    "anchor": [disc_a, sampled_a, prob_a, pii_a]},          # same attacks on the anchor alone
        hygiene=blind,                             # attacks.BlindBaselineResult or .as_dict()
        audit={"seed": 0, "members_source": "...", "nonmembers_source": "...", "started_at": ..., ...},
    )
    write_report(audit_dir, report, figures=True)

Input shapes (exactly what the attack library's `as_dict()` returns; the result objects are accepted too):
  membership["target"]  MembershipReport.as_dict(): {"n_members", "n_nonmembers", "warnings", "n_skipped",
                        "skipped", "results": {attack_id: MembershipResult.as_dict()}} on the model under audit (anchor +
                        this expert), with the anchor as reference model;
  membership["anchor"]  the same on the anchor alone (Ref/RMIA then report "not_run": the chance level is
                        used as the anchor's figure), or None.
  extraction["target"] / ["anchor"]  a list of DiscoverableResult / SampledExtractionResult /
                        ProbabilisticExtractionResult / CanaryExposureResult / PiiLeakageResult dicts (or a
                        dict keyed by attack_id; each carries "n_skipped" and "skipped", the unusable documents,
                        prompts or canaries it left out). An attack that could not run is {"attack_id": ...,
                        "status": "not_run", "reason": "..."}: a number is only ever a measured one.
  hygiene               BlindBaselineResult.as_dict(), a list of such, or a dict keyed by check_id.
  epsilon_lower_bounds  [EpsilonBound.as_dict() + {"source": attack id}] (e.g. metrics.epsilon_lower_bound_split
                        on the strongest attack's scores); the canaries' one-run bound is read from FA-EXT-CANARY.
  extraction_comparison the extraction table (flexaudit.audit.comparison): the same extraction attacks on the same
                        members against the anchor, the owner's dense fine-tune, anchor + expert and the merged
                        pool with and without the expert; None when the audit did not build it.

In the report each attack appears once with the two figures side by side:
  empirical.membership.attacks[ID] = {"name", "citation", "target": <result>, "anchor": <result or null>}
  empirical.extraction.attacks[ID] = {"name", "citation", "target": <result>, "anchor": <result or null>}
  empirical.hygiene.checks[ID]     = <result>

Privacy: raw text (`examples`) is kept only with reveal=True, and the report then says so on its first
page. Unkeyed SHA-256 hashes of individual documents, canaries and personal-data values are removed
unless keyed_hashes=True (they were HMACs under the owner's key): a plain hash of a phone number or a
known document is a membership oracle. Every removal is listed in document.redactions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from flexaudit import __version__
from flexaudit.errors import InputError, IntegrityError
from flexaudit.report.schema import SCHEMA_VERSION, validate

ATTACK_NAMES = {
    "FA-MIA-LOSS": "LOSS", "FA-MIA-ZLIB": "zlib ratio", "FA-MIA-MINK": "Min-K%", "FA-MIA-MINKPP": "Min-K%++",
    "FA-MIA-REF": "Reference (target - anchor)", "FA-MIA-RMIA": "RMIA (offline, anchor as reference)",
    "FA-MIA-LIRA": "LiRA (offline)", "FA-EXT-DISC": "Discoverable extraction (greedy)",
    "FA-EXT-SAMPLED": "Sampled extraction (FlexOlmo paper)", "FA-EXT-PROB": "Probabilistic extraction",
    "FA-EXT-CANARY": "Canary exposure", "FA-EXT-PII": "Personal-data leakage",
    "FA-EXT-PII-INF": "Personal-data inference (among candidates)", "FA-HYG-BLIND": "Blind baseline",
}
ATTACK_CITATIONS = {
    "FA-EXT-DISC": "Carlini et al. 2023 (ICLR), arXiv:2202.07646; Biderman et al. 2023 (Pythia)",
    "FA-EXT-SAMPLED": "Shi et al. 2025 (FlexOlmo) §5.3; Carlini et al. 2021, arXiv:2012.07805",
    "FA-EXT-PROB": "Hayes et al. 2024, arXiv:2410.19482",
    "FA-EXT-CANARY": "Carlini et al. 2019 (USENIX Security), arXiv:1802.08232",
    "FA-EXT-PII": "Lukas et al. 2023 (IEEE S&P), arXiv:2302.00539",
    "FA-EXT-PII-INF": "Lukas et al. 2023 (IEEE S&P), arXiv:2302.00539, the inference game",
    "FA-HYG-BLIND": "Das, Zhang, Tramèr 2024, arXiv:2406.16201",
}
MISSING = None  # rendered as "[More Information Needed]"

OPT_OUT = {
    "mechanism": ("FlexOlmo experts can be switched off without retraining: the expert's FFN and router row are "
                  "removed from the merged model (a router logit of minus infinity), so the pool behaves as if it "
                  "had never been trained with this owner's data."),
    "how": [
        "flexaudit pool revoke POOL NAME --opt-out --reason TEXT: removes the expert from the pool registry and "
        "deletes the pool's copy of its weights; the event is appended to the pool's hash-chained log",
        "flexaudit merge --pool POOL --anchor DIR --out DIR: the next merged model leaves revoked experts out",
        "flexaudit eval|generate MODEL --exclude NAME: deactivates an expert at inference time",
    ],
}


def _utc(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def _iso(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_dict(x: Any) -> Any:
    return x.as_dict() if hasattr(x, "as_dict") else x


def _finite(node: Any) -> Any:
    """Deep copy with NaN/inf -> None and tuples -> lists (JSON has neither)."""
    if isinstance(node, Mapping):
        return {str(k): _finite(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_finite(v) for v in node]
    if isinstance(node, float):
        return node if math.isfinite(node) else None
    if hasattr(node, "item") and callable(node.item):  # numpy scalar
        return _finite(node.item())
    if hasattr(node, "tolist"):  # numpy array
        return _finite(node.tolist())
    return node


class _Redactor:
    """Removes raw text and unkeyed hashes; remembers what it removed for document.redactions."""

    HASH_LISTS = ("per_document", "per_canary")

    def __init__(self, *, reveal: bool, keyed_hashes: bool):
        self.reveal, self.keyed, self.removed = reveal, keyed_hashes, set()

    def result(self, r: dict) -> dict:
        r = dict(r)
        if not self.reveal and r.get("examples") is not None:
            r.pop("examples")
            self.removed.add("raw text examples (the audit was not run with --reveal)")
        elif "examples" in r and r["examples"] is None:
            r.pop("examples")
        if not self.keyed:
            for key in self.HASH_LISTS:
                if isinstance(r.get(key), list) and any(isinstance(d, Mapping) and "sha256" in d for d in r[key]):
                    r[key] = [{k: v for k, v in d.items() if k != "sha256"} for d in r[key]]
                    self.removed.add("unkeyed per-item SHA-256 hashes (reversible for short or known texts)")
            if r.get("leaked_sha256"):
                r["leaked_sha256"] = []
                self.removed.add("unkeyed per-item SHA-256 hashes (reversible for short or known texts)")
        return r


def _by_attack(results: Any, *, key: str = "attack_id") -> dict[str, dict]:
    results = _as_dict(results)
    if results is None:
        return {}
    if isinstance(results, Mapping):
        if key in results:  # a single result
            return {results[key]: dict(results)}
        return {k: dict(_as_dict(v)) | ({key: k} if key not in _as_dict(v) else {}) for k, v in results.items()
                if v is not None}
    out = {}
    for r in results:
        r = _as_dict(r)
        if not isinstance(r, Mapping) or key not in r:
            raise InputError(f"every attack result needs an {key!r} (got {type(r).__name__})")
        out[r[key]] = dict(r)
    return out


def _membership_section(membership: Any, redact: _Redactor, include_scores: bool) -> dict | None:
    membership = _as_dict(membership)
    if membership is None:
        return None
    if "results" in membership:  # a bare MembershipReport dict: no anchor figures
        membership = {"target": membership, "anchor": None}
    target, anchor = _as_dict(membership.get("target")), _as_dict(membership.get("anchor"))
    if not isinstance(target, Mapping) or "results" not in target:
        raise InputError("membership['target'] must be a MembershipReport or its as_dict()")
    anchor_results = (anchor or {}).get("results") or {}

    def clean(r: Mapping | None) -> dict | None:
        if r is None:
            return None
        r = redact.result(dict(r))
        if not include_scores:
            r.pop("member_scores", None)
            r.pop("nonmember_scores", None)
        if r.get("status") != "ok" and not r.get("reason"):
            r["reason"] = "not run"
        return r

    attacks = {}
    for attack_id, r in sorted(target["results"].items()):
        attacks[attack_id] = {"name": r.get("name") or ATTACK_NAMES.get(attack_id, attack_id),
                              "citation": r.get("citation") or "", "target": clean(r),
                              "anchor": clean(anchor_results.get(attack_id))}
    return {"n_members": int(target["n_members"]), "n_nonmembers": int(target["n_nonmembers"]),
            # texts the attack library left out of every membership attack (empty, one token, ...), by reason
            "n_skipped": int(target.get("n_skipped") or 0), "skipped": dict(target.get("skipped") or {}),
            "warnings": list(target.get("warnings") or []), "anchor_warnings": list((anchor or {}).get("warnings") or []),
            "attacks": attacks}


def _extraction_section(extraction: Any, redact: _Redactor) -> dict | None:
    extraction = _as_dict(extraction)
    if extraction is None:
        return None
    if not isinstance(extraction, Mapping) or "target" not in extraction:
        raise InputError("extraction must be {'target': [results...], 'anchor': [results...] or None}")
    target, anchor = _by_attack(extraction.get("target")), _by_attack(extraction.get("anchor"))

    def clean(r: Mapping | None) -> dict | None:
        if r is None:
            return None
        r = redact.result(dict(r))
        r.setdefault("status", "ok")
        if r["status"] != "ok" and not r.get("reason"):
            r["reason"] = "not run"
        r.pop("scores", None)
        return r

    return {"attacks": {aid: {"name": ATTACK_NAMES.get(aid, aid), "citation": ATTACK_CITATIONS.get(aid, ""),
                              "target": clean(r), "anchor": clean(anchor.get(aid))}
                        for aid, r in sorted(target.items())}}


def _hygiene_section(hygiene: Any) -> dict:
    checks = _by_attack(hygiene, key="check_id")
    return {"checks": {k: dict(v) for k, v in sorted(checks.items())}}


def _accountant_name(acc: Any, fallback: Any = None) -> str | None:
    """"name (library version)", plus how it came to produce the figure when the requested one failed."""
    if acc is None:
        return None
    if isinstance(acc, Mapping):
        name = acc.get("name") or acc.get("accountant") or "?"
        lib = " ".join(str(acc[k]) for k in ("library", "version") if acc.get(k))
        text = f"{name} ({lib})" if lib else str(name)
    else:
        text = str(acc)
    if isinstance(fallback, Mapping) and fallback.get("statement"):
        text += f"; fallback: {fallback['statement']}"
    return text


def _first(block: Mapping, *names: str) -> Any:
    for n in names:
        if block.get(n) is not None:
            return block[n]
    return None


def _consumption(*, noise_multiplier, sample_rate, steps, delta) -> dict | None:
    """Epsilon after each of ~12 points of training (RDP first, with the fallback chain): the budget figure.

    RDP is cheap and analytic; should it fail at some point, the next accountant of the chain
    (flexaudit.privacy.FALLBACK_ORDER) produces that point, and the point names it.
    """
    try:
        from flexaudit.privacy import account, segment

        steps = int(steps)
        marks = sorted({0, *(round(steps * i / 11) for i in range(1, 12))})
        points = [{"step": 0, "epsilon": 0.0}]
        used: dict[str, str] = {}
        for s in marks[1:]:
            seg = segment(noise_multiplier=float(noise_multiplier), sample_rate=float(sample_rate), steps=int(s))
            r = account([seg], delta=float(delta), accountant="rdp")
            acc = r.to_dict()["accountant"]
            used.setdefault(r.accountant, f"{acc['name']} ({acc['library']})")
            points.append({"step": int(s), "epsilon": float(r.epsilon), "accountant": r.accountant})
        fell_back = sorted(set(used) - {"rdp"})
        note = ("epsilon after each step count at the stated delta, recomputed with the RDP accountant "
                "(an upper bound; the stated epsilon comes from the expert's own accountant)")
        if fell_back:
            note += f"; where RDP failed numerically, {', '.join(fell_back)} produced the point (each point names it)"
        return {"accountant": ", ".join(used.values()), "points": points, "note": note}
    except Exception:  # the figure is optional; the stated epsilon stands on its own
        return None


def _guarantee_section(block: Mapping | None, budget: Mapping | None) -> dict:
    block = dict(block or {})
    kind = block.get("guarantee")
    eps = _first(block, "epsilon", "eps")
    if kind in (None, "none", False, "no formal guarantee") or (eps is None and kind != "dp"):
        rest = {k: v for k, v in block.items() if k not in ("guarantee", "statement")}
        return {"guarantee": "none",
                "statement": block.get("statement") or "no formal guarantee: this expert was trained without "
                                                      "differential privacy",
                "details": _finite(rest), "consumption": None, "budget": _finite(dict(budget)) if budget else None}
    delta = _first(block, "delta")
    unit = _first(block, "unit", "privacy_unit")
    accountant = _accountant_name(_first(block, "accountant"), block.get("fallback"))
    missing = [n for n, v in (("epsilon", eps), ("delta", delta), ("unit", unit), ("accountant", accountant))
               if v is None]
    if missing:
        raise InputError(f"the manifest's DP block lacks {', '.join(missing)}: a DP claim must state epsilon, delta, "
                         "unit of privacy and accountant (NIST SP 800-226)")
    noise, rate, steps = (_first(block, "noise_multiplier"), _first(block, "sample_rate"), _first(block, "steps"))
    clip = _first(block, "max_grad_norm", "clipping_norm", "clip_norm")
    known = {"guarantee", "statement", "epsilon", "eps", "delta", "unit", "privacy_unit", "accountant",
             "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "clipping_norm", "clip_norm"}
    out = {"guarantee": "dp",
           "statement": block.get("statement") or f"({eps:g}, {delta:g})-differential privacy per {unit} "
                                                  f"({accountant} accountant)",
           "epsilon": float(eps), "delta": float(delta), "unit": str(unit), "accountant": accountant,
           "noise_multiplier": noise, "sample_rate": rate, "steps": int(steps) if steps is not None else None,
           "max_grad_norm": clip, "details": _finite({k: v for k, v in block.items() if k not in known}),
           "consumption": None, "budget": _finite(dict(budget)) if budget else None}
    if None not in (noise, rate, steps):
        out["consumption"] = _consumption(noise_multiplier=noise, sample_rate=rate, steps=steps, delta=delta)
    return out


def _subject(package, anchor_digest: str, package_path: str | None) -> dict:
    from flexaudit.digest import file_digests

    manifest = package.manifest
    stated_anchor = (manifest.get("anchor") or {}).get("root_digest")
    if stated_anchor != anchor_digest:
        raise IntegrityError(f"expert {package.name!r} was trained on anchor {str(stated_anchor)[:19]}..., not on "
                             f"{anchor_digest[:19]}...: audit it against the anchor it was trained on")
    digests = file_digests(package.directory)
    files = [{"path": p, "sha256": h, "bytes": (package.directory / p).stat().st_size} for p, h in sorted(digests.items())]
    allowed = ("*.safetensors", "manifest.json")
    disallowed = [f for f in digests if not (f.endswith(".safetensors") or f == "manifest.json")]
    parameters = sum(math.prod(t["shape"]) for t in manifest.get("tensors", []))
    return {
        "expert": {"name": package.name, "format": manifest.get("format", ""),
                   "path": package_path if package_path is not None else str(Path(package.directory).resolve()),
                   "root_digest": package.root_digest, "content_root_digest": manifest["content_root_digest"],
                   "manifest_sha256": digests["manifest.json"], "files": files,
                   "tensors": len(manifest.get("tensors", [])), "parameters": int(parameters),
                   "created": manifest.get("created")},
        "anchor": {"root_digest": anchor_digest, "path": None},
        "format_check": {"passed": not disallowed, "allowed": list(allowed), "files": sorted(digests),
                         "disallowed": disallowed,
                         "method": "pickle-format files refused, safetensors headers parsed and every tensor checked "
                                   "finite, files equal to the manifest's list (flexaudit.moe.expert.load_package)"},
    }


def _data_section(manifest: Mapping, overrides: Mapping, extraction: dict | None, guarantee: dict) -> dict:
    data, split = dict(manifest.get("data") or {}), dict(manifest.get("split") or {})
    categories = overrides.get("personal_data_categories")
    if categories is None and extraction:
        pii = (extraction["attacks"].get("FA-EXT-PII") or {}).get("target") or {}
        categories = {c: r.get("n") for c, r in (pii.get("by_category") or {}).items()}
    if isinstance(categories, Mapping):
        categories = [{"category": str(c), "items": n} for c, n in sorted(categories.items())]
    member_hashes = (split.get("members") or {}).get("hashes") or []
    unit = guarantee.get("unit") if guarantee["guarantee"] == "dp" else None
    out = {
        "documents": int(data.get("documents") or 0), "distinct_documents": data.get("distinct_documents"),
        "characters": data.get("characters"), "subjects": data.get("subjects"),
        "fingerprint": str(data.get("fingerprint") or "not recorded"), "source_format": data.get("source_format"),
        "unit_of_privacy": overrides.get("unit_of_privacy") or unit
        or "document (the unit the audit measures; no differential-privacy guarantee)",
        "domains": list(overrides.get("domains") or []),
        "personal_data_categories": list(categories or []),
        "split": {"rule": split.get("rule"), "seed": split.get("seed"), "holdout_fraction": split.get("holdout_fraction"),
                  "members": int((split.get("members") or {}).get("count") or 0),
                  "holdout": int((split.get("holdout") or {}).get("count") or 0),
                  "hash_list_digest": ("sha256:" + hashlib.sha256("\n".join(member_hashes).encode()).hexdigest())
                  if member_hashes else None},
    }
    for k in ("provenance", "legal_basis", "collection_period", "preprocessing"):
        out[k] = overrides.get(k, MISSING)
    return out


def _training_section(manifest: Mapping) -> dict:
    t = dict(manifest.get("training") or {})
    main = ("method", "trainable", "frozen", "steps", "tokens", "epochs", "trainable_parameters",
            "frozen_tensors_verified_identical", "final_loss")
    out = {"method": str(t.get("method") or "not recorded"), "trainable": str(t.get("trainable") or "not recorded"),
           "frozen": str(t.get("frozen") or "not recorded"), "steps": int(t.get("steps") or 0),
           "tokens": t.get("tokens"), "epochs": t.get("epochs"), "trainable_parameters": t.get("trainable_parameters"),
           "frozen_tensors_verified_identical": t.get("frozen_tensors_verified_identical"),
           "final_loss": t.get("final_loss"),
           "settings": _finite({k: v for k, v in t.items() if k not in main}),
           "router": _finite(dict(manifest.get("router") or {})),
           "architecture": _finite(dict(manifest.get("architecture") or {})),
           "software": _finite(dict(manifest.get("software") or {}))}
    return out


def _limitations(empirical: dict, guarantee: dict, extra: Iterable[str]) -> list[str]:
    out = ["Empirical attacks measure what these attacks, with these settings and this compute, could extract or "
           "infer: they are lower bounds on leakage, not guarantees. A pass does not prove that nothing can be "
           "extracted."]
    if guarantee["guarantee"] != "dp":
        out.append("No formal privacy guarantee: the expert was trained without differential privacy, so the "
                   "empirical results are the only evidence about leakage.")
    mem = empirical.get("membership")
    if mem:
        out.extend(mem["warnings"])
        grouped: dict[str, list[str]] = {}
        for aid, pair in mem["attacks"].items():
            t = pair["target"]
            if t["status"] != "ok":
                out.append(f"{aid} ({pair['name']}) was not run: {t.get('reason')}")
            for w in t.get("warnings") or []:
                grouped.setdefault(w, []).append(aid)
        out.extend(f"{', '.join(ids)}: {w}" for w, ids in grouped.items())
    else:
        out.append("Membership inference was not run.")
    ext = empirical.get("extraction")
    if ext:
        for aid, pair in ext["attacks"].items():
            t = pair["target"]
            if t["status"] != "ok":
                out.append(f"{aid} ({pair['name']}) was not run: {t.get('reason')}")
            elif pair["anchor"] is None:
                out.append(f"{aid}: not measured on the anchor alone; increases over the anchor are taken against 0")
            out.extend(f"{aid}: {w}" for w in t.get("warnings") or [])
    else:
        out.append("Training-data extraction was not run.")
    for cid, check in empirical["hygiene"]["checks"].items():
        if check.get("warning"):
            out.append(f"{cid}: {check['warning']}")
    if not empirical["hygiene"]["checks"]:
        out.append("The blind-baseline hygiene check was not run: member and non-member sets are assumed IID.")
    out.extend(extra)
    return list(dict.fromkeys(out))


def build_report(
    package: Any,
    *,
    anchor_digest: str,
    membership: Any = None,
    extraction: Any = None,
    hygiene: Any = None,
    epsilon_lower_bounds: Sequence[Mapping] = (),
    extraction_comparison: Mapping | None = None,
    audit: Mapping | None = None,
    intended_use: Mapping | None = None,
    data: Mapping | None = None,
    dpia: Mapping | None = None,
    limitations: Sequence[str] = (),
    policy: Any = None,
    budget: Mapping | None = None,
    reveal: bool = False,
    keyed_hashes: bool = False,
    include_scores: bool = True,
    package_path: str | None = None,
    anchor_path: str | None = None,
    now: dt.datetime | None = None,
    report_id: str | None = None,
    title: str | None = None,
) -> dict:
    """A validated report (schema SCHEMA_VERSION) for one expert package and its audit results.

    Args:
        package: the expert package directory, or an ExpertPackage already loaded (and so verified).
        anchor_digest: root digest of the anchor the audit ran against; must be the manifest's anchor.
        membership, extraction, hygiene, epsilon_lower_bounds, extraction_comparison: attack results (module
            docstring).
        audit: how the audit ran (seed, member/non-member sources, attack settings, timings, device...).
        intended_use: purpose, intended_users, out_of_scope (list), pool, owner, contact.
        data: overrides/additions to the data section: domains, personal_data_categories ({category: n}),
            unit_of_privacy, provenance, legal_basis, collection_period, preprocessing.
        dpia: necessity, proportionality, risk_owner, residual_risk, consultation, additional_measures.
        limitations: extra limitations (the builder adds the ones the results imply).
        policy: a Policy, a policy file path, or None for the shipped default: the report's verdict.
        budget: the owner's privacy-budget ledger figures for this dataset, if it shares them.
        reveal: keep raw examples (the report then says so prominently).
        keyed_hashes: per-item hashes in the results are HMACs under the owner's key (else removed).
        include_scores: keep per-example membership scores (the score histograms need them).
        package_path: the path recorded for the gate to re-verify (default: the package's absolute path).
        now, report_id, title: for reproducible documents.

    Raises:
        IntegrityError: the package fails verification or names another anchor.
        InputError: malformed results, or a DP block without epsilon, delta, unit and accountant.
    """
    from flexaudit.moe.expert import ExpertPackage, load_package
    from flexaudit.report.policy import Policy, load_policy
    from flexaudit.report.verdict import evaluation_block

    if not isinstance(package, ExpertPackage):
        package = load_package(Path(package))
    now = _utc(now)
    if not isinstance(policy, Policy):
        policy = load_policy(policy)
    redact = _Redactor(reveal=reveal, keyed_hashes=keyed_hashes)
    manifest = package.manifest
    subject = _subject(package, anchor_digest, package_path)
    subject["anchor"]["path"] = anchor_path
    guarantee = _guarantee_section(manifest.get("privacy"), budget)
    empirical = {
        "audit": _finite(dict(audit or {})),
        "membership": _finite(_membership_section(membership, redact, include_scores)),
        "extraction": _finite(_extraction_section(extraction, redact)),
        "hygiene": _finite(_hygiene_section(hygiene)),
        "epsilon_lower_bounds": _finite([dict(_as_dict(b)) for b in epsilon_lower_bounds]),
        "extraction_comparison": _finite(dict(extraction_comparison)) if extraction_comparison else None,
    }
    if empirical["membership"]:
        empirical["audit"].setdefault("n_members", empirical["membership"]["n_members"])
        empirical["audit"].setdefault("n_nonmembers", empirical["membership"]["n_nonmembers"])
    empirical["audit"].setdefault("attacks", sorted(
        list((empirical["membership"] or {}).get("attacks", {})) + list((empirical["extraction"] or {}).get("attacks", {}))
        + list(empirical["hygiene"]["checks"])))
    use = dict(intended_use or {})
    dpia = dict(dpia or {})
    report = {
        "schema_version": SCHEMA_VERSION,
        "document": {
            "id": report_id or f"urn:uuid:{uuid.uuid4()}",
            "title": title or f"Privacy audit of expert {package.name}",
            "generated_at": _iso(now),
            "tool": {"name": "flexaudit", "version": __version__},
            "software": _finite(dict((audit or {}).get("software") or {"flexaudit": __version__})),
            "policy": policy.identity(),
            "status": "draft",
            "reveal": bool(reveal),
            "redactions": sorted(redact.removed),
            "sign_off": {"name": None, "role": None, "date": None},
        },
        "subject": subject,
        "verdict": None,
        "intended_use": {"purpose": use.get("purpose", MISSING), "intended_users": use.get("intended_users", MISSING),
                         "out_of_scope": list(use.get("out_of_scope") or []), "pool": use.get("pool", MISSING),
                         "owner": use.get("owner", MISSING), "contact": use.get("contact", MISSING),
                         "opt_out": dict(OPT_OUT)},
        "data": _finite(_data_section(manifest, dict(data or {}), empirical["extraction"], guarantee)),
        "training": _training_section(manifest),
        "privacy_guarantee": guarantee,
        "empirical": empirical,
        "dpia": {k: dpia.get(k, MISSING) for k in ("necessity", "proportionality", "risk_owner", "residual_risk",
                                                    "consultation")}
        | {"additional_measures": list(dpia.get("additional_measures") or [])},
        "limitations": _limitations(empirical, guarantee, limitations),
    }
    report["verdict"] = evaluation_block(report, policy, now=now)
    validate(report)
    return report
