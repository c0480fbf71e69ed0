"""Accountants against published ground truth (reference/dp.md section 3), and their contract.

Ids (T1, T5, ...) are the rows of the table in dp.md section 3; each test states the source.
Step counts follow the source exactly (Opacus' PRV test uses int(90 // 0.04) = 2249, its RDP test
int(90 / 0.04) = 2250; TF uses ceil(epochs * N / batch)).
"""

from __future__ import annotations

import math

import pytest

from flexaudit.errors import InputError
from flexaudit.privacy import accountants as acc
from flexaudit.privacy import (
    AccountantFailure,
    Segment,
    account,
    cross_check,
    default_delta,
    epsilon,
    epsilon_of_history,
    noise_multiplier_for,
)

# (id, source, q, sigma, steps, delta, published epsilon, absolute tolerance = the stated precision)
RDP_GROUND_TRUTH = [
    ("T1", "opacus tests/accountants_test.py::test_rdp_accountant", 0.04, 1.5, 2250, 1e-5, 7.32911117143, 1e-6),
    ("T5", "tensorflow_privacy compute_dp_sgd_privacy_test Test0", 0.0025, 1.3, 6000, 1e-5, 0.7242234026109595, 1e-6),
    ("T6", "tensorflow_privacy compute_dp_sgd_privacy_test Test1", 0.001, 1.0, 30000, 1e-7, 1.4154988495444842, 1e-6),
    # published 3.2392676 with dp_accounting's order grid; Opacus 1.6's grid gives 3.2392 (4 decimals)
    ("T7", "tensorflow_privacy test_compute_dp_sgd_example_privacy", 0.01, 0.7, 120, 1e-5, 3.2392, 1e-4),
    ("T8", "tensorflow_privacy privacy statement, Poisson, RDP 1.616", 0.0064, 1.0, 782, 1e-6, 1.616, 5e-4),
]

PRV_GROUND_TRUTH = [
    ("T1b", "opacus tests/accountants_test.py::test_prv_accountant", 0.04, 1.5, 2249, 1e-5, 6.777395712150674, 1e-6),
    ("T14", "opacus tests/prv_accountant.py (microsoft/prv_accountant)", 0.05, 1.5, 1000, 1e-6, 6.20996924657727, 1e-4),
    ("T15a", "opacus tests/prv_accountant.py", 0.001, 0.8, 100, 1e-6, 0.2704033640580187, 1e-4),
    ("T15b", "opacus tests/prv_accountant.py", 0.001, 2.0, 20000, 1e-6, 0.30583793976245344, 1e-4),
    ("T15c", "opacus tests/prv_accountant.py", 0.2, 3.0, 100, 1e-6, 3.3812205102218442, 1e-4),
]

PLD_GROUND_TRUTH = [
    ("T7", "tensorflow_privacy test_compute_dp_sgd_example_privacy, PLD", 0.01, 0.7, 120, 1e-5, 2.4612381, 1e-6),
    ("T7b", "same test, no subsampling: SelfComposed(Gaussian(0.7), 2)", 1.0, 0.7, 2, 1e-5, 10.1224946, 1e-6),
    ("T8", "tensorflow_privacy privacy statement, Poisson, PLD 1.199", 0.0064, 1.0, 782, 1e-6, 1.199, 5e-4),
]


def _ids(rows):
    return [r[0] for r in rows]


@pytest.mark.parametrize("row", RDP_GROUND_TRUTH, ids=_ids(RDP_GROUND_TRUTH))
def test_rdp_reproduces_published_values(row):
    _, _, q, sigma, steps, delta, published, tol = row
    value = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta, accountant="rdp")
    assert value == pytest.approx(published, abs=tol)


@pytest.mark.parametrize("row", PRV_GROUND_TRUTH, ids=_ids(PRV_GROUND_TRUTH))
def test_prv_reproduces_published_values(row):
    _, _, q, sigma, steps, delta, published, tol = row
    value = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta)  # prv is the default
    assert value == pytest.approx(published, abs=tol)


@pytest.mark.parametrize("row", PLD_GROUND_TRUTH, ids=_ids(PLD_GROUND_TRUTH))
def test_pld_reproduces_published_values(row):
    _, _, q, sigma, steps, delta, published, tol = row
    value = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta, accountant="pld")
    assert value == pytest.approx(published, abs=tol)


