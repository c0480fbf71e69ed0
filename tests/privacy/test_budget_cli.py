"""`flexaudit budget ...`: printed values, --json, and the exit-code contract (0 ok, 2 invalid)."""

from __future__ import annotations

import json

import pytest

from flexaudit.privacy import Ledger, Segment

from ..conftest import invoke, one_error_line

FP = "hmac-sha256:" + "c3" * 32
T1B = ["--sample-rate", "0.04", "--noise-multiplier", "1.5", "--steps", "2249", "--delta", "1e-5"]


def test_epsilon_table_shows_value_accountant_version_and_cross_check():
    result = invoke("budget", "epsilon", *T1B)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "6.7774" in out  # T1b, Opacus test_prv_accountant: 6.777395712150674
    assert "prv (opacus 1.6" in out and "pld (dp-accounting" in out
    assert "6.7671" in out and "agree" in out and "DISAGREE" not in out
    assert "1e-05" in out


def test_epsilon_json_is_json_only():
    result = invoke("budget", "epsilon", *T1B, "--accountant", "rdp", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["epsilon"] == pytest.approx(7.3273, abs=1e-4)  # dp.md T1b, Opacus RDP column
    assert data["accountant"]["name"] == "rdp" and data["accountant"]["library"] == "opacus"
    assert data["cross_check"]["reference"]["name"] == "pld"
    assert data["cross_check"]["reference_epsilon"] == pytest.approx(6.7671, abs=1e-4)
    assert data["cross_check"]["agree"] is True and data["fallback_reason"] is None
    assert (data["sample_rate"], data["noise_multiplier"], data["steps"], data["delta"]) == (0.04, 1.5, 2249, 1e-5)


def test_noise_json():
    result = invoke("budget", "noise", "--sample-rate", "0.02", "--steps", "50", "--delta", "1e-5",
                    "--target-epsilon", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert 3 - 0.01 <= data["epsilon"] <= 3
    assert data["noise_multiplier"] == pytest.approx(0.7179, abs=1e-3)
    assert data["accountant"]["name"] == "prv" and data["cross_check"]["agree"] is True


def test_noise_table():
    result = invoke("budget", "noise", "--sample-rate", "0.02", "--steps", "50", "--delta", "1e-5",
                    "--target-epsilon", "3", "--accountant", "rdp")
    assert result.exit_code == 0, result.output
    assert "noise multiplier" in result.stdout and "(target 3)" in result.stdout and "rdp (opacus" in result.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["epsilon", "--sample-rate", "1.5", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"], "sample rate"),
        (["epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "-4", "--delta", "1e-5"], "steps"),
        (["epsilon", "--sample-rate", "0.1", "--noise-multiplier", "0", "--steps", "10", "--delta", "1e-5"], "noise multiplier"),
        (["epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "1"], "delta"),
        (["noise", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5", "--target-epsilon", "0"], "unreachable"),
        (["noise", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-6", "--target-epsilon", "0.1",
          "--accountant", "rdp"], "unreachable"),
        (["delta", "--units", "0"], "privacy units"),
    ],
)
def test_invalid_or_impossible_requests_exit_2_with_one_line(args, words):
    result = invoke("budget", *args)
    assert result.exit_code == 2
    assert words in one_error_line(result)
    assert result.stdout == ""


def test_unknown_accountant_is_a_usage_error():
    result = invoke("budget", "epsilon", *T1B, "--accountant", "gdp")
    assert result.exit_code == 2


def test_fallback_is_automatic_and_stated():
    args = ["--sample-rate", "0.5", "--noise-multiplier", "0.3", "--steps", "1000", "--delta", "1e-5"]
    result = invoke("budget", "epsilon", *args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accountant"]["name"] == "rdp" and data["requested_accountant"] == "prv"
    assert [f["accountant"] for f in data["fallback"]["failed"]] == ["prv", "pld"]
    assert "beyond" in data["fallback_reason"] and data["cross_check"]["agree"] is None
    # the old opt-in flag is still accepted and changes nothing
    again = invoke("budget", "epsilon", *args, "--allow-rdp-fallback", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["epsilon"] == data["epsilon"]


# Issue 15: a report from another privacy tool asked for delta 1.1e-18, where PRV cannot resolve delta in float64
# and PLD's truncated tail mass exceeds it; the command used to exit 2 with no number.
ISSUE_15 = ["--sample-rate", "0.00033", "--noise-multiplier", "4", "--steps", "10000", "--delta", "1.1e-18"]


def test_issue_15_tiny_delta_gives_a_number_and_names_the_accountant():
    from flexaudit.privacy import epsilon

    result = invoke("budget", "epsilon", *ISSUE_15)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # the table wraps long cells
    assert "rdp (opacus" in out and "requested prv" in out
    assert "prv failed" in out and "pld failed" in out
    data = json.loads(invoke("budget", "epsilon", *ISSUE_15, "--json").stdout)
    figure = f"{data['epsilon']:.4f}"
    assert figure in out
    rdp = epsilon(sample_rate=0.00033, noise_multiplier=4, steps=10000, delta=1.1e-18, accountant="rdp")
    assert data["epsilon"] >= rdp and data["fallback"]["evaluated_delta"] < 1.1e-18
    assert data["accountant"]["name"] == "rdp" and data["delta"] == 1.1e-18


def test_noise_search_names_the_accountant_that_produced_its_epsilon():
    result = invoke("budget", "noise", "--sample-rate", "0.01", "--steps", "100", "--delta", "1e-6",
                    "--target-epsilon", "150", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accountant"]["name"] == "rdp" and data["requested_accountant"] == "prv"
    assert data["epsilon"] <= 150 and "beyond" in data["fallback"]["failed"][0]["reason"]


def test_default_delta_command():
    result = invoke("budget", "delta", "--units", "60000", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["delta"] == 1e-6


def test_ledger_without_a_file(tmp_path):
    result = invoke("budget", "ledger", "--db", tmp_path / "none.db")
    assert result.exit_code == 0 and "no ledger" in result.stdout
    data = json.loads(invoke("budget", "ledger", "--db", tmp_path / "none.db", "--json").stdout)
    assert data["exists"] is False and data["datasets"] == []
    assert not (tmp_path / "none.db").exists()


def test_ledger_and_cap(tmp_path):
    db = tmp_path / "ledger.db"
    with Ledger(db) as led:
        led.plan_run(owner="clinic", dataset=FP, expert="notes", segments=[Segment(1.0, 0.01, 100)], delta=1e-5, run_id="r1")
        led.record_release("r1", [Segment(1.0, 0.01, 100)])
        led.plan_run(owner="bank", dataset=FP, expert="ledger", segments=None, delta=None, run_id="r2")
        led.record_release("r2", None)
    cap = invoke("budget", "cap", "--db", db, "--owner", "clinic", "--dataset", FP, "--epsilon", "4", "--delta", "1e-5", "--json")
    assert cap.exit_code == 0, cap.output
    assert json.loads(cap.stdout)["epsilon"] == 4.0
    data = json.loads(invoke("budget", "ledger", "--db", db, "--json").stdout)
    by_owner = {d["owner"]: d for d in data["datasets"]}
    assert by_owner["clinic"]["guarantee"] == "dp" and by_owner["clinic"]["cap"] == {"epsilon": 4.0, "delta": 1e-5}
    assert by_owner["clinic"]["epsilon"] > 0 and by_owner["clinic"]["accountant"]["name"] == "prv"
    assert by_owner["bank"]["guarantee"] == "no formal guarantee" and by_owner["bank"]["epsilon"] is None
    assert {r["run_id"] for r in data["runs"]} == {"r1", "r2"}
    text = invoke("budget", "ledger", "--db", db, "--runs")
    assert text.exit_code == 0
    assert "no formal guarantee" in text.stdout and "remaining" in text.stdout and FP in text.stdout
    only = json.loads(invoke("budget", "ledger", "--db", db, "--owner", "bank", "--json").stdout)
    assert [d["owner"] for d in only["datasets"]] == ["bank"] and [r["run_id"] for r in only["runs"]] == ["r2"]


def test_cap_rejects_bad_values(tmp_path):
    result = invoke("budget", "cap", "--db", tmp_path / "l.db", "--owner", "o", "--dataset", FP, "--epsilon", "-1", "--delta", "1e-5")
    assert result.exit_code == 2 and "cap" in one_error_line(result)


def test_corrupted_ledger_exits_2_with_one_line(tmp_path):
    db = tmp_path / "ledger.db"
    db.write_bytes(b"garbage" * 1000)
    result = invoke("budget", "ledger", "--db", db)
    assert result.exit_code == 2 and "not a readable flexaudit ledger" in one_error_line(result)
    assert db.read_bytes() == b"garbage" * 1000
