"""The HTML report in a real headless Chromium: every section and every figure renders.

Chromium is a system package (Debian: `apt-get install -y chromium`); the test is skipped only when
/usr/bin/chromium (or $FLEXAUDIT_CHROMIUM) is absent. Chromium runs fully offline: no network, no
first-run, no component updates, a fresh profile per run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from flexaudit.report.regulatory import SECTIONS
from flexaudit.report.render import render_report

CHROMIUM = os.environ.get("FLEXAUDIT_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)),
                                reason=f"Chromium not installed at {CHROMIUM} (Debian: apt-get install -y chromium)")

# Injected into a *test copy* of the report (the report itself forbids scripts by its CSP): measures, after
# load, every section's rendered box and every figure's decoded image, and writes the result into the DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  const sections = [...document.querySelectorAll('section[data-section]')].map(s => ({
    id: s.id, height: s.getBoundingClientRect().height, visible: getComputedStyle(s).display !== 'none'}));
  const figures = [...document.querySelectorAll('figure[data-figure]')].map(f => {
    const img = f.querySelector('img');
    return {name: f.dataset.figure, loaded: !!img && img.complete && img.naturalWidth > 0,
            width: img ? img.naturalWidth : 0, shown: img ? img.getBoundingClientRect().width : 0};
  });
  const pre = document.createElement('pre');
  pre.id = 'probe-result';
  pre.textContent = JSON.stringify({sections, figures, title: document.title,
                                    scripts: document.scripts.length});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


def _dump(tmp_path: Path, html: Path) -> str:
    proc = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", html.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_all_sections_and_figures_render_in_chromium(make_audit, tmp_path):
    a = make_audit("clinical", dp=True)
    html_path = render_report(a.audit, "html")["html"]
    html = html_path.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace("</body>", PROBE + "</body>"))
    dom = _dump(tmp_path, probe)
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert m, "the page did not finish loading"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    rendered = {s["id"]: s for s in result["sections"]}
    for anchor, _ in SECTIONS:
        assert anchor in rendered, anchor
        assert rendered[anchor]["visible"] and rendered[anchor]["height"] > 40, rendered[anchor]
    figures = {f["name"]: f for f in result["figures"]}
    assert set(figures) == {"roc", "scores", "extraction", "budget", "comparison"}
    for name, f in figures.items():
        assert f["loaded"] and f["width"] > 100 and f["shown"] > 100, (name, f)
    assert result["title"] == "Privacy audit of expert clinical"
    shot = _chromium(tmp_path, "--window-size=1200,2400", f"--screenshot={tmp_path / 'report.png'}", html_path.as_uri())
    assert shot.returncode == 0 and (tmp_path / "report.png").stat().st_size > 50_000


def test_markup_in_free_text_stays_text_in_chromium(tmp_path, clean_results):
    import pytest

    from flexaudit.errors import IntegrityError
    from flexaudit.report import write_report
    from flexaudit.report.testing import fake_report, make_package

    evil = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
    pkg = make_package(tmp_path / "pkg", name="clinical")
    use = {"purpose": evil, "intended_users": evil, "out_of_scope": [evil], "pool": "p", "owner": evil, "contact": "c"}
    write_report(tmp_path / "audit", fake_report(pkg, results=clean_results, title=f"Audit {evil}", intended_use=use))
    html_path = render_report(tmp_path / "audit", "html")["html"]
    dom = _dump(tmp_path, html_path)
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title.startswith("Audit &lt;img") and title != "pwned"  # no script ran
    assert dom.count("&lt;script&gt;") >= 4
    assert not re.search(r'<img\s[^>]*src="(?!data:)', dom) and "<script" not in dom  # no element was injected
    # an expert *name* with markup never reaches a report: it is refused where the manifest is read
    with pytest.raises(IntegrityError, match="not a valid name"):
        fake_report(make_package(tmp_path / "evil", name=evil), results=clean_results)


def _demo_results(workdir: Path, make_audit) -> dict:
    """A demo's results (DemoResult.as_dict()) around real rendered reports, with invented numbers."""
    from flexaudit.report.testing import fake_comparison

    audits, extraction = {}, {}
    for name, leaky in (("code", False), ("clinical", False), ("finance-leaky", True)):
        a = make_audit(name, leaky=leaky)
        report = render_report(a.audit, "html")["html"]
        failing = [{"rule_id": "PRIV-EXT-SAMPLED", "message": "upper bound 0.6 > max 0.2"}] if leaky else []
        figures = {"membership_auc": {"value": 0.9 if leaky else 0.52, "upper": 0.95, "anchor": 0.5, "samples": 150},
                   "sampled_extraction": {"value": 0.4 if leaky else 0.0, "upper": 0.5, "anchor": 0.0, "samples": 50},
                   "personal_data_leaked": None}
        audits[name] = {"figures": figures, "report": str(report),
                        "gate": {"decision": "fail" if leaky else "pass", "exit_code": int(leaky), "summary": "",
                                 "failing": failing}}
        extraction[name] = {"table": fake_comparison(leaky=leaky, name=name), "report": str(report)}
    domains = ["public", "code", "clinical"]
    rows = [{"label": label, "kind": kind, "perplexity": {d: 10.0 + i for i, d in enumerate(domains)}}
            for label, kind in (("anchor", "anchor"), ("anchor + code", "expert"), ("merged pool", "pool"),
                                ("pool without code", "opt-out"))]
    return {"workdir": str(workdir), "plan": {"preset": "tiny", "documents": 300, "policy": "quick"},
            "domains": domains, "rows": rows,
            "checks": [{"claim": "merged pool beats the anchor on code", "measured": "11.00 vs 11.00", "passed": False}],
            "privacy": {}, "audits": audits, "extraction": extraction,
            "pool": {"admitted": ["code", "clinical"], "refused": {"finance-leaky": {"exit_code": 1, "reason": "x"}}},
            "artifacts": {"page": str(workdir / "index.html"), "audits and reports": str(workdir / "audits")},
            "seconds": {"data": 1.0, "total": 42.0},
            "machine": {"threads": 2, "cpus": 2, "matmul_gflops_at_start": 230.0, "matmul_gflops_at_end": 228.0}}


def test_the_demo_page_renders_in_chromium_with_its_figure_and_working_links(make_audit, tmp_path):
    from flexaudit.demo import write_page

    workdir = tmp_path  # make_audit writes its audits under tmp_path/audits, beside the page
    page = workdir / "index.html"
    write_page(page, _demo_results(workdir, make_audit))
    html = page.read_text()
    assert "Content-Security-Policy" in html and "<script" not in html
    assert "built-in method" not in html  # every figure is a value, never a Python object's repr
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained: nothing from the network
    links = re.findall(r'href="([^"]+)"', html)
    assert "audits/finance-leaky/report.html" in links
    assert all((workdir / link).is_file() for link in links)  # every gate decision links to its report
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace("</body>", PROBE + "</body>"))
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', _dump(tmp_path, probe), re.S)
    assert m, "the page did not finish loading"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    sections = {s["id"]: s for s in result["sections"]}
    assert set(sections) == {"method", "extraction", "gate", "run"}
    assert all(s["visible"] and s["height"] > 40 for s in sections.values())
    (figure,) = result["figures"]
    assert figure["name"] == "extraction-table" and figure["loaded"] and figure["shown"] > 300
    assert result["title"] == "flexaudit demo: quick"
    table = re.search(r'<table id="extraction-table".*?</table>', html, re.S).group(0)
    assert table.count('data-owner="finance-leaky"') == 5 and "(90/150)" in table  # the leaky dense row, k/n
    assert "230 GFLOP/s at the start" in html
