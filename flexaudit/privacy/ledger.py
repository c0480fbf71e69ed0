"""The privacy-budget ledger: every training run on an owner's dataset, composed and capped.

One SQLite file (``owner_home()/ledger.db`` by default) holds, per data owner and per dataset
fingerprint (``flexaudit.data.split.dataset_fingerprint``), every training run whose expert was
planned or released, and an optional cap. It is private owner state and is never shared.

Rules (stated here because a regulator will ask):

- **What counts.** Only *released* runs spend budget: a run whose expert package never left the
  owner's machine disclosed nothing. Planned runs reserve nothing (two concurrent plans can both
  pass; the cap is enforced again, atomically, when each is released, so the second release is
  refused if together they would exceed it).
- **Composition.** All released DP runs on the same (owner, dataset fingerprint) are composed as
  one adaptive sequence of mechanisms: their histories are concatenated and the accountant is run
  on the whole (privacy loss distributions are convolved; see ``accountants.epsilon_of_history``).
  This is tighter than adding per-run epsilons and is valid for adaptively chosen runs.
- **Delta.** Because mechanisms, not (epsilon, delta) pairs, are composed, deltas are *not*
  summed: the total is stated at one delta. That delta is the cap's delta when a cap is set
  (so the check compares like with like); otherwise the smallest delta any released run used
  (for a budget check, the planned run's delta counts too), which gives the largest, most
  conservative epsilon of the candidates.
- **Accountant.** The total uses the cap's accountant, else ``prv``. If it cannot evaluate the
  history, the fallback chain (``accountants.FALLBACK_ORDER``: prv -> pld -> rdp) produces the
  figures, all of one check by the same accountant; a fallback figure is never below what the
  requested accountant would have reported (a refusal can only become stricter), and the figures
  name the accountant that produced them and say which failed.
- **No DP, no guarantee.** A run without DP is recorded as "no formal guarantee", never as
  epsilon 0. One released non-DP run makes the dataset's total "no formal guarantee", whatever
  its DP runs spent. A dataset with a cap refuses a non-DP run.
- **Unit of privacy.** Runs on one dataset must share a unit (document or subject). A subject-level
  add/remove guarantee does not translate into a document-level add/remove one at the same
  epsilon (removing one document *modifies* a subject), so mixed units are refused rather than
  composed wrongly.
- **Fingerprints are exact.** Runs are composed per exact fingerprint. A dataset with one document
  added has a new fingerprint and starts from zero, although the documents it shares with the old
  one have already spent budget: callers that train on overlapping versions must record them
  under one fingerprint (e.g. the first version's).

Release protocol (what the training loop does):

1. ``plan_run(...)`` before training: validates, checks the cap with the planned segments and
   raises :class:`~flexaudit.errors.PolicyViolation` (exit 1, figures in the message) if it would
   be exceeded; stores the run as *planned*. Calling it again with the same run id (a resumed run)
   updates the plan; the run id must travel in the training checkpoint.
2. Train; build the expert package in a staging directory.
3. ``record_release(run_id, final_history, package_digest=...)`` in one ``BEGIN IMMEDIATE``
   transaction: re-checks the cap against everything released so far (refusing atomically, so the
   caller must then not publish), then stores the final history and marks the run released.
   Idempotent: the same run id with the same history (and digest) is a no-op, so a resumed run
   that releases once is recorded once; a *different* history for a released run is an
   IntegrityError (exit 3), never an overwrite.
4. Only after ``record_release`` returns, rename the staged package into place.

Ordering 3-before-4 means the ledger is never behind what was released. A crash between 3 and 4
leaves it one release ahead (the safe direction) only until the resumed run repeats 3 (a no-op)
and completes 4. Every write is one transaction; an error rolls it back, so nothing already
stored is lost or half-written. Concurrent writers are serialised by ``BEGIN IMMEDIATE`` with a
busy timeout; the journal is WAL, so readers never block.

Triggers make released runs immutable, forbid deleting runs and keep the ``events`` log (every
plan, release and cap change, with the figures of its budget check) append-only, even for a
client that bypasses this module. Schema versions live in ``PRAGMA user_version``, with one
migration function per bump in ``_MIGRATIONS``; ``PRAGMA application_id`` marks the file as a
flexaudit ledger.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from flexaudit.data.split import owner_home
from flexaudit.errors import InputError, IntegrityError, PolicyViolation
from flexaudit.privacy.accountants import (
    DEFAULT_ACCOUNTANT,
    Segment,
    _check_delta,
    account_all,
    create_accountant,
    normalize_history,
)

__all__ = [
    "SCHEMA_VERSION",
    "NO_FORMAL_GUARANTEE",
    "NOTHING_RELEASED",
    "UNITS",
    "Ledger",
    "RunRecord",
    "DatasetTotal",
    "BudgetCheck",
    "default_ledger_path",
]

SCHEMA_VERSION = 1
NO_FORMAL_GUARANTEE = "no formal guarantee"
NOTHING_RELEASED = "nothing released"
UNITS = ("document", "subject")
_APPLICATION_ID = 0x464C5844  # "FLXD": marks a flexaudit ledger in the SQLite header


def default_ledger_path() -> Path:
    """``owner_home()/ledger.db`` ($FLEXAUDIT_HOME or ~/.local/share/flexaudit)."""
    return owner_home() / "ledger.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _short(fingerprint: str) -> str:
    return fingerprint if len(fingerprint) <= 28 else fingerprint[:28] + "..."


# ---------------------------------------------------------------------------------------------
# schema and migrations


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run DDL statements inside the caller's transaction (``executescript`` would COMMIT first).

    Statements are separated by a line holding only ``--``, so trigger bodies may contain ``;``.
    """
    for statement in script.split("\n--\n"):
        if statement.strip():
            conn.execute(statement)


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE runs (
            run_id          TEXT PRIMARY KEY,
            owner           TEXT NOT NULL,
            dataset         TEXT NOT NULL,
            expert          TEXT NOT NULL,
            status          TEXT NOT NULL CHECK (status IN ('planned', 'released')),
            dp              INTEGER NOT NULL CHECK (dp IN (0, 1)),
            unit            TEXT NOT NULL CHECK (unit IN ('document', 'subject')),
            delta           REAL CHECK (delta IS NULL OR (delta > 0 AND delta < 1)),
            accountant      TEXT,
            planned         TEXT CHECK (planned IS NULL OR json_valid(planned)),
            history         TEXT CHECK (history IS NULL OR json_valid(history)),
            package_digest  TEXT,
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL,
            released_at     TEXT,
            CHECK (dp = 1 OR (delta IS NULL AND planned IS NULL AND history IS NULL)),
            CHECK (status = 'planned' OR released_at IS NOT NULL)
        )