def test_expected_ordering_pld_prv_rdp():
    # dp.md section 3, lesson 4: PLD <= PRV (upper bound, ~ +0.01) < RDP, on T1b's settings.
    kw = dict(sample_rate=0.04, noise_multiplier=1.5, steps=2249, delta=1e-5)
    pld, prv, rdp = (epsilon(**kw, accountant=a) for a in ("pld", "prv", "rdp"))
    assert pld < prv < rdp
    assert prv - pld == pytest.approx(0.01, abs=0.003)


# --- noise search -----------------------------------------------------------------------------


def test_noise_search_rdp_matches_opacus_t18():
    # T18: Opacus get_noise_multiplier(target 8, delta 1e-5, q 0.04, 90 epochs = 2250 steps, rdp) = 1.416
    # (bisection to epsilon tolerance 0.01). A tighter tolerance lands on the same root.
    sigma = noise_multiplier_for(target_epsilon=8, sample_rate=0.04, steps=2250, delta=1e-5, accountant="rdp", tolerance=1e-3)
    assert sigma == pytest.approx(1.416, abs=5e-4)
    eps = epsilon(sample_rate=0.04, noise_multiplier=sigma, steps=2250, delta=1e-5, accountant="rdp")
    assert 8 - 1e-3 <= eps <= 8


def test_noise_search_prv_matches_opacus_t18():
    # T18: PRV, 2000 steps -> 1.2915 (places=4)
    sigma = noise_multiplier_for(target_epsilon=8, sample_rate=0.04, steps=2000, delta=1e-5)
    assert sigma == pytest.approx(1.2915, abs=1e-4)
    eps = epsilon(sample_rate=0.04, noise_multiplier=sigma, steps=2000, delta=1e-5)
    assert 8 - 0.01 <= eps <= 8


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_noise_search_epsilon_at_or_below_target_and_close(accountant):
    kw = dict(sample_rate=0.01, steps=300, delta=1e-5)
    sigma = noise_multiplier_for(target_epsilon=2.0, accountant=accountant, **kw)
    eps = epsilon(noise_multiplier=sigma, accountant=accountant, **kw)
    assert 2.0 - 0.01 <= eps <= 2.0
    # smallest: 1% less noise already exceeds the target
    assert epsilon(noise_multiplier=sigma * 0.99, accountant=accountant, **kw) > 2.0


def test_noise_search_is_deterministic():
    kw = dict(target_epsilon=3.0, sample_rate=0.02, steps=50, delta=1e-5)
    assert noise_multiplier_for(**kw) == noise_multiplier_for(**kw)


def test_noise_search_small_target_uses_relative_tolerance():
    # below RDP's floor (log(1/delta)/62 ~ 0.22): PLD still calibrates, to within 5% of the target
    sigma = noise_multiplier_for(target_epsilon=0.05, sample_rate=0.001, steps=100, delta=1e-6, accountant="pld")
    eps = epsilon(sample_rate=0.001, noise_multiplier=sigma, steps=100, delta=1e-6, accountant="pld")
    assert 0.05 * 0.95 <= eps <= 0.05


# --- monotonicity and composition ------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_monotone_in_noise_steps_and_sample_rate(accountant):
    def e(q=0.01, sigma=1.0, steps=100):
        return epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=1e-5, accountant=accountant)

    by_sigma = [e(sigma=s) for s in (0.8, 1.0, 1.5, 3.0)]
    by_steps = [e(steps=n) for n in (10, 100, 1000)]
    by_rate = [e(q=q) for q in (0.001, 0.01, 0.1)]
    assert by_sigma == sorted(by_sigma, reverse=True) and len(set(by_sigma)) == 4
    assert by_steps == sorted(by_steps) and len(set(by_steps)) == 3
    assert by_rate == sorted(by_rate) and len(set(by_rate)) == 3


def test_zero_steps_spend_nothing():
    for name in ("prv", "rdp", "pld"):
        assert epsilon(sample_rate=0.1, noise_multiplier=1.0, steps=0, delta=1e-5, accountant=name) == 0.0
        assert epsilon_of_history([], delta=1e-5, accountant=name) == 0.0


@pytest.mark.parametrize("accountant", ["prv", "rdp", "pld"])
def test_identical_segments_compose_like_one(accountant):
    one = epsilon_of_history([Segment(1.1, 0.02, 300)], delta=1e-5, accountant=accountant)
    split = epsilon_of_history([Segment(1.1, 0.02, 100), (1.1, 0.02, 200)], delta=1e-5, accountant=accountant)
    assert split == one


