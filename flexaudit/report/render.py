"""Rendering report.json into the documents people read: HTML (one self-contained file), Markdown, PDF.

Templates live in the `reports` package data (reports/templates/{html,md,common}), loaded through
importlib.resources so an installed wheel finds them. Both environments use StrictUndefined, so a field
a template expects but the report lacks fails loudly instead of rendering as blank.

Escaping: HTML templates autoescape every value. Markdown has no autoescape of its own: its environment
autoescapes too (values become HTML entities, which Markdown shows literally) and finalizes every
printed value through `md_escape` (emphasis, links, code, tables); macro output, already escaped, passes
through. The HTML carries a Content-Security-Policy that forbids scripts and any network access, and its
figures are base64 SVG images, which cannot run code.

PDF is rendered from the HTML by WeasyPrint, an optional extra (`pip install 'flexaudit[pdf]'`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

from flexaudit.errors import InputError
from flexaudit.report import figures as F
from flexaudit.report import metrics as M
from flexaudit.report.filters import interval, md_escape, num, pct, short_digest, skipped
from flexaudit.report.regulatory import CAVEAT, OBLIGATIONS, SECTIONS

FORMATS = ("html", "md", "pdf")
MISSING_TEXT = "[More Information Needed]"
TEMPLATES = {"html": "html/report.html.jinja", "md": "md/report.md.jinja"}


class _TraversableLoader:
    """A Jinja loader over an importlib.resources Traversable (works inside wheels and zips)."""

    def __init__(self, root):
        self.root = root

    def __call__(self, name: str):  # FunctionLoader protocol
        node = self.root
        for part in name.split("/"):
            if part in ("", ".", ".."):
                return None
            node = node / part
        if not node.is_file():
            return None
        return node.read_text(encoding="utf-8")


def _md_finalize(value):
    from markupsafe import Markup

    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup(MISSING_TEXT.replace("[", "\\[").replace("]", "\\]"))
    return Markup(md_escape(value))


@functools.lru_cache(maxsize=None)
def environment(kind: str):
    """The Jinja2 environment for 'html' or 'md' templates; one per kind and process, so each template is
    compiled once (they are package data and never change while the process runs)."""
    from jinja2 import Environment, FunctionLoader, StrictUndefined

    from flexaudit.report.resources import templates

    env = Environment(loader=FunctionLoader(_TraversableLoader(templates())), undefined=StrictUndefined,
                      autoescape=True, finalize=_md_finalize if kind == "md" else None,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=num, pct=pct, interval=interval, short=short_digest, skipped=skipped)
    env.globals.update(MISSING=MISSING_TEXT)
    return env


# ---------------------------------------------------------------------------------------------- context
def _completeness(report: dict) -> dict:
    fields = {
        "intended use: purpose": report["intended_use"]["purpose"],
        "intended use: intended users": report["intended_use"]["intended_users"],
        "intended use: pool": report["intended_use"]["pool"],
        "intended use: owner": report["intended_use"]["owner"],
        "intended use: contact": report["intended_use"]["contact"],
        "data: provenance": report["data"]["provenance"],
        "data: legal basis": report["data"]["legal_basis"],
        "data: collection period": report["data"]["collection_period"],
        "data: preprocessing": report["data"]["preprocessing"],
        **{f"DPIA: {k.replace('_', ' ')}": report["dpia"][k]
           for k in ("necessity", "proportionality", "risk_owner", "residual_risk", "consultation")},
        "sign-off: name": report["document"]["sign_off"]["name"],
        "sign-off: role": report["document"]["sign_off"]["role"],
        "sign-off: date": report["document"]["sign_off"]["date"],
    }
    missing = [k for k, v in fields.items() if v in (None, "")]
    return {"filled": len(fields) - len(missing), "total": len(fields), "missing": missing}


def membership_fprs(report: dict) -> list[float]:
    mem = report["empirical"]["membership"] or {"attacks": {}}
    return sorted({t["target_fpr"] for pair in mem["attacks"].values() if pair["target"]["status"] == "ok"
                   for t in pair["target"]["tpr_at_fpr"]}, reverse=True)


def _membership_rows(report: dict) -> list[dict]:
    mem = report["empirical"]["membership"]
    if not mem:
        return []
    fprs = membership_fprs(report)
    rows = []
    for attack_id, pair in mem["attacks"].items():
        t, a = pair["target"], pair["anchor"]
        a_ok = bool(a and a["status"] == "ok")
        row = {"id": attack_id, "name": pair["name"], "citation": pair.get("citation", ""), "status": t["status"],
               "reason": t.get("reason"), "auc": t.get("auc"), "auc_ci": t.get("auc_ci"),
               "anchor_auc": a["auc"] if a_ok else None,
               "anchor_note": "anchor" if a_ok else "chance level 0.5 (not run on the anchor alone)",
               "tpr": [], "warnings": t.get("warnings") or [], "skipped": skipped(t, "scores")}
        if t["status"] == "ok":
            for f in fprs:
                te = M._tpr_entry(t, f)
                ae = M._tpr_entry(a, f) if a_ok else None
                row["tpr"].append({"fpr": f, "tpr": te["tpr"] if te else None, "ci": te["tpr_ci"] if te else None,
                                   "anchor": ae["tpr"] if ae else None})
        rows.append(row)
    return rows


def _extraction_rows(report: dict) -> list[dict]:
    ext = report["empirical"]["extraction"]
    if not ext:
        return []
    rows = []
    for attack_id, pair in ext["attacks"].items():
        t = pair["target"]
        base = {"id": attack_id, "name": pair["name"], "citation": pair.get("citation", ""), "status": t["status"],
                "reason": t.get("reason"), "warnings": t.get("warnings") or [], "skipped": skipped(t)}
        if t["status"] != "ok":
            rows.append({**base, "metric": "not run", "value": None, "ci": None, "k": None, "n": None,
                         "anchor": None, "anchor_ci": None, "detail": t.get("reason") or ""})
            continue
        a = pair["anchor"] if pair["anchor"] and pair["anchor"].get("status", "ok") == "ok" else None
        if attack_id == "FA-EXT-CANARY":
            eps = t.get("epsilon_one_run") or {}
            rows.append({**base, "metric": "max exposure (bits)", "value": t["max_exposure"], "ci": None, "k": None,
                         "n": t["n_canaries"], "anchor": a["max_exposure"] if a else None, "anchor_ci": None,
                         "detail": f"mean exposure {num(t['mean_exposure'])} bits of at most {num(t['max_estimable_bits'])}; "
                                   f"ranked first: {t['top_ranked']['k']}/{t['top_ranked']['n']}; one-run epsilon lower "
                                   f"bound {num(eps.get('epsilon'))}"})
            continue
        if attack_id == "FA-EXT-PROB":
            for q, entry in sorted(t["by_queries"].items(), key=lambda kv: int(kv[0])):
                ae = (a or {}).get("by_queries", {}).get(q) if a else None
                r = entry["extractable"]
                rows.append({**base, "metric": f"(n, p)-extractable within {q} queries", "value": r["value"],
                             "ci": r["ci"], "k": r["k"], "n": r["n"],
                             "anchor": ae["extractable"]["value"] if ae else None,
                             "anchor_ci": ae["extractable"]["ci"] if ae else None,
                             "detail": f"expected rate {pct(entry['expected_rate'])}"})
            continue
        field, label, detail = {
            "FA-EXT-DISC": ("exact", "exact-match rate", f"mean token match {pct(t.get('mean_token_match'))}"),
            "FA-EXT-SAMPLED": ("extracted", "extracted rate (similarity >= threshold)",
                               f"mean best similarity {num(t.get('mean_best_similarity'))}"),
            "FA-EXT-PII": ("leaked", "personal-data items leaked", f"{t.get('n_prompts', '?')} prompts, "
                                                                    f"{t.get('n_generations', '?')} generations"),
            "FA-EXT-PII-INF": ("inferred", "personal-data values inferred among candidates",
                               f"{t.get('n_trials', '?')} trials, chance {pct(t.get('chance'))}"),
        }.get(attack_id, (None, attack_id, ""))
        r = t.get(field) if field else None
        ar = a.get(field) if (a and field) else None
        rows.append({**base, "metric": label, "value": r["value"] if r else None, "ci": r["ci"] if r else None,
                     "k": r["k"] if r else None, "n": r["n"] if r else None,
                     "anchor": ar["value"] if ar else None, "anchor_ci": ar["ci"] if ar else None, "detail": detail})
    for row in rows:  # the attack library's count of unusable documents, prompts or canaries, in every row
        if row["status"] == "ok" and row["skipped"]:
            row["detail"] = f"{row['detail']}; {row['skipped']}" if row["detail"] else row["skipped"]
    return rows


def _comparison(report: dict) -> dict | None:
    table = report["empirical"].get("extraction_comparison")
    return comparison_rows(table) if table else None


def comparison_rows(table: dict) -> dict:
    """An extraction table (report.json's empirical.extraction_comparison) as the templates print it: one row
    per model, one cell per attack (None where the attack did not run)."""
    rows = []
    for row in table["rows"]:
        cells = []
        for attack_id, _, _ in F.COMPARED_ATTACKS:
            r = row["rates"].get(attack_id)
            cells.append({"value": r["value"], "ci": r["ci"], "k": r["k"], "n": r["n"]} if r else None)
        rows.append({"label": row["label"], "kind": row["kind"], "experts": row["experts"], "cells": cells})
    return {"documents": table["documents"], "prompts": table["prompts"], "personal_items": table["personal_data_items"],
            "trials": table.get("inference_trials", 0),
            "settings": table["settings"], "attacks": [name for _, name, _ in F.COMPARED_ATTACKS], "rows": rows}


def _key_figures(report: dict) -> list[dict]:
    out = []
    auc = M.worst(M.membership_auc(report))
    if auc:
        out.append({"label": f"Membership inference AUC (worst: {auc.attack_id})", "value": num(auc.value),
                    "ci": f"[{num(auc.lower)}, {num(auc.upper)}]", "anchor": f"{num(auc.anchor)} ({auc.anchor_source})"})
    tpr = M.worst(M.membership_tpr(report, fpr=0.01))
    if tpr:
        out.append({"label": f"TPR at 1% FPR (worst: {tpr.attack_id})", "value": pct(tpr.value),
                    "ci": f"[{pct(tpr.lower)}, {pct(tpr.upper)}]", "anchor": f"{pct(tpr.anchor)} ({tpr.anchor_source})"})
    for attack_id, q, label in (("FA-EXT-DISC", None, "Discoverable extraction (exact match)"),
                                ("FA-EXT-SAMPLED", None, "Sampled extraction"),
                                ("FA-EXT-PROB", 100, "Extractable within 100 queries"),
                                ("FA-EXT-PII", None, "Personal-data items leaked"),
                                ("FA-EXT-PII-INF", None, "Personal-data values inferred")):
        m = M.extraction_rate(report, attack_id, queries=q)
        if m and m.measured:
            out.append({"label": label, "value": pct(m.value), "ci": f"[{pct(m.lower)}, {pct(m.upper)}]",
                        "anchor": pct(m.anchor) if m.anchor is not None else "not measured"})
    c = M.canary_exposure(report)
    if c and c.measured:
        out.append({"label": "Largest canary exposure", "value": f"{num(c.value)} bits", "ci": "n/a",
                    "anchor": f"{num(c.anchor)} bits" if c.anchor is not None else "not measured"})
    g = report["privacy_guarantee"]
    out.append({"label": "Formal guarantee", "value": f"epsilon {num(g['epsilon'])}" if g["guarantee"] == "dp" else "none",
                "ci": "n/a", "anchor": "n/a"})
    return out


def _dpia(report: dict) -> dict:
    """The DPIA section's derived statements (GDPR Art. 35(7)(a)-(d), EDPB Opinion 28/2024)."""
    e, d, use = report["subject"]["expert"], report["data"], report["intended_use"]
    controls = report["verdict"]["controls"]
    leak = [c for c in controls if c["rule_id"].startswith(("PRIV-EXT", "PRIV-MIA"))]
    failing = [c["rule_id"] for c in leak if c["status"] in ("fail", "waived")]
    unknown = [c["rule_id"] for c in leak if c["status"] in ("inconclusive", "skipped")]
    domains = ", ".join(d["domains"]) or "unspecified domains"
    description = (f"The data owner trains expert {e['name']} on {d['documents']:,} documents ({domains}) against the "
                   f"frozen public anchor {short_digest(report['subject']['anchor']['root_digest'])}; only the expert's "
                   f"{e['tensors']} tensors ({e['parameters']:,} parameters) leave the owner, bound to root digest "
                   f"{e['root_digest']}. Purpose: {use['purpose'] or MISSING_TEXT}")
    if not leak:
        anonymity = ("No extraction or membership-inference control was evaluated: the report holds no evidence for "
                     "the anonymity test of EDPB Opinion 28/2024.")
    elif failing:
        anonymity = (f"The evidence shows extraction or membership inference above the policy's limits ({', '.join(failing)}): "
                     "under EDPB Opinion 28/2024 the expert cannot be considered anonymous and its weights are "
                     "personal data.")
    elif unknown:
        anonymity = (f"The evidence is incomplete ({', '.join(unknown)} not decided): the anonymity test of EDPB Opinion "
                     "28/2024 cannot be concluded from this audit.")
    else:
        anonymity = ("The measured likelihood of extraction and membership inference is within the policy's limits "
                     "relative to the public anchor. Under EDPB Opinion 28/2024 this is evidence towards, not proof of, "
                     "anonymity: the assessment is case by case, and empirical attacks are lower bounds.")
    g = report["privacy_guarantee"]
    measures = [g["statement"],
                f"Admission gate: policy {report['verdict']['policy']['name']} ({short_digest(report['verdict']['policy']['digest'])}), "
                "thresholds tested on upper confidence bounds, fail closed.",
                "Only the expert's weights are shared (safetensors, digests verified); attention, embeddings and the "
                "public expert stay frozen and identical to the anchor.",
                "Opt-out: the expert can be removed from the pool and deactivated at inference without retraining; "
                "every admission and removal is recorded in a hash-chained log.",
                *report["dpia"]["additional_measures"]]
    return {"description": description, "anonymity": anonymity, "measures": measures, "failing": failing,
            "undecided": unknown}


def build_context(report: dict, *, figures: dict[str, bytes | None], signature: dict | None,
                  report_digest: str) -> dict:
    obligations = []
    for o in OBLIGATIONS:
        od = o.as_dict()
        od["statuses"] = {c["rule_id"]: c["status"] for c in report["verdict"]["controls"] if c["rule_id"] in o.controls}
        od["section_titles"] = [dict(SECTIONS)[s] for s in o.sections]
        obligations.append(od)
    return {
        "r": report, "digest": report_digest, "sections": SECTIONS,
        "figures": {k: F.data_uri(v) for k, v in figures.items()}, "figure_titles": F.TITLES,
        "membership_rows": _membership_rows(report), "membership_fprs": membership_fprs(report),
        "extraction_rows": _extraction_rows(report), "comparison": _comparison(report),
        "key_figures": _key_figures(report), "completeness": _completeness(report), "dpia": _dpia(report),
        "obligations": obligations, "caveat": CAVEAT, "signature": signature,
        "examples": _examples(report),
    }


def _examples(report: dict) -> list[dict]:
    """Raw text examples (present only in reports generated with --reveal)."""
    out = []
    if not report["document"]["reveal"] or not report["empirical"]["extraction"]:
        return out
    for attack_id, pair in report["empirical"]["extraction"]["attacks"].items():
        for ex in pair["target"].get("examples") or []:
            out.append({"attack": attack_id, "fields": [(k, str(v)) for k, v in ex.items() if k != "sha256"]})
    return out


# ---------------------------------------------------------------------------------------------- rendering
def render_text(report: dict, kind: str, *, figures: dict[str, bytes | None] | None = None,
                signature: dict | None = None) -> str:
    """The HTML or Markdown document for `report` (a validated dict)."""
    from flexaudit.report.io import report_digest

    if kind not in TEMPLATES:
        raise InputError(f"unknown report format {kind!r}: use html or md")
    figures = figures if figures is not None else F.make_figures(report)
    ctx = build_context(report, figures=figures, signature=signature, report_digest=report_digest(report))
    return environment(kind).get_template(TEMPLATES[kind]).render(**ctx)


def html_to_pdf(html: str, out: Path) -> None:
    try:
        from weasyprint import HTML
    except (ImportError, OSError):
        raise InputError("PDF output needs WeasyPrint: pip install 'flexaudit[pdf]' (or choose --format html,md)") from None
    pdf = HTML(string=html).write_pdf()
    from flexaudit.fsutil import atomic_write_bytes

    atomic_write_bytes(out, pdf)


def parse_formats(text: str | Iterable[str]) -> list[str]:
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in FORMATS]
    if bad or not items:
        raise InputError(f"unknown report format {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(items))


def render_report(audit_dir: str | Path, formats: str | Iterable[str] = ("html", "md"), *,
                  out_dir: str | Path | None = None) -> dict[str, Path]:
    """Render AUDIT_DIR/report.json into report.{html,md,pdf} (in out_dir, default the audit dir) and
    figures/*.svg; returns {format: path}. The report is validated (and migrated) first."""
    from flexaudit.fsutil import atomic_write_text
    from flexaudit.report.io import read_report, report_path
    from flexaudit.report.signature import signature_status

    formats = parse_formats(formats)
    path = report_path(audit_dir)
    report = read_report(path)
    out_dir = Path(out_dir) if out_dir is not None else path.parent
    if "pdf" in formats:  # fail before writing anything when the extra is missing
        try:
            import weasyprint  # noqa: F401
        except (ImportError, OSError):
            raise InputError("PDF output needs WeasyPrint: pip install 'flexaudit[pdf]' (or choose --format html,md)") from None
    figures = F.make_figures(report)
    signature = signature_status(path.parent)
    written: dict[str, Path] = {}
    F.write_figures(out_dir, report, figures)
    html = None
    if "html" in formats or "pdf" in formats:
        html = render_text(report, "html", figures=figures, signature=signature)
    if "html" in formats:
        atomic_write_text(out_dir / "report.html", html)
        written["html"] = out_dir / "report.html"
    if "md" in formats:
        atomic_write_text(out_dir / "report.md", render_text(report, "md", figures=figures, signature=signature))
        written["md"] = out_dir / "report.md"
    if "pdf" in formats:
        html_to_pdf(html, out_dir / "report.pdf")
        written["pdf"] = out_dir / "report.pdf"
    return written


__all__ = ["render_report", "render_text", "environment", "parse_formats", "FORMATS"]