--
        CREATE INDEX runs_by_dataset ON runs (owner, dataset, status)
--
        CREATE TABLE caps (
            owner       TEXT NOT NULL,
            dataset     TEXT NOT NULL,
            epsilon     REAL NOT NULL CHECK (epsilon > 0),
            delta       REAL NOT NULL CHECK (delta > 0 AND delta < 1),
            accountant  TEXT NOT NULL,
            set_at      TEXT NOT NULL,
            PRIMARY KEY (owner, dataset)
        )
--
        CREATE TABLE events (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            at       TEXT NOT NULL,
            kind     TEXT NOT NULL,
            owner    TEXT NOT NULL,
            dataset  TEXT NOT NULL,
            run_id   TEXT,
            detail   TEXT NOT NULL CHECK (json_valid(detail))
        )
--
        CREATE TRIGGER events_are_append_only_u BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the ledger event log is append-only'); END
--
        CREATE TRIGGER events_are_append_only_d BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the ledger event log is append-only'); END
--
        CREATE TRIGGER released_runs_are_immutable_u BEFORE UPDATE ON runs WHEN OLD.status = 'released'
        BEGIN SELECT RAISE(ABORT, 'a released run is immutable'); END
--
        CREATE TRIGGER runs_are_never_deleted BEFORE DELETE ON runs
        BEGIN SELECT RAISE(ABORT, 'runs are never deleted from the ledger'); END
        """
    )


#: user_version N is reached by _MIGRATIONS[N] from N - 1. Add one function per schema bump.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v0_to_v1}


# ---------------------------------------------------------------------------------------------
# records


def _history_json(history: Optional[Sequence[Segment]]) -> Optional[str]:
    if history is None:
        return None
    return json.dumps([[s.noise_multiplier, s.sample_rate, s.steps] for s in history])


def _history_from(text: Optional[str]) -> Optional[list[Segment]]:
    if text is None:
        return None
    return [Segment(float(a), float(b), int(c)) for a, b, c in json.loads(text)]


@dataclass(frozen=True)
class RunRecord:
    """One training run as the ledger holds it."""

    run_id: str
    owner: str
    dataset: str
    expert: str
    status: str  # "planned" | "released"
    dp: bool
    unit: str
    delta: Optional[float]
    accountant: Optional[str]
    planned: Optional[list[Segment]]
    history: Optional[list[Segment]]  # the released history (None until released, or non-DP)
    package_digest: Optional[str]
    created_at: str
    updated_at: str
    released_at: Optional[str]

    @property
    def guarantee(self) -> str:
        return "dp" if self.dp else NO_FORMAL_GUARANTEE

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "RunRecord":
        return cls(
            run_id=row["run_id"],
            owner=row["owner"],
            dataset=row["dataset"],
            expert=row["expert"],
            status=row["status"],
            dp=bool(row["dp"]),
            unit=row["unit"],
            delta=row["delta"],
            accountant=row["accountant"],
            planned=_history_from(row["planned"]),
            history=_history_from(row["history"]),
            package_digest=row["package_digest"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            released_at=row["released_at"],
        )

    def to_dict(self) -> dict:
        def segs(h: Optional[list[Segment]]) -> Optional[list[dict]]:
            return None if h is None else [s._asdict() for s in h]

        return {
            "run_id": self.run_id,
            "owner": self.owner,
            "dataset": self.dataset,
            "expert": self.expert,
            "status": self.status,
            "guarantee": self.guarantee,
            "unit": self.unit,
            "delta": self.delta,
            "accountant": self.accountant,
            "planned": segs(self.planned),
            "history": segs(self.history),
            "package_digest": self.package_digest,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "released_at": self.released_at,
        }


@dataclass(frozen=True)
class DatasetTotal:
    """What one owner's dataset has spent, over all its released runs.

    ``guarantee`` is "dp" (``epsilon`` at ``delta`` by ``accountant``), NO_FORMAL_GUARANTEE
    (a non-DP run was released: ``epsilon`` is None) or NOTHING_RELEASED (``epsilon`` 0.0).
    """

    owner: str
    dataset: str
    guarantee: str
    epsilon: Optional[float]
    delta: Optional[float]
    accountant: Optional[str]
    unit: Optional[str]
    released_runs: int
    non_dp_runs: int
    planned_runs: int
    cap_epsilon: Optional[float]
    cap_delta: Optional[float]
    history: list[Segment] = field(default_factory=list)
    note: Optional[str] = None

    @property
    def statement(self) -> str:
        """The total in one plain sentence."""
        if self.guarantee == NO_FORMAL_GUARANTEE:
            return (
                f"{NO_FORMAL_GUARANTEE}: {self.non_dp_runs} run(s) without differential privacy were released "
                "from this dataset, so no epsilon bounds what was disclosed"
            )
        if self.guarantee == NOTHING_RELEASED:
            return "nothing released from this dataset yet (epsilon 0 spent)"
        return (
            f"epsilon {self.epsilon:.4g} at delta {self.delta:g} per {self.unit} over {self.released_runs} released "
            f"run(s) ({self.accountant})"
        )

    def to_dict(self) -> dict:
        return {
            "owner": self.owner,
            "dataset": self.dataset,
            "guarantee": self.guarantee,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": create_accountant(self.accountant).describe() if self.accountant else None,
            "unit": self.unit,
            "released_runs": self.released_runs,
            "non_dp_runs": self.non_dp_runs,
            "planned_runs": self.planned_runs,
            "cap": None if self.cap_epsilon is None else {"epsilon": self.cap_epsilon, "delta": self.cap_delta},
            "history": [s._asdict() for s in self.history],
            "statement": self.statement,
            "note": self.note,
        }


@dataclass(frozen=True)
class BudgetCheck:
    """Would a planned run fit under the dataset's cap? All figures at one delta/accountant.

    ``spent``: released runs so far; ``planned``: the planned run alone; ``total``: both composed
    (at most spent + planned, usually less). ``None`` stands for "no formal guarantee".
    """

    owner: str
    dataset: str
    spent: Optional[float]
    planned: Optional[float]
    total: Optional[float]
    cap: Optional[float]
    delta: Optional[float]
    accountant: Optional[str]
    within: bool
    reason: str

    @property
    def message(self) -> str:
        def f(x: Optional[float]) -> str:
            return NO_FORMAL_GUARANTEE if x is None else f"{x:.4f}"

        head = "within budget" if self.within else "refused: the run would exceed the privacy budget"
        cap = "none" if self.cap is None else f"{self.cap:g}"
        at = "" if self.delta is None else f" at delta={self.delta:g} ({self.accountant})"
        return (
            f"{head} of owner {self.owner!r} on dataset {_short(self.dataset)}: spent eps={f(self.spent)}, "
            f"planned eps={f(self.planned)}, total eps={f(self.total)}, cap eps={cap}{at}; {self.reason}"
        )

    def raise_if_exceeded(self) -> "BudgetCheck":
        """Raise PolicyViolation (exit 1) with the figures when the run does not fit."""
        if not self.within:
            raise PolicyViolation(self.message)
        return self

    def to_dict(self) -> dict:
        return {
            "owner": self.owner,
            "dataset": self.dataset,
            "spent": self.spent,
            "planned": self.planned,
            "total": self.total,
            "cap": self.cap,
            "delta": self.delta,
            "accountant": self.accountant,
            "within": self.within,
            "reason": self.reason,
        }


# ---------------------------------------------------------------------------------------------
# argument checks


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise InputError(f"{what} must be a non-empty single-line string, got {value!r}")
    return value


def _unit(value: object) -> str:
    value = getattr(value, "value", value)
    if value not in UNITS:
        raise InputError(f"privacy unit must be one of {', '.join(UNITS)}, got {value!r}")
    return str(value)


def _figures(
    histories: list[list[Segment]], *, delta: float, accountant: str
) -> tuple[list[float], str, Optional[str]]:
    """Epsilons of several histories by one accountant: the first of the fallback chain that evaluates all.

    Every fallback figure is a valid upper bound, never below what the requested accountant would
    have reported (``accountants.account``), so a fallback only makes refusals stricter; the returned
    accountant name says which one produced the numbers, the note which ones failed and why.
    """
    reports = account_all(histories, delta=delta, accountant=accountant)
    first = reports[0]
    note = None
    if first.fell_back:
        note = f"{first.requested} could not evaluate this history; {first.statement}"
    return [r.epsilon for r in reports], first.accountant, note


def _segments_or_none(segments: Optional[Sequence[Segment]]) -> Optional[list[Segment]]:
    return None if segments is None else normalize_history(segments)


# ---------------------------------------------------------------------------------------------
# the ledger


class Ledger:
    """A privacy-budget ledger in one SQLite file. See the module docstring for the rules.

    Args:
        path: the database file; default ``default_ledger_path()``.
        create: create the file (and its schema) when missing; with False a missing file is an
            InputError (read-only callers check :meth:`exists` first).
        timeout: seconds a writer waits for another writer's transaction before giving up.

    Raises:
        InputError: the file is not a readable SQLite database, not a flexaudit ledger, or has
            a newer schema than this version understands. Nothing is changed in that case.
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_ledger_path()
        if self.path.is_dir():
            raise InputError(f"ledger path {self.path} is a directory: pass a file path (e.g. {self.path / 'ledger.db'})")
        if not self.path.exists():
            if not create:
                raise InputError(f"no ledger at {self.path}: nothing has been recorded there yet (check --db / FLEXAUDIT_HOME)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: Optional[sqlite3.Connection] = None
        try:
            conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(f"cannot open ledger {self.path} ({exc}): check the path and its permissions") from None
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            with self._sql():
                conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                self._migrate()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def exists(path: str | Path | None = None) -> bool:
        return (Path(path) if path is not None else default_ledger_path()).is_file()

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise InputError(f"ledger {self.path} is closed: open it again")
        return self._conn

    def _db_error(self, exc: sqlite3.Error) -> InputError:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "locked" in text or "busy" in text:
            return InputError(f"ledger {self.path} is busy (another process held it too long: {text}): retry; nothing was changed")
        return InputError(
            f"ledger {self.path} is not a readable flexaudit ledger ({text}): restore it from a backup or move it aside; "
            "nothing was changed"
        )

    @contextlib.contextmanager
    def _sql(self) -> Iterator[None]:
        """Map sqlite3 errors to one InputError line."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._db_error(exc) from None

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction: BEGIN IMMEDIATE for writers (serialised), BEGIN for consistent reads.

        Any exception rolls everything back, so a failed call leaves the ledger as it was.
        """
        conn = self.conn
        with self._sql():
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._db_error(exc) from None
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise self._db_error(exc) from None

    def _migrate(self) -> None:
        conn = self.conn
        with self._transaction(write=True):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InputError(
                    f"ledger {self.path} has schema version {version}, newer than this flexaudit understands "
                    f"({SCHEMA_VERSION}): upgrade flexaudit"
                )
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise InputError(
                        f"{self.path} is an SQLite database but not a flexaudit ledger: pass another --db path"
                    )
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            elif app_id != _APPLICATION_ID:
                raise InputError(f"{self.path} is an SQLite database but not a flexaudit ledger: pass another --db path")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                _MIGRATIONS[target](conn)
                conn.execute(f"PRAGMA user_version = {target}")

    def schema_version(self) -> int:
        with self._sql():
            return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _event(self, conn: sqlite3.Connection, kind: str, owner: str, dataset: str, run_id: Optional[str], detail: dict) -> None:
        conn.execute(
            "INSERT INTO events (at, kind, owner, dataset, run_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (_now(), kind, owner, dataset, run_id, json.dumps(detail, sort_keys=True)),
        )

    # -- reads ---------------------------------------------------------------------------------

    def run(self, run_id: str) -> Optional[RunRecord]:
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else RunRecord._from_row(row)

    def runs(self, *, owner: Optional[str] = None, dataset: Optional[str] = None) -> list[RunRecord]:
        query, args = "SELECT * FROM runs WHERE 1=1", []
        if owner is not None:
            query, args = query + " AND owner = ?", args + [owner]
        if dataset is not None:
            query, args = query + " AND dataset = ?", args + [dataset]
        with self._transaction(write=False) as conn:
            rows = conn.execute(query + " ORDER BY created_at, run_id", args).fetchall()
        return [RunRecord._from_row(r) for r in rows]

    def cap(self, *, owner: str, dataset: str) -> Optional[dict]:
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT * FROM caps WHERE owner = ? AND dataset = ?", (owner, dataset)).fetchone()
        return None if row is None else dict(row)

    def events(self, *, owner: Optional[str] = None) -> list[dict]:
        """The append-only log of every plan, release and cap change, oldest first."""
        query, args = "SELECT * FROM events", []
        if owner is not None:
            query, args = query + " WHERE owner = ?", [owner]
        with self._transaction(write=False) as conn:
            rows = conn.execute(query + " ORDER BY seq", args).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    def total(
        self, *, owner: str, dataset: str, delta: Optional[float] = None, accountant: Optional[str] = None
    ) -> DatasetTotal:
        """The dataset's total over its released runs (see the module docstring for the rules)."""
        with self._transaction(write=False) as conn:
            return self._total(conn, owner, dataset, delta=delta, accountant=accountant)

    def datasets(self, *, owner: Optional[str] = None) -> list[DatasetTotal]:
        """Totals for every (owner, dataset) with a run or a cap, sorted."""
        with self._transaction(write=False) as conn:
            query = "SELECT owner, dataset FROM runs UNION SELECT owner, dataset FROM caps"
            pairs = conn.execute(f"SELECT * FROM ({query}) ORDER BY owner, dataset").fetchall()
            return [
                self._total(conn, r["owner"], r["dataset"])
                for r in pairs
                if owner is None or r["owner"] == owner
            ]

    def _total(
        self,
        conn: sqlite3.Connection,
        owner: str,
        dataset: str,
        *,
        delta: Optional[float] = None,
        accountant: Optional[str] = None,
    ) -> DatasetTotal:
        rows = [RunRecord._from_row(r) for r in conn.execute("SELECT * FROM runs WHERE owner = ? AND dataset = ?", (owner, dataset))]
        cap = conn.execute("SELECT * FROM caps WHERE owner = ? AND dataset = ?", (owner, dataset)).fetchone()
        released = [r for r in rows if r.status == "released"]
        planned = sum(1 for r in rows if r.status == "planned")
        non_dp = sum(1 for r in released if not r.dp)
        common = dict(
            owner=owner,
            dataset=dataset,
            released_runs=len(released),
            non_dp_runs=non_dp,
            planned_runs=planned,
            cap_epsilon=None if cap is None else cap["epsilon"],
            cap_delta=None if cap is None else cap["delta"],
        )
        units = sorted({r.unit for r in released})
        unit = units[0] if len(units) == 1 else None
        if non_dp:
            return DatasetTotal(guarantee=NO_FORMAL_GUARANTEE, epsilon=None, delta=None, accountant=None, unit=unit, **common)
        if not released:
            return DatasetTotal(guarantee=NOTHING_RELEASED, epsilon=0.0, delta=None, accountant=None, unit=None, **common)
        history = normalize_history([s for r in released for s in (r.history or [])])
        d, acc = self._figures_basis(cap, [r.delta for r in released if r.delta is not None], delta, accountant)
        (value,), used, note = _figures([history], delta=d, accountant=acc)
        return DatasetTotal(
            guarantee="dp", epsilon=value, delta=d, accountant=used, unit=unit, history=history, note=note, **common
        )

    @staticmethod
    def _figures_basis(
        cap: Optional[sqlite3.Row], deltas: list[float], delta: Optional[float], accountant: Optional[str]
    ) -> tuple[float, str]:
        """(delta, accountant) the totals are stated at: explicit > cap > smallest run delta / prv."""
        if delta is None:
            delta = cap["delta"] if cap is not None else (min(deltas) if deltas else None)
        if delta is None:
            raise InputError("no delta to state the total at (no cap and no DP run): pass a delta")
        if accountant is None:
            accountant = cap["accountant"] if cap is not None else DEFAULT_ACCOUNTANT
        accountant = getattr(accountant, "value", accountant)
        create_accountant(accountant)
        return _check_delta(delta), accountant

    def check_plan(
        self,
        *,
        owner: str,
        dataset: str,
        segments: Optional[Sequence[Segment]],
        delta: Optional[float] = None,
        unit: str = "document",
        accountant: Optional[str] = None,
        exclude_run: Optional[str] = None,
    ) -> BudgetCheck:
        """Would a run with `segments` (None: a non-DP run) fit under the cap? Writes nothing.

        Args:
            owner, dataset: whose budget.
            segments: the planned history; None for a run without DP.
            delta: the planned run's delta (used for the figures only when no cap is set).
            unit: the planned run's privacy unit.
            accountant: overrides the accountant of the figures (default: the cap's, else prv).
            exclude_run: a run id to leave out of "spent" (the run being released itself).

        Returns:
            A BudgetCheck; call ``raise_if_exceeded()`` to refuse with PolicyViolation (exit 1).
        """
        with self._transaction(write=False) as conn:
            return self._check(conn, owner, dataset, _segments_or_none(segments), delta, _unit(unit), accountant, exclude_run)

    def _check(
        self,
        conn: sqlite3.Connection,
        owner: str,
        dataset: str,
        segments: Optional[list[Segment]],
        delta: Optional[float],
        unit: str,
        accountant: Optional[str],
        exclude_run: Optional[str],
    ) -> BudgetCheck:
        rows = [
            RunRecord._from_row(r)
            for r in conn.execute("SELECT * FROM runs WHERE owner = ? AND dataset = ?", (owner, dataset))
            if r["run_id"] != exclude_run
        ]
        released = [r for r in rows if r.status == "released"]
        cap = conn.execute("SELECT * FROM caps WHERE owner = ? AND dataset = ?", (owner, dataset)).fetchone()
        cap_eps = None if cap is None else float(cap["epsilon"])
        # Units matter only between DP runs: a run without DP has no guarantee of any unit to compose with.
        other_units = sorted({r.unit for r in released if r.dp} - {unit}) if segments is not None else []
        if other_units:
            raise InputError(
                f"dataset {_short(dataset)} of owner {owner!r} already has released runs with privacy unit "
                f"{other_units[0]!r}; runs of different units do not compose: use --privacy-unit {other_units[0]}"
            )
        deltas = [r.delta for r in released if r.delta is not None] + ([delta] if delta is not None else [])
        void = any(not r.dp for r in released)
        spent_hist = [s for r in released if r.dp for s in (r.history or [])]
        spent: Optional[float] = None
        planned: Optional[float] = None
        total: Optional[float] = None
        basis_delta: Optional[float] = None
        used: Optional[str] = None
        if segments is not None and delta is None and cap is None:
            raise InputError("a DP plan needs a delta when the dataset has no cap: pass --delta")
        if cap is not None or deltas:
            basis_delta, used = self._figures_basis(cap, deltas, None, accountant)
            wanted = [spent_hist] + ([segments, spent_hist + segments] if segments is not None else [])
            values, used, _ = _figures(wanted, delta=basis_delta, accountant=used)
            spent = None if void else values[0]
            if segments is not None:
                planned, total = values[1], (None if void else values[2])
        elif not void:
            spent = 0.0
        common = dict(owner=owner, dataset=dataset, spent=spent, planned=planned, total=total, cap=cap_eps, delta=basis_delta, accountant=used)
        if cap_eps is None:
            return BudgetCheck(within=True, reason="no cap is set for this dataset", **common)
        if void:
            return BudgetCheck(
                within=False,
                reason=f"a run without DP was already released from this dataset ({NO_FORMAL_GUARANTEE}), so no run can keep it under a cap",
                **common,
            )
        if segments is None:
            return BudgetCheck(
                within=False,
                reason=f"a run without DP has {NO_FORMAL_GUARANTEE} and would void the cap: train with --dp",
                **common,
            )
        assert total is not None
        if total > cap_eps:
            return BudgetCheck(
                within=False,
                reason="lower --steps or the sample rate, raise the noise multiplier (or --target-epsilon to fit), or raise the cap",
                **common,
            )
        return BudgetCheck(within=True, reason=f"{cap_eps - total:.4f} of the cap would remain", **common)

    # -- writes --------------------------------------------------------------------------------

    def set_cap(self, *, owner: str, dataset: str, epsilon: float, delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> dict:
        """Set (or replace) the cap of one owner's dataset: total epsilon at delta by accountant.

        A cap below what is already spent is stored (the owner's policy), and every further run
        is then refused; the returned dict carries the current total so the caller can say so.
        """
        owner, dataset = _text(owner, "owner"), _text(dataset, "dataset fingerprint")
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon) or epsilon <= 0:
            raise InputError(f"a cap must be a finite epsilon > 0, got {epsilon!r}")
        delta = _check_delta(delta)
        accountant = getattr(accountant, "value", accountant)
        create_accountant(accountant)
        with self._transaction(write=True) as conn:
            conn.execute(
                "INSERT INTO caps (owner, dataset, epsilon, delta, accountant, set_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (owner, dataset) DO UPDATE SET epsilon = excluded.epsilon, delta = excluded.delta, "
                "accountant = excluded.accountant, set_at = excluded.set_at",
                (owner, dataset, float(epsilon), delta, accountant, _now()),
            )
            self._event(conn, "cap_set", owner, dataset, None, {"epsilon": float(epsilon), "delta": delta, "accountant": accountant})
            total = self._total(conn, owner, dataset)
        return {"owner": owner, "dataset": dataset, "epsilon": float(epsilon), "delta": delta, "accountant": accountant, "total": total.to_dict()}

    def plan_run(
        self,
        *,
        owner: str,
        dataset: str,
        expert: str,
        segments: Optional[Sequence[Segment]],
        delta: Optional[float],
        unit: str = "document",
        accountant: str = DEFAULT_ACCOUNTANT,
        run_id: Optional[str] = None,
    ) -> tuple[RunRecord, BudgetCheck]:
        """Validate a run before training and record it as planned (it reserves no budget).

        Args:
            segments: the planned DP history (e.g. ``[Segment(sigma, q, steps)]``); None for a
                run without DP, recorded as "no formal guarantee".
            delta: the run's delta (required for DP, must be None without DP).
            unit: "document" or "subject".
            accountant: the accountant the run reports with (stored for provenance).
            run_id: the caller's id (kept in its checkpoint so a resumed run re-plans the same
                run); a new random id when None.

        Returns:
            (the stored run, the budget check with the figures).

        Raises:
            PolicyViolation: the run would exceed the cap (exit 1; the message has the figures).
            InputError: invalid arguments; the run id is already released, or belongs to another
                owner/dataset/expert or DP mode; units that do not compose.
        """
        owner, dataset, expert = _text(owner, "owner"), _text(dataset, "dataset fingerprint"), _text(expert, "expert name")
        unit = _unit(unit)
        dp = segments is not None
        planned = _segments_or_none(segments)
        if dp:
            if delta is None:
                raise InputError("a DP run needs a delta: pass --delta (or use the default rule, default_delta(N))")
            delta = _check_delta(delta)
            accountant = getattr(accountant, "value", accountant)
            create_accountant(accountant)
        else:
            delta, accountant = None, None
        run_id = _text(run_id, "run id") if run_id is not None else uuid.uuid4().hex
        with self._transaction(write=True) as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            existing = None if row is None else RunRecord._from_row(row)
            if existing is not None:
                if existing.status == "released":
                    raise InputError(f"run {run_id} was already released: a new training run needs a new run id")
                if (existing.owner, existing.dataset, existing.expert, existing.dp) != (owner, dataset, expert, dp):
                    raise InputError(
                        f"run {run_id} was planned for another owner, dataset, expert or DP mode: use a new run id"
                    )
            check = self._check(conn, owner, dataset, planned, delta, unit, None, run_id)
            check.raise_if_exceeded()
            now = _now()
            if existing is None:
                conn.execute(
                    "INSERT INTO runs (run_id, owner, dataset, expert, status, dp, unit, delta, accountant, planned, "
                    "history, package_digest, created_at, updated_at, released_at) "
                    "VALUES (?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?, NULL, NULL, ?, ?, NULL)",
                    (run_id, owner, dataset, expert, int(dp), unit, delta, accountant, _history_json(planned), now, now),
                )
            else:
                conn.execute(
                    "UPDATE runs SET unit = ?, delta = ?, accountant = ?, planned = ?, updated_at = ? WHERE run_id = ?",
                    (unit, delta, accountant, _history_json(planned), now, run_id),
                )
            self._event(
                conn,
                "run_planned" if existing is None else "run_replanned",
                owner,
                dataset,
                run_id,
                {"expert": expert, "dp": dp, "unit": unit, "delta": delta, "accountant": accountant,
                 "planned": None if planned is None else [list(s) for s in planned], "check": check.to_dict()},
            )
            record = RunRecord._from_row(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())
        return record, check

    def record_release(
        self, run_id: str, segments: Optional[Sequence[Segment]], *, package_digest: Optional[str] = None
    ) -> RunRecord:
        """Record that a planned run's expert package is being published, with its final history.

        One BEGIN IMMEDIATE transaction: the cap is re-checked against everything else released
        (refusing atomically), then the final history and digest are stored and the run becomes
        released. Call it before making the package visible (module docstring, step 3).

        Args:
            run_id: the id from :meth:`plan_run`.
            segments: the final DP history (the accountant's history after training, resumes
                included); None (or empty) for a run without DP.
            package_digest: the package's root digest, binding the record to the exact weights.

        Returns:
            The released run. Repeating the call with the same history and digest returns the
            stored record unchanged (idempotent).

        Raises:
            PolicyViolation: releasing would exceed the cap (nothing recorded; do not publish).
            IntegrityError: the run was already released with a different history or digest.
            InputError: unknown run id, or segments that do not match the run's DP mode.
        """
        run_id = _text(run_id, "run id")
        history = _segments_or_none(segments)
        if package_digest is not None:
            package_digest = _text(package_digest, "package digest")
        with self._transaction(write=True) as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise InputError(f"run {run_id} is not in the ledger {self.path}: plan it first (plan_run) before releasing")
            run = RunRecord._from_row(row)
            if not run.dp:
                if history:
                    raise InputError(f"run {run_id} was planned without DP but its release carries a DP history: plan a DP run")
                history = None
            elif history is None:
                raise InputError(f"run {run_id} was planned with DP: its release needs the final DP history")
            if run.status == "released":
                same = run.history == history and (package_digest is None or package_digest == run.package_digest)
                if same:
                    return run
                raise IntegrityError(
                    f"run {run_id} was already released with a different history or package digest; a release is "
                    "immutable: publish the new package under a new run id"
                )
            check = self._check(conn, run.owner, run.dataset, history, run.delta, run.unit, None, run_id)
            check.raise_if_exceeded()
            now = _now()
            conn.execute(
                "UPDATE runs SET status = 'released', history = ?, package_digest = ?, released_at = ?, updated_at = ? "
                "WHERE run_id = ? AND status = 'planned'",
                (_history_json(history), package_digest, now, now, run_id),
            )
            self._event(
                conn,
                "run_released",
                run.owner,
                run.dataset,
                run_id,
                {"history": None if history is None else [list(s) for s in history], "package_digest": package_digest,
                 "check": check.to_dict()},
            )
            record = RunRecord._from_row(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())
        return record