@pytest.mark.parametrize("accountant", ["prv", "rdp", "pld"])
def test_heterogeneous_history(accountant):
    a, b = Segment(1.0, 0.01, 100), Segment(2.0, 0.05, 50)
    ea, eb = (epsilon_of_history([s], delta=1e-5, accountant=accountant) for s in (a, b))
    both = epsilon_of_history([a, b], delta=1e-5, accountant=accountant)
    assert max(ea, eb) < both < ea + eb  # composition costs more than either, less than the sum
    assert epsilon_of_history([b, a], delta=1e-5, accountant=accountant) == pytest.approx(both, rel=1e-9)


def test_heterogeneous_prv_agrees_with_pld():
    history = [Segment(1.0, 0.01, 100), Segment(2.0, 0.05, 50), Segment(0.9, 0.004, 300)]
    check = cross_check(history, delta=1e-6)
    assert check.agree is True
    assert check.epsilon - check.reference_epsilon == pytest.approx(0.01, abs=0.004)


# --- cross-check ------------------------------------------------------------------------------


def test_cross_check_prv_window_and_library_versions():
    check = cross_check([Segment(1.5, 0.04, 2249)], delta=1e-5)
    assert check.accountant == "prv" and check.reference == "pld"
    assert check.agree is True
    assert check.lower < check.reference_epsilon < check.epsilon < check.upper
    d = check.to_dict()
    assert d["accountant"]["library"] == "opacus" and d["accountant"]["version"][0].isdigit()
    assert d["reference"]["library"] == "dp-accounting" and d["reference"]["version"][0].isdigit()


def test_cross_check_rdp_has_no_upper_limit_and_pld_is_checked_against_rdp():
    # T15a's settings: RDP is about 5x the PLD value there, which is still agreement
    rdp = cross_check([Segment(0.8, 0.001, 100)], delta=1e-6, accountant="rdp")
    assert rdp.upper is None and rdp.agree is True and rdp.epsilon > 4 * rdp.reference_epsilon
    pld = cross_check([Segment(0.8, 0.001, 100)], delta=1e-6, accountant="pld")
    assert pld.reference == "rdp" and pld.lower is None and pld.agree is True


def test_cross_check_flags_a_primary_below_pld():
    class Optimistic(acc.Accountant):
        name = "optimistic"
        library = "opacus"
        method = "test double: 10% below the PLD value"
        tight = False

        def _compute(self, history, delta):
            return 0.9 * acc.PLDAccountant()._compute(history, delta)

    acc.register_accountant("optimistic", Optimistic)
    try:
        check = cross_check([Segment(1.0, 0.01, 200)], delta=1e-5, accountant="optimistic")
        assert check.agree is False and check.epsilon < check.lower
        with pytest.raises(ValueError):
            acc.register_accountant("optimistic", Optimistic)
    finally:
        del acc._ACCOUNTANTS["optimistic"]


def test_cross_check_reports_a_reference_it_could_not_compute():
    check = cross_check([Segment(0.3, 0.5, 1000)], delta=1e-5, accountant="rdp")
    assert check.reference_epsilon is None and check.agree is None
    assert "pld not computed" in check.note


# --- errors: one line, exit code 2 ------------------------------------------------------------

GOOD = dict(sample_rate=0.01, noise_multiplier=1.0, steps=100, delta=1e-5)


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(sample_rate=0.0), "sample rate"),
        (dict(sample_rate=1.5), "sample rate"),
        (dict(sample_rate=-0.1), "sample rate"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(delta=2.0), "delta"),
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(noise_multiplier=0.0), "noise multiplier"),
        (dict(noise_multiplier=-1.0), "noise multiplier"),
        (dict(noise_multiplier=float("nan")), "noise multiplier"),
        (dict(accountant="gdp"), "unknown accountant"),
    ],
)
def test_invalid_arguments_are_input_errors(change, words):
    with pytest.raises(InputError) as info:
        epsilon(**{**GOOD, **change})
    assert words in info.value.message and info.value.exit_code == 2
    assert "\n" not in info.value.message


def test_numeric_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        epsilon(0.01, 1.0, 100, 1e-5)  # type: ignore[misc]
    with pytest.raises(TypeError):
        noise_multiplier_for(8.0, 0.01, 100, 1e-5)  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(target_epsilon=0.0), "unreachable"),
        (dict(target_epsilon=-1.0), "unreachable"),
        (dict(target_epsilon=0.005), "eps_error"),  # prv's upper bound never goes below 0.01
        (dict(target_epsilon=0.1, accountant="rdp"), "would have to exceed 1e+06"),  # RDP floor ~0.2 at this delta
        (dict(target_epsilon=2.0, steps=0), "steps is 0"),
        (dict(target_epsilon=2.0, tolerance=0.0), "tolerance"),
    ],
)
def test_impossible_noise_requests(kwargs, words):
    base = dict(sample_rate=0.01, steps=100, delta=1e-6)
    with pytest.raises(InputError) as info:
        noise_multiplier_for(**{**base, **kwargs})
    assert words in info.value.message and info.value.exit_code == 2


