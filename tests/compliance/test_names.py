"""Names read from files another party wrote are checked when read: a path, markup, a control character or
nothing at all is an integrity failure (exit 3) in one line, wherever the name comes from."""

from __future__ import annotations

import json
import shutil

import pytest

from flexaudit.errors import InputError, IntegrityError
from flexaudit.names import check_expert_name, check_read_name

from ..conftest import invoke, one_error_line

BAD = ["../../../tmp/escaped", "<script>alert(1)</script>", "ok\x1b[31mred", "", "a/b", "x" * 65, 7]


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_name_read_from_a_file_is_an_integrity_failure(bad):
    with pytest.raises(IntegrityError, match="not a valid name") as caught:
        check_read_name(bad, what="the expert name", where="manifest.json")
    assert "\x1b" not in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize("good", ["clinical", "finance-2", "a.b_c", "X" * 64])
def test_good_names_pass(good):
    assert check_read_name(good, what="name", where="f") == good


def test_typed_names_are_input_errors_and_slot_names_are_reserved():
    with pytest.raises(InputError, match="invalid expert name"):
        check_expert_name("<b>x</b>")
    with pytest.raises(InputError, match="reserved"):
        check_expert_name("Public")


def _edit_json(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("bad", ["<script>alert(1)</script>", "../../../tmp/escaped"])
def test_merge_refuses_an_edited_manifest(tiny_anchor, clinical_expert, tmp_path, bad):
    package = tmp_path / "edited"
    shutil.copytree(clinical_expert, package)
    _edit_json(package / "manifest.json", lambda m: m.update(name=bad))
    result = invoke("merge", "--anchor", tiny_anchor, package, "--out", tmp_path / "merged")
    assert result.exit_code == 3 and "not a valid name" in one_error_line(result)
    assert not (tmp_path / "merged").exists()


def test_pool_admit_refuses_a_report_naming_a_bad_expert(make_audit, tmp_path):
    a = make_audit("clinical")
    _edit_json(a.audit / "report.json", lambda r: r["subject"]["expert"].update(name="<script>alert(1)</script>"))
    assert invoke("pool", "init", tmp_path / "pool").exit_code == 0
    result = invoke("pool", "admit", tmp_path / "pool", a.package, "--audit", a.audit)
    assert result.exit_code == 3 and "not a valid name" in one_error_line(result)
    listed = invoke("pool", "list", tmp_path / "pool", "--json")
    assert "script" not in listed.output


def test_a_merged_pool_or_checkpoint_naming_a_bad_expert_is_refused(tiny_anchor, clinical_expert, tmp_path):
    merged = tmp_path / "merged"
    assert invoke("merge", "--anchor", tiny_anchor, clinical_expert, "--out", merged).exit_code == 0
    data = tmp_path / "d.txt"
    data.write_text("some held-out text to score for the test")
    _edit_json(merged / "flexaudit.json", lambda p: p["experts"][1].update(name="../x"))
    result = invoke("eval", merged, "--data", f"d={data}", "--device", "cpu")
    assert result.exit_code == 3 and "not a valid name" in one_error_line(result)
    (merged / "flexaudit.json").unlink()  # now a plain checkpoint: its config names the experts
    _edit_json(merged / "config.json", lambda c: c.update(expert_names=["public", "bad\x07bell"]))
    result = invoke("eval", merged, "--data", f"d={data}", "--device", "cpu")
    assert result.exit_code == 3 and "config.json" in one_error_line(result)


def test_a_policy_with_a_bad_waiver_id_is_refused(tmp_path):
    from flexaudit.report.policy import parse_policy

    text = ('format = "flexaudit-policy/1"\nname = "p"\n[controls.PRIV-MIA-AUC]\nmax = 0.6\n[[waivers]]\n'
            'id = "<img src=x>"\nrule = "PRIV-MIA-AUC"\npackage_root_digest = "sha256:' + "0" * 64 + '"\n'
            'reason = "r"\napprover = "a"\nexpires = "2030-01-01"\n')
    with pytest.raises(IntegrityError, match="waiver id"):
        parse_policy(text.encode(), source="p.toml")
