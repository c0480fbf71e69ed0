"""The privacy-budget ledger: composition, caps, the release protocol, persistence, concurrency."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest

from flexaudit.errors import InputError, IntegrityError, PolicyViolation
from flexaudit.privacy import (
    NO_FORMAL_GUARANTEE,
    SCHEMA_VERSION,
    Ledger,
    Segment,
    default_ledger_path,
    epsilon_of_history,
)
from flexaudit.privacy import ledger as ledger_module

FP = "hmac-sha256:" + "a1" * 32
FP2 = "hmac-sha256:" + "b2" * 32
RUN = Segment(1.0, 0.01, 100)  # cheap to account


@pytest.fixture
def db(tmp_path):
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(db):
    with Ledger(db) as led:
        yield led


def release(led, run_id, segments=(RUN,), *, owner="clinic", dataset=FP, delta=1e-5, unit="document", expert="notes"):
    led.plan_run(owner=owner, dataset=dataset, expert=expert, segments=None if segments is None else list(segments),
                 delta=None if segments is None else delta, unit=unit, run_id=run_id)
    return led.record_release(run_id, None if segments is None else list(segments), package_digest=f"sha256:{run_id}")


def test_default_path_is_owner_home(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEXAUDIT_HOME", str(tmp_path / "home"))
    assert default_ledger_path() == tmp_path / "home" / "ledger.db"
    with Ledger() as led:
        assert led.path == tmp_path / "home" / "ledger.db" and led.schema_version() == SCHEMA_VERSION
    assert Ledger.exists()


def test_runs_on_one_dataset_compose(ledger):
    release(ledger, "r1", [Segment(1.0, 0.01, 100)], delta=1e-5)
    release(ledger, "r2", [Segment(2.0, 0.05, 50)], delta=1e-6)
    release(ledger, "other-dataset", [Segment(0.8, 0.1, 100)], dataset=FP2)
    release(ledger, "other-owner", [Segment(0.8, 0.1, 100)], owner="bank")
    total = ledger.total(owner="clinic", dataset=FP)
    assert total.guarantee == "dp" and total.released_runs == 2 and total.unit == "document"
    # one composition of both histories, at the smallest delta any released run used (no summing)
    assert total.delta == 1e-6 and total.accountant == "prv"
    expected = epsilon_of_history([Segment(1.0, 0.01, 100), Segment(2.0, 0.05, 50)], delta=1e-6)
    assert total.epsilon == pytest.approx(expected, rel=1e-12)
    alone = [epsilon_of_history([s], delta=1e-6) for s in (Segment(1.0, 0.01, 100), Segment(2.0, 0.05, 50))]
    assert max(alone) < total.epsilon < sum(alone)
    assert {(t.owner, t.dataset) for t in ledger.datasets()} == {("clinic", FP), ("clinic", FP2), ("bank", FP)}
    assert [t.owner for t in ledger.datasets(owner="bank")] == ["bank"]


def test_planned_runs_spend_nothing(ledger):
    ledger.plan_run(owner="clinic", dataset=FP, expert="notes", segments=[RUN], delta=1e-5, run_id="p1")
    total = ledger.total(owner="clinic", dataset=FP)
    assert total.guarantee == "nothing released" and total.epsilon == 0.0 and total.planned_runs == 1


def test_non_dp_run_means_no_formal_guarantee_never_zero(ledger):
    release(ledger, "dp", [RUN])
    record = release(ledger, "plain", None)
    assert record.guarantee == NO_FORMAL_GUARANTEE and record.delta is None and record.history is None
    total = ledger.total(owner="clinic", dataset=FP)
    assert total.guarantee == NO_FORMAL_GUARANTEE and total.epsilon is None
    assert total.to_dict()["epsilon"] is None and NO_FORMAL_GUARANTEE in total.statement
    assert total.non_dp_runs == 1


def test_cap_refuses_a_run_before_training_with_the_figures(ledger):
    release(ledger, "r1", [RUN])
    ledger.set_cap(owner="clinic", dataset=FP, epsilon=3.0, delta=1e-5, accountant="rdp")
    events = len(ledger.events())
    big = [Segment(0.8, 0.05, 500)]
    check = ledger.check_plan(owner="clinic", dataset=FP, segments=big, delta=1e-5)
    assert not check.within and check.cap == 3.0 and check.delta == 1e-5 and check.accountant == "rdp"
    assert check.spent == pytest.approx(epsilon_of_history([RUN], delta=1e-5, accountant="rdp"))
    assert check.planned == pytest.approx(epsilon_of_history(big, delta=1e-5, accountant="rdp"))
    assert check.total == pytest.approx(epsilon_of_history([RUN] + big, delta=1e-5, accountant="rdp"))
    with pytest.raises(PolicyViolation) as info:
        ledger.plan_run(owner="clinic", dataset=FP, expert="notes", segments=big, delta=1e-5, run_id="r2")
    assert info.value.exit_code == 1
    msg = info.value.message
    for figure in (f"spent eps={check.spent:.4f}", f"planned eps={check.planned:.4f}", f"total eps={check.total:.4f}", "cap eps=3"):
        assert figure in msg
    assert ledger.run("r2") is None and len(ledger.events()) == events  # nothing written
    small = ledger.check_plan(owner="clinic", dataset=FP, segments=[Segment(5.0, 0.01, 10)], delta=1e-5)
    assert small.within and check.spent < small.total < 3.0


def test_cap_refuses_runs_without_dp(ledger):
    ledger.set_cap(owner="clinic", dataset=FP, epsilon=8.0, delta=1e-5)
    with pytest.raises(PolicyViolation, match="no formal guarantee"):
        ledger.plan_run(owner="clinic", dataset=FP, expert="plain", segments=None, delta=None, run_id="plain")
    # and a dataset that already had a non-DP release cannot honour any cap
    release(ledger, "plain2", None, dataset=FP2)
    ledger.set_cap(owner="clinic", dataset=FP2, epsilon=8.0, delta=1e-5)
    check = ledger.check_plan(owner="clinic", dataset=FP2, segments=[RUN], delta=1e-5)
    assert not check.within and check.total is None and "already released" in check.reason


def test_release_is_idempotent_and_immutable(ledger):
    ledger.plan_run(owner="clinic", dataset=FP, expert="notes", segments=[RUN], delta=1e-5, run_id="r1")
    # a resumed run reports its history in two pieces: the same mechanism, recorded once
    first = ledger.record_release("r1", [Segment(1.0, 0.01, 60), Segment(1.0, 0.01, 40)], package_digest="sha256:x")
    again = ledger.record_release("r1", [RUN], package_digest="sha256:x")
    assert again == first and first.history == [RUN] and first.status == "released"
    assert [e["kind"] for e in ledger.events()].count("run_released") == 1
    with pytest.raises(IntegrityError) as info:
        ledger.record_release("r1", [Segment(1.0, 0.01, 150)], package_digest="sha256:x")
    assert info.value.exit_code == 3
    with pytest.raises(IntegrityError):
        ledger.record_release("r1", [RUN], package_digest="sha256:other")
    with pytest.raises(InputError, match="plan it first"):
        ledger.record_release("never-planned", [RUN])
    with pytest.raises(InputError, match="already released"):
        ledger.plan_run(owner="clinic", dataset=FP, expert="notes", segments=[RUN], delta=1e-5, run_id="r1")
    assert ledger.total(owner="clinic", dataset=FP).history == [RUN]


def test_released_runs_and_the_event_log_are_immutable_in_the_database(ledger, db):
    release(ledger, "r1", [RUN])
    conn = sqlite3.connect(db)
    for statement in ("UPDATE runs SET history = '[]' WHERE run_id = 'r1'", "DELETE FROM runs",
                      "UPDATE events SET kind = 'x'", "DELETE FROM events"):
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(statement)
    conn.close()
    assert ledger.run("r1").history == [RUN] and len(ledger.events()) == 2


def test_replanning_a_resumed_run_updates_its_plan(ledger):
    ledger.plan_run(owner="clinic", dataset=FP, expert="notes", segments=[RUN], delta=1e-5, run_id="r1")
    ledger.plan_run(owner="clinic", dataset=FP, expert="notes", segments=[Segment(1.0, 0.01, 200)], delta=1e-5, run_id="r1")
    assert ledger.run("r1").planned == [Segment(1.0, 0.01, 200)] and len(ledger.runs()) == 1
    with pytest.raises(InputError, match="another owner"):
        ledger.plan_run(owner="clinic", dataset=FP2, expert="notes", segments=[RUN], delta=1e-5, run_id="r1")


def test_release_rechecks_the_cap(ledger):
    # two runs planned side by side both fit alone; the second release would exceed the cap
    cap = epsilon_of_history([Segment(1.0, 0.01, 150)], delta=1e-5, accountant="rdp")
    ledger.set_cap(owner="clinic", dataset=FP, epsilon=cap, delta=1e-5, accountant="rdp")
    for run_id in ("a", "b"):
        ledger.plan_run(owner="clinic", dataset=FP, expert=run_id, segments=[RUN], delta=1e-5, run_id=run_id)
    ledger.record_release("a", [RUN])
    with pytest.raises(PolicyViolation, match="refused"):
        ledger.record_release("b", [RUN])
    assert ledger.run("b").status == "planned"  # not released: the caller must not publish
    assert ledger.total(owner="clinic", dataset=FP).released_runs == 1


def test_mixed_privacy_units_are_refused(ledger):
    release(ledger, "doc", [RUN], unit="document")
    with pytest.raises(InputError, match="privacy unit"):
        ledger.plan_run(owner="clinic", dataset=FP, expert="s", segments=[RUN], delta=1e-5, unit="subject", run_id="subj")


def test_a_run_without_dp_does_not_fix_the_unit_of_later_dp_runs(ledger):
    release(ledger, "plain", None)  # no guarantee of any unit
    release(ledger, "subj", [RUN], unit="subject")
    total = ledger.total(owner="clinic", dataset=FP).to_dict()
    assert total["epsilon"] is None  # the plain release already disclosed the data: no formal guarantee


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(delta=None), "needs a delta"),
        (dict(delta=1.5), "delta"),
        (dict(unit="person"), "privacy unit"),
        (dict(owner=""), "owner"),
        (dict(segments=[Segment(0.0, 0.01, 10)]), "noise multiplier"),
        (dict(segments=[Segment(1.0, 0.01, -3)]), "steps"),
    ],
)
def test_invalid_plans(ledger, kwargs, words):
    base = dict(owner="clinic", dataset=FP, expert="notes", segments=[RUN], delta=1e-5)
    with pytest.raises(InputError, match=words):
        ledger.plan_run(**{**base, **kwargs})
    assert ledger.runs() == []


def test_invalid_caps(ledger):
    with pytest.raises(InputError):
        ledger.set_cap(owner="clinic", dataset=FP, epsilon=0.0, delta=1e-5)
    with pytest.raises(InputError):
        ledger.set_cap(owner="clinic", dataset=FP, epsilon=1.0, delta=1e-5, accountant="gdp")


def test_figures_fall_back_along_the_chain_when_prv_cannot_evaluate(ledger):
    release(ledger, "loud", [Segment(0.3, 0.5, 1000)])
    total = ledger.total(owner="clinic", dataset=FP)
    assert total.accountant == "rdp" and "prv could not evaluate" in total.note and "pld failed" in total.note
    # never below what PRV would have reported: RDP at delta * 0.998, plus PRV's error bound 0.02
    rdp = epsilon_of_history([Segment(0.3, 0.5, 1000)], delta=1e-5 * 0.998, accountant="rdp")
    assert total.epsilon == pytest.approx(rdp + 0.02)


def test_persists_across_reopen(db):
    with Ledger(db) as led:
        release(led, "r1", [RUN])
        led.set_cap(owner="clinic", dataset=FP, epsilon=5.0, delta=1e-5)
        before = led.total(owner="clinic", dataset=FP)
        runs = led.runs()
    with Ledger(db, create=False) as led:
        assert led.runs() == runs and led.total(owner="clinic", dataset=FP) == before
        assert led.cap(owner="clinic", dataset=FP)["epsilon"] == 5.0


def test_missing_ledger_without_create(tmp_path):
    with pytest.raises(InputError, match="no ledger"):
        Ledger(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_corrupted_file_is_an_input_error_and_left_alone(db):
    garbage = b"this is not a database, it is a text file with some bytes\x00\x01" * 200
    db.write_bytes(garbage)
    with pytest.raises(InputError) as info:
        Ledger(db)
    assert info.value.exit_code == 2 and "not a readable flexaudit ledger" in info.value.message
    assert db.read_bytes() == garbage


def test_foreign_sqlite_database_is_refused(db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="not a flexaudit ledger"):
        Ledger(db)


def test_newer_schema_is_refused(db):
    Ledger(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="upgrade flexaudit"):
        Ledger(db)


def test_migration_to_a_new_version_keeps_data_and_a_failed_one_rolls_back(db, monkeypatch):
    with Ledger(db) as led:
        release(led, "r1", [RUN])

    def broken(conn):
        conn.execute("ALTER TABLE runs ADD COLUMN half_done TEXT")
        raise RuntimeError("migration failed midway")

    monkeypatch.setattr(ledger_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(ledger_module._MIGRATIONS, SCHEMA_VERSION + 1, broken)
    with pytest.raises(RuntimeError):
        Ledger(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "half_done" not in [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    conn.close()

    def add_note(conn):
        conn.execute("ALTER TABLE runs ADD COLUMN note TEXT")

    monkeypatch.setitem(ledger_module._MIGRATIONS, SCHEMA_VERSION + 1, add_note)
    with Ledger(db) as led:
        assert led.schema_version() == SCHEMA_VERSION + 1 and [r.run_id for r in led.runs()] == ["r1"]


def test_every_schema_version_has_a_migration():
    assert sorted(ledger_module._MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


# --- concurrency --------------------------------------------------------------------------------

WORKERS = 6
FITS = 3  # the cap allows exactly three runs of RUN


def _cap_for(k):
    return epsilon_of_history([Segment(RUN.noise_multiplier, RUN.sample_rate, RUN.steps * k)], delta=1e-5, accountant="rdp")


def _worker(path, run_id, results):
    outcome = "released"
    try:
        with Ledger(path, timeout=120) as led:
            led.plan_run(owner="clinic", dataset=FP, expert=run_id, segments=[RUN], delta=1e-5, run_id=run_id)
            led.record_release(run_id, [RUN], package_digest=f"sha256:{run_id}")
    except PolicyViolation:
        outcome = "refused"
    except Exception as exc:  # reported, so the test fails with the reason
        outcome = f"error: {type(exc).__name__}: {exc}"
    if isinstance(results, list):  # threads share a list; processes report through a queue
        results.append((run_id, outcome))
    else:
        results.put((run_id, outcome))


def _check_consistent(db, outcomes):
    assert all(o in ("released", "refused") for _, o in outcomes), outcomes
    assert sum(o == "released" for _, o in outcomes) == FITS
    with Ledger(db) as led:
        total = led.total(owner="clinic", dataset=FP)
        assert total.released_runs == FITS
        assert total.epsilon == pytest.approx(_cap_for(FITS), rel=1e-12) and total.epsilon <= total.cap_epsilon
        released = {r.run_id for r in led.runs() if r.status == "released"}
        assert released == {run_id for run_id, o in outcomes if o == "released"}
        assert len([e for e in led.events() if e["kind"] == "run_released"]) == FITS
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def _capped(db):
    with Ledger(db) as led:
        led.set_cap(owner="clinic", dataset=FP, epsilon=_cap_for(FITS) * (1 + 1e-9), delta=1e-5, accountant="rdp")


def test_concurrent_processes_leave_a_consistent_ledger(db):
    _capped(db)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(db, f"p{i}", results)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    _check_consistent(db, outcomes)


def test_concurrent_threads_leave_a_consistent_ledger(db):
    _capped(db)
    outcomes: list = []
    threads = [threading.Thread(target=_worker, args=(db, f"t{i}", outcomes)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    _check_consistent(db, outcomes)