def test_prv_failure_falls_back_along_the_chain_and_names_who_produced_the_figure():
    kw = dict(sample_rate=0.5, noise_multiplier=0.3, steps=1000, delta=1e-5)
    with pytest.raises(AccountantFailure) as info:
        epsilon(**kw)  # one accountant, as asked: its failure is a clear one-line error
    assert info.value.exit_code == 2 and "--accountant rdp" in info.value.message
    report = account([Segment(0.3, 0.5, 1000)], delta=1e-5)
    assert report.accountant == "rdp" and report.requested == "prv" and report.fell_back
    assert [name for name, _ in report.failures] == ["prv", "pld"]  # PLD is tried before RDP
    assert all("beyond" in reason for _, reason in report.failures)
    rdp_at = epsilon(**{**kw, "delta": report.evaluated_delta}, accountant="rdp")
    assert report.evaluated_delta < 1e-5 and report.epsilon == pytest.approx(rdp_at + 2 * acc.PRV_EPS_ERROR)
    assert "figure by rdp" in report.statement and report.to_dict()["fallback"]["order"] == ["prv", "pld", "rdp"]
    with pytest.raises(AccountantFailure):
        account([Segment(0.3, 0.5, 1000)], delta=1e-5, fallback=False)


def test_fallback_order():
    assert acc.fallback_order("prv") == ("prv", "pld", "rdp")
    assert acc.fallback_order("pld") == ("pld", "prv", "rdp")
    assert acc.fallback_order("rdp") == ("rdp", "prv", "pld")
    with pytest.raises(InputError, match="unknown accountant"):
        acc.fallback_order("gdp")


def test_a_fallback_from_prv_is_never_below_what_prv_reports(monkeypatch):
    """PLD is ~0.01 below PRV; the allowance (PRV's own error bound) keeps the fallback figure above PRV's."""
    history = [Segment(1.5, 0.04, 2249)]
    prv = epsilon_of_history(history, delta=1e-5)
    pld = epsilon_of_history(history, delta=1e-5, accountant="pld")
    assert pld < prv  # without an allowance, falling back to PLD would report less than PRV does

    def broken(self, history, delta):
        raise AccountantFailure("the PRV accountant failed numerically (test double)")

    monkeypatch.setattr(acc.PRVAccountant, "_compute", broken)
    report = account(history, delta=1e-5)
    assert report.accountant == "pld" and report.allowance == 2 * acc.PRV_EPS_ERROR
    assert prv <= report.epsilon <= pld + 2 * acc.PRV_EPS_ERROR + 1e-3
    # a fallback from PLD has no known error bound to add: the figure is PRV's own upper bound
    monkeypatch.undo()
    monkeypatch.setattr(acc.PLDAccountant, "_compute", broken)
    from_pld = account(history, delta=1e-5, accountant="pld")
    assert from_pld.accountant == "prv" and from_pld.epsilon == prv and from_pld.allowance == 0.0


def test_every_accountant_failing_is_one_clear_error(monkeypatch):
    def broken(self, history, delta):
        raise AccountantFailure(f"{self.name} broken (test double)")

    for cls in (acc.PRVAccountant, acc.PLDAccountant, acc.RDPAccountant):
        monkeypatch.setattr(cls, "_compute", broken)
    with pytest.raises(AccountantFailure) as info:
        account([Segment(1.0, 0.01, 100)], delta=1e-5)
    message = info.value.message
    assert "\n" not in message and all(f"{name} broken" in message for name in ("prv", "pld", "rdp"))
    assert account([], delta=1e-5).epsilon == 0.0  # nothing spent needs no accountant


# The issue-15 settings (a report from another tool): PRV loses float64 resolution below ~1e-10 and PLD's truncated
# tail mass exceeds delta below ~1e-13; T15a's settings have a tiny epsilon, T1b's a large one.
ISSUE_15 = [Segment(4.0, 0.00033, 10000)]
DELTA_GRID = [1e-3, 1e-5, 1e-8, 1e-10, 1e-11, 1e-12, 1e-13, 1e-15, 1.1e-18, 1e-24, 1e-30]


