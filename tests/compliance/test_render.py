"""Rendering: Jinja2 templates from package data, escaping, figures, Markdown, PDF."""

from __future__ import annotations

import builtins
import re

import pytest

from flexaudit.report.regulatory import SECTIONS
from flexaudit.report.render import environment, render_report, render_text

from ..conftest import invoke, one_error_line

EVIL = "<script>alert(1)</script>"


def test_html_self_contained_with_all_sections_and_figures(make_audit):
    a = make_audit("clinical", dp=True)
    written = render_report(a.audit, "html,md")
    html = written["html"].read_text()
    for anchor, title in SECTIONS:
        assert f'id="{anchor}"' in html and title in html
    assert html.count('src="data:image/svg+xml;base64,') == 5  # roc, scores, extraction, budget, comparison
    assert "Content-Security-Policy" in html and "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from the network
    assert "GDPR-35-7c" in html and "Art. 35(7)(a)" in html and "EDPB" in html  # DPIA + regulatory appendix
    assert sorted(p.name for p in (a.audit / "figures").iterdir()) == ["budget.svg", "comparison.svg", "extraction.svg", "roc.svg",
                                                                         "scores.svg"]


def test_markdown_for_pull_requests(make_audit):
    a = make_audit("leaky", leaky=True)
    md = render_report(a.audit, "md")["md"].read_text()
    assert md.startswith("# Privacy audit of expert leaky")
    for _, title in SECTIONS:
        assert f"## {title}" in md
    assert "| ❌ FAIL | `PRIV-EXT-DISC`" in md and "FAIL: 8 of 9 controls" in md


def test_markup_in_texts_is_escaped(tmp_path, clean_results):
    from flexaudit.report import write_report
    from flexaudit.report.testing import fake_report, fake_results, make_package

    pkg = make_package(tmp_path / "pkg", name="clinical")  # names with markup are refused when read (test_names)
    results = fake_results(reveal=True, seed=5)
    report = fake_report(pkg, results=results, reveal=True,
                         intended_use={"purpose": "[click](http://evil.example) **x** | y", "owner": EVIL},
                         limitations=[f"{EVIL} in a limitation"])
    write_report(tmp_path / "audit", report)
    written = render_report(tmp_path / "audit", "html,md")
    html, md = written["html"].read_text(), written["md"].read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>Ada Moreau</b>" not in html and "&lt;b&gt;Ada Moreau&lt;/b&gt;" in html  # revealed text, escaped
    assert 'id="reveal-warning"' in html and 'id="revealed-examples"' in html
    assert "<script" not in md and "&lt;script&gt;" in md
    assert "[click](http" not in md and r"\[click\](http" in md and r"\*\*x\*\* \| y" in md


def test_strict_undefined(make_audit):
    from jinja2 import UndefinedError

    env = environment("html")
    with pytest.raises(UndefinedError):
        env.from_string("{{ r.no_such_field }}").render(r={})


def test_templates_come_from_package_data():
    from flexaudit.report.resources import templates

    names = {p.name for p in templates().iterdir()}
    assert {"html", "md", "common"} <= names
    assert (templates() / "html" / "report.html.jinja").is_file()


def test_non_dp_report_explains_missing_budget_figure(make_audit):
    a = make_audit("clinical")
    html = render_text(a.report, "html")
    assert 'data-missing-figure="budget"' in html and "NO FORMAL GUARANTEE" in html
    assert html.count("data:image/svg+xml;base64,") == 4