@pytest.mark.parametrize("history", [ISSUE_15, [Segment(0.8, 0.001, 100)], [Segment(1.5, 0.04, 2249)]],
                         ids=["issue15", "T15a", "T1b"])
@pytest.mark.parametrize("accountant", ["prv", "pld", "rdp"])
def test_epsilon_never_decreases_as_delta_decreases(accountant, history):
    reports = [account(history, delta=d, accountant=accountant) for d in DELTA_GRID]
    figures = [r.epsilon for r in reports]
    assert all(b >= a for a, b in zip(figures, figures[1:])), list(zip(DELTA_GRID, figures))
    # each accountant alone is monotone too, wherever it answers (the chain tries it first)
    alone = [r.epsilon for r in reports if not r.fell_back]
    assert len(alone) >= 3 and all(b >= a for a, b in zip(alone, alone[1:]))
    assert reports[-1].accountant == "rdp"  # only RDP resolves delta 1e-30


def test_prv_refuses_deltas_below_its_float64_resolution():
    # Measured before the guard: at T1b's settings and delta 1e-13 PRV returned 11.56, below PLD's 11.67,
    # i.e. it was no upper bound any more. It now fails, and the chain's figure stays above PLD's.
    history = [Segment(1.5, 0.04, 2249)]
    with pytest.raises(AccountantFailure, match="float64"):
        epsilon_of_history(history, delta=1e-13)
    report = account(history, delta=1e-13)
    assert report.accountant == "pld" and report.epsilon >= epsilon_of_history(history, delta=1e-13, accountant="pld")


def test_a_tight_result_above_the_rdp_bound_is_a_failure(monkeypatch):
    from opacus.accountants.analysis.prv import prvs

    monkeypatch.setattr(prvs.DiscretePRV, "compute_epsilon", lambda self, delta, de, ee: (0.0, 0.0, 50.0))
    with pytest.raises(AccountantFailure, match="above the RDP bound"):
        epsilon_of_history([Segment(1.5, 0.04, 2249)], delta=1e-5)


def test_noise_search_uses_the_fallback_where_the_accountant_fails():
    # epsilon 150 is beyond what PRV and PLD evaluate (MAX_TIGHT_EPSILON): RDP calibrates it, and says so
    kw = dict(sample_rate=0.01, steps=100, delta=1e-6)
    sigma = noise_multiplier_for(target_epsilon=150.0, **kw)
    report = account([Segment(sigma, 0.01, 100)], delta=1e-6)
    assert report.accountant == "rdp" and report.requested == "prv" and 150 - 150 / 20 <= report.epsilon <= 150.0


def test_prv_grid_guard(monkeypatch):
    monkeypatch.setattr(acc, "MAX_PRV_GRID", 1000)
    with pytest.raises(AccountantFailure, match="grid"):
        epsilon(sample_rate=0.04, noise_multiplier=1.5, steps=2249, delta=1e-5)


def test_prv_numerical_runtime_error_is_mapped(monkeypatch):
    # Opacus issues #601/#604: PRV's discretisation raises this at large epsilon
    import opacus.accountants.analysis.prv as prv_analysis

    def boom(*a, **k):
        raise RuntimeError("Discrete mean differs significantly from continuous mean.")

    monkeypatch.setattr(prv_analysis, "discretize", boom)
    with pytest.raises(AccountantFailure, match="Discrete mean differs"):
        epsilon(**GOOD)
    # the noise search then calibrates on the fallback (PLD, plus PRV's error bound), which the report names
    sigma = noise_multiplier_for(target_epsilon=2.0, sample_rate=0.01, steps=100, delta=1e-5)
    report = account([Segment(sigma, 0.01, 100)], delta=1e-5)
    assert report.accountant == "pld" and 2.0 - 0.01 <= report.epsilon <= 2.0
    assert "Discrete mean differs" in report.failures[0][1]


# --- default delta ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, expected",
    [(1, 1e-5), (100, 1e-5), (10_000, 1e-5), (10_001, 1e-6), (60_000, 1e-6), (100_000, 1e-6), (100_001, 1e-7), (1_000_000, 1e-7)],
)
def test_default_delta_rule(n, expected):
    value = default_delta(n)
    assert value == expected
    assert value <= 1 / (10 * n)
    assert math.log10(value) == round(math.log10(value))  # a power of ten


@pytest.mark.parametrize("n", [0, -5, 2.5, True])
def test_default_delta_rejects_bad_counts(n):
    with pytest.raises(InputError):
        default_delta(n)