def test_extraction_table_section_in_html_and_markdown(make_audit):
    a = make_audit("leaky", leaky=True)
    html = render_text(a.report, "html")
    table = re.search(r'<table id="comparison-table">(.*?)</table>', html, re.S).group(1)
    kinds = re.findall(r'<tr data-kind="([a-z-]+)">', table)
    assert kinds == ["anchor", "dense", "expert", "pool", "opt-out"]
    rows = {k: r for k, r in zip(kinds, re.findall(r'<tr data-kind="[a-z-]+">(.*?)</tr>', table, re.S))}
    assert "merged pool without clinical" in rows["opt-out"] and "public, code" in rows["opt-out"]
    assert "0.0% [0.0%, 2.4%] (0/150)" in rows["anchor"]  # a rate, its Clopper-Pearson interval, k/n
    assert "60.0% [" in rows["dense"] and "(90/150)" in rows["dense"]
    assert 'data-figure="comparison"' in html and 'data-missing-figure="comparison"' not in html
    assert re.search(r"personal-data prompts \([0-9,]+ items\)", html)  # the count, not a Python object
    md = render_text(a.report, "md")
    assert "### Extraction across models" in md
    assert re.search(r"\| dense fine-tune \| public \| 60\.0% \[[0-9.]+%, [0-9.]+%\] \(90/150\) \|", md)


def test_a_report_without_the_extraction_table_says_how_to_get_it(tmp_path, clean_results):
    from flexaudit.report import write_report
    from flexaudit.report.testing import fake_report, make_package

    pkg = make_package(tmp_path / "pkg", name="code")
    results = {k: v for k, v in clean_results.items() if k != "extraction_comparison"}
    write_report(tmp_path / "audit", fake_report(pkg, results=results))
    html = render_report(tmp_path / "audit", "html")["html"].read_text()
    assert 'data-missing-figure="comparison"' in html and "--dense-baseline" in html
    assert not (tmp_path / "audit" / "figures" / "comparison.svg").exists()


def test_report_command_formats_and_errors(make_audit, tmp_path):
    a = make_audit("clinical")
    result = invoke("report", a.audit, "--format", "md", "--out", tmp_path / "docs")
    assert result.exit_code == 0 and (tmp_path / "docs" / "report.md").is_file()
    result = invoke("report", a.audit, "--format", "docx")
    assert result.exit_code == 2 and "unknown report format docx" in one_error_line(result)
    result = invoke("report", tmp_path / "missing")
    assert result.exit_code == 2 and "audit directory not found" in one_error_line(result)


def test_pdf_needs_the_optional_extra(make_audit, monkeypatch):
    a = make_audit("clinical")
    real_import = builtins.__import__

    def no_weasyprint(name, *args, **kwargs):
        if name == "weasyprint" or name.startswith("weasyprint."):
            raise ImportError("No module named 'weasyprint'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weasyprint)
    result = invoke("report", a.audit, "--format", "html,pdf")
    assert result.exit_code == 2
    assert "pip install 'flexaudit[pdf]'" in one_error_line(result)
    assert not (a.audit / "report.html").exists()  # nothing half-written


def test_pdf_when_weasyprint_is_installed(make_audit):
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:  # not installed, or its system libraries (pango) are missing
        pytest.skip(f"the optional 'pdf' extra (weasyprint) is not usable here: {exc}")
    a = make_audit("clinical")
    pdf = render_report(a.audit, "pdf")["pdf"]
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000


def test_the_extraction_figure_keeps_its_key_off_the_bars(monkeypatch):
    """One key below all panels, naming every attack drawn in any of them: inside the last panel it covered the
    careless owner's tallest bars, and named only that panel's attacks."""
    from flexaudit.report import figures
    from flexaudit.report.testing import fake_comparison

    leaky = fake_comparison(leaky=True, name="finance-leaky")
    no_personal = fake_comparison(name="code")
    for row in no_personal["rows"]:  # an owner whose texts hold no personal data
        del row["rates"]["FA-EXT-PII"], row["rates"]["FA-EXT-PII-INF"]
    kept = []
    monkeypatch.setattr(figures, "_svg", lambda fig: kept.append(fig) or b"<svg/>")
    figures.draw_comparison({"finance-leaky's members": leaky, "code's members": no_personal})
    (fig,) = kept
    fig.canvas.draw()  # runs the layout
    (key,) = fig.legends
    assert [t.get_text() for t in key.get_texts()] == [name for _, name, _ in figures.COMPARED_ATTACKS]
    box = key.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.x1  # on the canvas
