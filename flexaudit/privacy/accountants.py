"""Privacy accountants for DP-SGD with Poisson sampling, behind one small interface.

Three accountants, registered by name (Opacus style: an ABC plus a name-keyed registry):

- ``prv`` (default, as in Opacus): numerical composition of privacy-loss random variables,
  Gopi, Lee, Wutschitz, "Numerical Composition of Differential Privacy", NeurIPS 2021
  (arXiv 2106.02848), as implemented by Opacus' PRV analysis (``PRVAccountant``'s algorithm and
  defaults). Returns an *upper bound*: its estimate plus ``PRV_EPS_ERROR`` (0.01).
- ``rdp``: Renyi DP of the subsampled Gaussian mechanism, Mironov, "Renyi Differential Privacy",
  CSF 2017 (arXiv 1702.07476) and Mironov, Talwar, Zhang, "Renyi Differential Privacy of the
  Sampled Gaussian Mechanism" (arXiv 1908.10530), converted to (epsilon, delta) with Balle et
  al., "Hypothesis Testing Interpretations and Renyi DP", AISTATS 2020 (arXiv 1905.09982, Thm 21),
  as implemented by Opacus' RDP analysis (``RDPAccountant``'s default orders). Fast and always an
  upper bound, but looser than PRV/PLD (10-35% at typical settings, several times at very small
  epsilon).
- ``pld``: privacy loss distributions, Koskela, Jalko, Honkela 2020 (arXiv 1906.03049) and
  Doroshenko, Ghazi, Kamath, Kumar, Manurangsi, "Connect the Dots", PETS 2022 (arXiv 2207.04380),
  as implemented by Google's ``dp_accounting.pld.PLDAccountant`` (pessimistic discretisation,
  interval 1e-4). An independent code base, used as the cross-check.

All three account the same mechanism: each step samples every privacy unit independently with
probability ``sample_rate`` (Poisson sampling), clips each unit's gradient to norm C and adds
N(0, (noise_multiplier * C)^2) noise; add-or-remove-one adjacency. A history is a list of
``Segment(noise_multiplier, sample_rate, steps)``, the format of Opacus' ``accountant.history``.

Figures shown to anyone come from :func:`account` (or :func:`account_all`): the requested accountant
first and, when it fails numerically, the fallback chain PRV -> PLD -> RDP (:data:`FALLBACK_ORDER`);
the result names the accountant that produced the figure and every failure before it. Every
figure is an upper bound on the true epsilon, a fallback from PRV is never below what PRV would
have reported, and epsilon is non-increasing in delta (the argument is in :func:`account`'s
docstring). :func:`epsilon` and :func:`epsilon_of_history` evaluate exactly one accountant and
raise :class:`AccountantFailure` when it fails: they are the building blocks and the ground-truth
tests' entry points.

Numeric arguments are keyword-only. Every invalid or impossible request raises
:class:`~flexaudit.errors.InputError` (exit code 2) with one line saying what to do; library code
never prints or exits.

Example:
    >>> from flexaudit.privacy import epsilon
    >>> round(epsilon(sample_rate=0.0025, noise_multiplier=1.3, steps=6000, delta=1e-5,
    ...               accountant="rdp"), 4)
    0.7242
"""

from __future__ import annotations

import abc
import math
import numbers
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import ClassVar, Iterable, NamedTuple, Optional, Sequence

from flexaudit.errors import InputError
from flexaudit.privacy import _search

__all__ = [
    "Segment",
    "Accountant",
    "PRVAccountant",
    "RDPAccountant",
    "PLDAccountant",
    "AccountantFailure",
    "EpsilonReport",
    "CrossCheck",
    "FALLBACK_ORDER",
    "fallback_order",
    "account_all",
    "register_accountant",
    "create_accountant",
    "available_accountants",
    "segment",
    "normalize_history",
    "epsilon",
    "epsilon_of_history",
    "account",
    "noise_multiplier_for",
    "cross_check",
    "default_delta",
    "DEFAULT_ACCOUNTANT",
    "PRV_EPS_ERROR",
    "MAX_NOISE_MULTIPLIER",
    "MAX_TIGHT_EPSILON",
]

DEFAULT_ACCOUNTANT = "prv"

#: Opacus' default eps_error for PRV: the returned upper bound is estimate + 0.01.
PRV_EPS_ERROR = 0.01

#: Noise search gives up beyond this sigma (the same ceiling as Opacus' get_noise_multiplier).
MAX_NOISE_MULTIPLIER = 1e6

#: PRV and PLD evaluate only histories whose (cheap, looser) RDP epsilon is at most this. Beyond it
#: they need huge grids (minutes, gigabytes, or Opacus returns inf), and an epsilon above 100
#: (a likelihood ratio of e^100) is no meaningful guarantee anyway; RDP still answers.
MAX_TIGHT_EPSILON = 100.0

#: Largest PRV discretisation grid we let Opacus allocate (points; ~1.7e7 is ~15 s and ~1.5 GB).
MAX_PRV_GRID = 2**24

#: Relative and absolute slack allowed between a tight accountant and the reference, for
#: discretisation noise of either implementation (PLD interval 1e-4; PRV's own estimate error).
CROSS_CHECK_REL = 1e-3
CROSS_CHECK_ABS = 5e-3


class Segment(NamedTuple):
    """``steps`` DP-SGD steps at one (noise_multiplier, sample_rate): one Opacus history entry."""

    noise_multiplier: float
    sample_rate: float
    steps: int


class AccountantFailure(InputError):
    """The accountant cannot evaluate this history numerically (exit code 2).

    Raised for PRV's known failures at large epsilon or tiny noise (Opacus issues #601, #604:
    "Discrete mean differs significantly from continuous mean", overflow to inf), for deltas
    below what an accountant's float64 arithmetic resolves, and for histories outside what
    PRV/PLD can evaluate in bounded time and memory. :func:`account` catches it and falls back
    along :data:`FALLBACK_ORDER`; it raises it only when every accountant failed.

    ``reason`` is what went wrong; the message adds what to do.
    """

    def __init__(self, reason: str, *, advice: str = "use --accountant rdp, or more noise / fewer steps"):
        super().__init__(f"{reason}: {advice}")
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# validation


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0.0 < float(delta) < 1.0:
        raise InputError(f"delta must be a number strictly between 0 and 1, got {delta!r}: pass e.g. --delta 1e-6 (well below 1/N)")
    return float(delta)


def _check_segment(seg: Iterable, where: str = "") -> Segment:
    try:
        noise_multiplier, sample_rate, steps = seg
    except (TypeError, ValueError):
        raise InputError(f"a history segment must be (noise_multiplier, sample_rate, steps), got {seg!r}") from None
    return Segment(
        noise_multiplier=_check_noise(noise_multiplier, where),
        sample_rate=_check_sample_rate(sample_rate, where),
        steps=_check_steps(steps, where),
    )


def _check_noise(value: object, where: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or float(value) <= 0:
        raise InputError(
            f"noise multiplier{where} must be a finite number > 0, got {value!r}: "
            "a noise multiplier of 0 is not DP training (record such a run as 'no formal guarantee')"
        )
    return float(value)


def _check_sample_rate(value: object, where: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) <= 1.0:
        raise InputError(
            f"sample rate{where} must be in (0, 1] (expected batch size / number of privacy units), got {value!r}"
        )
    return float(value)


def _check_steps(value: object, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"steps{where} must be a whole number >= 0, got {value!r}")
    if int(value) < 0:
        raise InputError(f"steps{where} must be >= 0, got {value}: a run cannot take negative steps")
    return int(value)


def segment(*, noise_multiplier: float, sample_rate: float, steps: int) -> Segment:
    """A validated Segment (InputError with one line for a bad value)."""
    return Segment(
        noise_multiplier=_check_noise(noise_multiplier),
        sample_rate=_check_sample_rate(sample_rate),
        steps=_check_steps(steps),
    )


def normalize_history(history: Iterable) -> list[Segment]:
    """Validate a history and merge segments with the same (noise_multiplier, sample_rate).

    Composition is commutative, so merging segments with identical mechanisms changes no
    guarantee; it makes identical histories give bit-identical epsilons however they were split
    (a resumed run, or two runs with the same settings) and keeps PRV's FFT count low. Zero-step
    segments are dropped. Order of first appearance is kept.
    """
    merged: dict[tuple[float, float], int] = {}
    for i, seg in enumerate(history):
        s = _check_segment(seg, f" (segment {i + 1})")
        if s.steps:
            key = (s.noise_multiplier, s.sample_rate)
            merged[key] = merged.get(key, 0) + s.steps
    return [Segment(sigma, q, n) for (sigma, q), n in merged.items()]


# ---------------------------------------------------------------------------------------------
# the interface and the registry


@lru_cache(maxsize=None)
def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


class Accountant(abc.ABC):
    """Computes epsilon for a DP-SGD history at a given delta. Stateless; subclasses are small.

    Subclasses set the class attributes and implement :meth:`_compute`. :meth:`epsilon`
    validates, normalises the history and maps an empty history to 0.0.
    """

    #: registry name, e.g. "prv"
    name: ClassVar[str]
    #: the distribution that computes the number (its version goes next to every epsilon)
    library: ClassVar[str]
    #: one-line description with the paper
    method: ClassVar[str]
    #: True when the value is exact up to discretisation (PRV, PLD); False for looser bounds (RDP)
    tight: ClassVar[bool]
    #: ``(delta_factor, epsilon_added)`` such that, by the accountant's own error guarantee, its value at delta is
    #: at most the true epsilon at ``delta * delta_factor`` plus ``epsilon_added``. When it fails, the fallback figure
    #: is computed that way, so it is never below what this accountant would have reported. None: no such bound is
    #: known, and a fallback figure is an upper bound on the true epsilon (what every accountant bounds) only.
    fallback_allowance: ClassVar[Optional[tuple[float, float]]] = None

    def epsilon(self, history: Sequence[Segment], *, delta: float) -> float:
        """Epsilon spent by `history` at `delta`.

        Raises:
            InputError: invalid history or delta.
            AccountantFailure: the accountant cannot evaluate this history.
        """
        delta = _check_delta(delta)
        hist = normalize_history(history)
        if not hist:
            return 0.0
        with warnings.catch_warnings():
            # Opacus warns about its alpha grid and numpy about overflow; results are checked below.
            warnings.simplefilter("ignore")
            value = float(self._compute(hist, delta))
        if not math.isfinite(value) or value < 0:
            raise AccountantFailure(f"the {self.name} accountant returned {value} for this history")
        return value

    @abc.abstractmethod
    def _compute(self, history: list[Segment], delta: float) -> float:
        """Epsilon of a validated, non-empty, normalised history."""

    @classmethod
    def library_version(cls) -> str:
        return _version(cls.library)

    @classmethod
    def describe(cls) -> dict:
        """What a report states about the accountant: name, library and version, method."""
        return {"name": cls.name, "library": cls.library, "version": cls.library_version(), "method": cls.method}


_ACCOUNTANTS: dict[str, type[Accountant]] = {}


def register_accountant(name: str, cls: type[Accountant], *, force: bool = False) -> None:
    """Register an accountant class under `name` (as Opacus' registry: duplicates need force)."""
    if name in _ACCOUNTANTS and not force:
        raise ValueError(f"accountant {name!r} is already registered (pass force=True to replace it)")
    _ACCOUNTANTS[name] = cls


def available_accountants() -> list[str]:
    return sorted(_ACCOUNTANTS)


def create_accountant(name: str) -> Accountant:
    """A fresh accountant by registry name.

    Raises:
        InputError: unknown name (the message lists the known ones).
    """
    name = getattr(name, "value", name)  # accept a str Enum member
    try:
        return _ACCOUNTANTS[name]()
    except KeyError:
        raise InputError(
            f"unknown accountant {name!r}: choose one of {', '.join(available_accountants())}"
        ) from None


@lru_cache(maxsize=None)
def _rdp_orders() -> tuple[float, ...]:
    from opacus.accountants import RDPAccountant as _Opacus

    return tuple(_Opacus.DEFAULT_ALPHAS)


@lru_cache(maxsize=4096)
def _rdp_one_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """RDP of one subsampled-Gaussian step at Opacus' default orders (cached: it is the slow part)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(_rdp_orders())))


def _rdp_vector(history: Sequence[Segment]):
    """RDP of a history: per-step RDP times steps, summed over segments (as Opacus' RDPAccountant)."""
    import numpy as np

    return sum(np.asarray(_rdp_one_step(s.noise_multiplier, s.sample_rate)) * s.steps for s in history)


def _rdp_to_epsilon(rdp_vector, delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_privacy_spent(orders=list(_rdp_orders()), rdp=rdp_vector, delta=delta)[0])


def _rdp_epsilon(history: Sequence[Segment], delta: float) -> float:
    return _rdp_to_epsilon(_rdp_vector(history), delta)


def _guard_tight(name: str, bound: float) -> None:
    """Refuse histories whose RDP upper bound exceeds MAX_TIGHT_EPSILON (see its comment)."""
    if bound > MAX_TIGHT_EPSILON:
        raise AccountantFailure(
            f"epsilon is about {bound:.4g} (RDP bound), beyond the {MAX_TIGHT_EPSILON:g} that the {name} accountant "
            "evaluates (such an epsilon is no meaningful guarantee)"
        )


def _check_against_rdp(name: str, value: float, bound: float, slack: float) -> float:
    """Refuse a tight accountant's result that exceeds the RDP bound by more than its own error.

    RDP is a valid upper bound on the true epsilon and a tight accountant is within `slack` of the true
    epsilon, so a larger value can only come from broken numerics (measured: PRV at delta 5e-13 returned
    2.35 where RDP gives 0.38). Such a value would still be an upper bound, but a wrong one is not known
    to be wrong in the safe direction, so the fallback chain takes over instead.
    """
    if value > bound + slack:
        raise AccountantFailure(
            f"the {name} accountant returned {value:.4g}, above the RDP bound {bound:.4g}: its numerics are unreliable here"
        )
    return value


class RDPAccountant(Accountant):
    """Renyi DP of the Poisson-subsampled Gaussian (Opacus' RDP analysis, default alpha grid).

    Computes exactly what Opacus' ``RDPAccountant.get_epsilon`` computes (``compute_rdp`` per
    segment, summed, then ``get_privacy_spent`` over ``RDPAccountant.DEFAULT_ALPHAS``), with the
    per-step RDP vector cached per (sigma, q), since RDP is linear in the number of steps.

    References:
        Mironov 2017, arXiv 1702.07476; Mironov, Talwar, Zhang 2019, arXiv 1908.10530;
        conversion to (epsilon, delta): Balle et al. 2020, arXiv 1905.09982, Theorem 21.
    """

    name = "rdp"
    library = "opacus"
    method = "Renyi DP of the subsampled Gaussian (Mironov 2017; Mironov, Talwar, Zhang 2019)"
    tight = False

    def _compute(self, history: list[Segment], delta: float) -> float:
        return _rdp_epsilon(history, delta)


class PRVAccountant(Accountant):
    """Privacy-loss random variables composed by FFT (Opacus' PRV analysis), upper bound.

    Computes what Opacus' ``PRVAccountant.get_epsilon(delta, eps_error=0.01)`` computes, with
    Opacus' own building blocks (``compute_safe_domain_size``'s RDP bounds, ``Domain``,
    ``TruncatedPrivacyRandomVariable``, ``discretize``, ``compose_heterogeneous``,
    ``DiscretePRV.compute_epsilon``), reusing one RDP vector for the domain bound instead of
    recomputing it four times. Before anything is allocated, the grid Opacus would build is checked
    against ``MAX_PRV_GRID`` and the truncation bound against float64 overflow, so pathological
    requests fail in milliseconds with a clear line instead of running for minutes and returning
    inf. The ground-truth tests pin the result to Opacus' published values.

    Error guarantee (Gopi et al., main theorem): with ``delta_error = delta / 1000`` the discretised
    composition's delta curve satisfies ``delta*(eps + eps_error) - delta_error <= delta_hat(eps) <=
    delta*(eps - eps_error) + delta_error``, where ``delta*`` is the mechanism's true curve. The
    returned ``eps_upper = eps_hat(delta - delta_error) + eps_error`` therefore satisfies

        eps*(delta) <= eps_upper(delta) <= eps*(delta - 2 delta_error) + 2 eps_error,

    which ``fallback_allowance`` and the RDP sanity check rely on. It holds only while float64
    rounding stays below delta, which is checked before anything is computed (see ``_compute``).

    References:
        Gopi, Lee, Wutschitz, "Numerical Composition of Differential Privacy", NeurIPS 2021,
        arXiv 2106.02848 (domain size: remark 5.6); https://github.com/microsoft/prv_accountant.
    """

    name = "prv"
    library = "opacus"
    method = "numerical composition of privacy loss random variables, upper bound (Gopi et al. 2021)"
    tight = True
    eps_error = PRV_EPS_ERROR
    fallback_allowance = (1 - 2 / 1000, 2 * PRV_EPS_ERROR)  # delta_error = delta / 1000, see above

    def _compute(self, history: list[Segment], delta: float) -> float:
        import numpy as np
        from opacus.accountants.analysis.prv import (
            Domain,
            PoissonSubsampledGaussianPRV,
            TruncatedPrivacyRandomVariable,
            compose_heterogeneous,
            discretize,
        )

        eps_error = self.eps_error
        delta_error = delta / 1000  # Opacus' default in PRVAccountant.get_epsilon
        vector = _rdp_vector(history)
        rdp_bound = _rdp_to_epsilon(vector, delta)
        _guard_tight(self.name, rdp_bound)
        counts = [s.steps for s in history]
        total = sum(counts)
        # compute_safe_domain_size (opacus/accountants/analysis/prv/domain.py), same RDP bounds
        half_width = _rdp_to_epsilon(vector, delta_error / 4)
        for s in history:
            one = np.asarray(_rdp_one_step(s.noise_multiplier, s.sample_rate))
            half_width = max(half_width, _rdp_to_epsilon(one, delta_error / (8 * total)))
        half_width = max(half_width, eps_error) + 3
        mesh = eps_error / math.sqrt(total * math.log(12 / delta_error) / 2)
        grid = 2 * half_width / mesh
        if half_width > 500 or grid > MAX_PRV_GRID:
            raise AccountantFailure(
                f"the PRV accountant would need a grid of {grid:.3g} points (limit {MAX_PRV_GRID:.3g}) for this history",
                advice="use --accountant rdp or pld",
            )
        # Opacus refuses when longdouble eps * grid size exceeds delta - delta_error, but its PMFs and FFTs are
        # float64: with float64's eps the same rule refuses the deltas at which we measured PRV going wrong
        # (T1b's settings at delta 1e-13: 11.56, below PLD's 11.67, i.e. not an upper bound any more).
        if np.finfo(np.float64).eps * grid > delta - delta_error:
            raise AccountantFailure(
                f"the PRV accountant cannot resolve delta {delta:.3g} in float64 on a grid of {grid:.3g} points",
                advice="use --accountant pld or rdp, or a larger delta",
            )
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                domain = Domain.create_aligned(-half_width, half_width, mesh)
                dprvs = [
                    discretize(
                        TruncatedPrivacyRandomVariable(
                            PoissonSubsampledGaussianPRV(s.sample_rate, s.noise_multiplier), domain.t_min, domain.t_max
                        ),
                        domain,
                    )
                    for s in history
                ]
                composed = compose_heterogeneous(dprvs=dprvs, num_self_compositions=counts)
                _, _, eps_upper = composed.compute_epsilon(delta, delta_error, eps_error)
        except (RuntimeError, ValueError, FloatingPointError, OverflowError, MemoryError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AccountantFailure(f"the PRV accountant failed numerically ({first})") from None
        # eps_upper(delta) <= true epsilon at delta - 2 delta_error, plus 2 eps_error (class docstring); RDP bounds it.
        return _check_against_rdp(self.name, float(eps_upper), _rdp_to_epsilon(vector, delta - 2 * delta_error), 2 * eps_error)


@lru_cache(maxsize=8)
def _composed_pld(history: tuple[Segment, ...]):
    """Google's PLD accountant with `history` composed (cached: composing is the slow part, and one
    composed distribution serves every delta, so epsilon is monotone in delta by construction)."""
    import dp_accounting
    from dp_accounting.pld import PLDAccountant as _Google

    event = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(s.sample_rate, dp_accounting.GaussianDpEvent(s.noise_multiplier)),
                s.steps,
            )
            for s in history
        ]
    )
    return _Google().compose(event)


class PLDAccountant(Accountant):
    """Privacy loss distributions (Google ``dp_accounting.pld.PLDAccountant``), pessimistic.

    The history becomes ``ComposedDpEvent([SelfComposedDpEvent(PoissonSampledDpEvent(q,
    GaussianDpEvent(sigma)), steps), ...])`` (dp.md section 4), add-or-remove-one adjacency,
    value discretisation interval 1e-4 (the library default).

    References:
        Koskela, Jalko, Honkela 2020, arXiv 1906.03049; Doroshenko et al., "Connect the Dots:
        Tighter Discrete Approximations of Privacy Loss Distributions", PETS 2022, arXiv 2207.04380.
    """

    name = "pld"
    library = "dp-accounting"
    method = "privacy loss distributions, pessimistic discretisation (Doroshenko et al. 2022)"
    tight = True

    def _compute(self, history: list[Segment], delta: float) -> float:
        rdp_bound = _rdp_epsilon(history, delta)
        _guard_tight(self.name, rdp_bound)
        try:
            value = float(_composed_pld(tuple(history)).get_epsilon(delta))
        except (MemoryError, ValueError, OverflowError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AccountantFailure(f"the PLD accountant failed numerically ({first})") from None
        if not math.isfinite(value):
            # The pessimistic PLD puts the tail mass it truncates at infinite loss; below that mass no epsilon exists.
            raise AccountantFailure(f"the PLD accountant cannot resolve delta {delta:.3g} (its truncated tail mass is larger)")
        return _check_against_rdp(self.name, value, rdp_bound, CROSS_CHECK_ABS + CROSS_CHECK_REL * rdp_bound)


register_accountant("prv", PRVAccountant)
register_accountant("rdp", RDPAccountant)
register_accountant("pld", PLDAccountant)


# ---------------------------------------------------------------------------------------------
# the facade


def epsilon_of_history(history: Sequence[Segment], *, delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """Epsilon spent by a heterogeneous history (several runs or phases) at `delta`.

    The segments are composed as one adaptive sequence of mechanisms (their privacy loss
    distributions are convolved), which is tighter than adding per-segment epsilons and needs no
    summing of deltas.

    Args:
        history: segments ``(noise_multiplier, sample_rate, steps)``; order does not matter.
        delta: target delta, in (0, 1).
        accountant: registry name: "prv" (default), "rdp" or "pld".

    Returns:
        Epsilon (0.0 for an empty history or zero steps).

    Raises:
        InputError: invalid arguments, unknown accountant, or (AccountantFailure) a history the
            accountant cannot evaluate.
    """
    return create_accountant(accountant).epsilon(history, delta=delta)


def epsilon(
    *, sample_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: str = DEFAULT_ACCOUNTANT
) -> float:
    """Epsilon after `steps` DP-SGD steps at one (sample_rate, noise_multiplier).

    Raises:
        InputError: see :func:`epsilon_of_history`.
    """
    seg = segment(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return epsilon_of_history([seg], delta=delta, accountant=accountant)


#: The fallback chain: the requested accountant first, then the others in this order.
#: PRV is the default (as in Opacus). PLD comes next: as tight as PRV but an independent code base
#: (Google's dp-accounting), so a numerical failure of PRV's discretisation rarely recurs there. RDP
#: comes last: an analytic upper bound that never fails numerically, but looser (7-35% at typical
#: settings, several times at tiny epsilon), so it is the figure of last resort.
FALLBACK_ORDER: tuple[str, ...] = ("prv", "pld", "rdp")


def fallback_order(accountant: str = DEFAULT_ACCOUNTANT) -> tuple[str, ...]:
    """The accountants tried, in order, when `accountant` is requested (it first, then FALLBACK_ORDER)."""
    name = getattr(accountant, "value", accountant)
    create_accountant(name)
    return (name, *(a for a in FALLBACK_ORDER if a != name))


@dataclass(frozen=True)
class EpsilonReport:
    """An epsilon with what computed it.

    ``accountant`` produced the figure; ``requested`` is the one asked for. After a fallback,
    ``failures`` lists every accountant that failed before (name, reason), and the figure is the
    producing accountant's value at ``evaluated_delta`` (<= ``delta``) plus ``allowance``: the
    requested accountant's ``fallback_allowance`` (see :func:`account` for why that is sound).
    """

    epsilon: float
    delta: float
    accountant: str
    requested: str
    fallback_reason: Optional[str] = None
    failures: tuple[tuple[str, str], ...] = ()
    evaluated_delta: Optional[float] = None
    allowance: float = 0.0

    @property
    def fell_back(self) -> bool:
        return self.accountant != self.requested

    @property
    def raw_epsilon(self) -> float:
        """The producing accountant's own value (at ``evaluated_delta``), before the allowance."""
        return self.epsilon - self.allowance

    @property
    def statement(self) -> str:
        """How the figure was produced, in one line (empty when the requested accountant produced it)."""
        if not self.fell_back:
            return ""
        failed = "; ".join(f"{name} failed ({reason})" for name, reason in self.failures)
        text = f"figure by {self.accountant} after {failed}"
        if self.allowance:
            text += (
                f"; evaluated at delta {self.evaluated_delta:.6g} and raised by {self.allowance:g}, the error bound of "
                f"{self.requested}, so it is never below what {self.requested} would have reported"
            )
        return text

    def cross_check(self, history: Sequence[Segment]) -> "CrossCheck":
        """The producing accountant's own value beside its independent reference (see :func:`cross_check`)."""
        delta = self.evaluated_delta if self.evaluated_delta is not None else self.delta
        return cross_check(history, delta=delta, accountant=self.accountant, value=self.raw_epsilon)

    def to_dict(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": _ACCOUNTANTS[self.accountant].describe(),
            "requested_accountant": self.requested,
            "fallback_reason": self.fallback_reason,
            "fallback": None
            if not self.fell_back
            else {
                "order": list(fallback_order(self.requested)),
                "failed": [{"accountant": name, "reason": reason} for name, reason in self.failures],
                "evaluated_delta": self.evaluated_delta,
                "allowance": self.allowance,
                "statement": self.statement,
            },
        }


def account_all(
    histories: Sequence[Sequence[Segment]],
    *,
    delta: float,
    accountant: str = DEFAULT_ACCOUNTANT,
    fallback: bool = True,
) -> list[EpsilonReport]:
    """Epsilons of several histories by one accountant: the first of the fallback chain that evaluates them all.

    One accountant for all figures keeps figures that are compared with each other (a ledger's spent,
    planned and total) comparable. See :func:`account` for the chain and why its figures are sound.

    Raises:
        InputError: invalid arguments or unknown accountant.
        AccountantFailure: every accountant of the chain failed (or, with ``fallback=False``, the
            requested one did); the message lists each reason.
    """
    requested = getattr(accountant, "value", accountant)
    order = fallback_order(requested) if fallback else (requested,)
    delta = _check_delta(delta)
    hists = [normalize_history(h) for h in histories]
    factor, added = _ACCOUNTANTS[requested].fallback_allowance or (1.0, 0.0)
    failures: list[tuple[str, str]] = []
    for name in order:
        fell_back = bool(failures)
        at = delta * factor if fell_back else delta
        try:
            values = [create_accountant(name).epsilon(h, delta=at) for h in hists]
        except AccountantFailure as exc:
            failures.append((name, exc.reason))
            continue
        reason = "; ".join(f"{n}: {r}" for n, r in failures) or None
        return [
            EpsilonReport(
                # an empty history spends exactly 0: no error bound to make up for
                epsilon=v + (added if fell_back and h else 0.0),
                delta=delta,
                accountant=name,
                requested=requested,
                fallback_reason=reason,
                failures=tuple(failures),
                evaluated_delta=at if fell_back else None,
                allowance=added if fell_back and h else 0.0,
            )
            for v, h in zip(values, hists)
        ]
    if not fallback:
        raise AccountantFailure(failures[0][1])
    raise AccountantFailure(
        "no accountant could evaluate this history (" + "; ".join(f"{n}: {r}" for n, r in failures) + ")",
        advice="use more noise, fewer steps or a larger delta",
    )


def account(
    history: Sequence[Segment],
    *,
    delta: float,
    accountant: str = DEFAULT_ACCOUNTANT,
    fallback: bool = True,
) -> EpsilonReport:
    """Epsilon of `history` at `delta`, falling back along :data:`FALLBACK_ORDER` when an accountant fails.

    The requested accountant is tried first; on :class:`AccountantFailure` (a numerical failure,
    or a history outside what it evaluates) the next one of the chain is tried. The report names
    the accountant that produced the figure and every failure before it. Use this, not
    :func:`epsilon_of_history`, for any figure shown to a user: the latter evaluates exactly one
    accountant and raises when it fails.

    Why the figure is sound. Every accountant here returns an upper bound on the mechanism's
    true epsilon at delta, eps*(delta), which is what the failed accountant bounds too; no
    accountant's figure is ever below eps*(delta). Beyond that, when the requested accountant
    has a known error bound (``fallback_allowance``; PRV: its value at delta is at most
    eps*(delta * 0.998) + 0.02, by Gopi et al.'s guarantee), the fallback figure is B(delta *
    0.998) + 0.02 for the producing accountant B. As B(delta * 0.998) >= eps*(delta * 0.998),
    that figure is never below what the requested accountant would have reported had it worked,
    and it is still a valid bound at delta (a bound at a smaller delta holds at a larger one).
    No maximum over accountants is taken: the first success produces the figure.

    Why it is monotone in delta. Each accountant's epsilon is non-increasing in delta (RDP and
    PLD by construction, PRV as verified on grids down to its float64 limit), and the accountants
    that fail at some delta fail at every smaller one (their grids and truncations only grow as
    delta shrinks). Across a switch from the requested accountant A (working at delta1) to a
    fallback B (at delta2 < delta1), the allowance gives B(delta2 * 0.998) + 0.02 >= eps*(delta2
    * 0.998) + 0.02 >= eps*(delta1 * 0.998) + 0.02 >= A(delta1). Without the allowance a
    fallback from PRV to the tighter PLD would drop by about 0.01 at the switch (measured on the
    issue-15 settings: PRV 0.0547 at 1e-10, PLD 0.0534 at 1e-11).

    Args:
        history: segments ``(noise_multiplier, sample_rate, steps)``.
        delta: target delta, in (0, 1).
        accountant: the requested accountant ("prv" default, "pld", "rdp").
        fallback: False evaluates the requested accountant only (its failure propagates).

    Raises:
        InputError: invalid arguments or unknown accountant.
        AccountantFailure: no accountant of the chain could evaluate the history.
    """
    return account_all([history], delta=delta, accountant=accountant, fallback=fallback)[0]


def noise_multiplier_for(
    *,
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = DEFAULT_ACCOUNTANT,
    tolerance: float = 0.01,
) -> float:
    """Smallest noise multiplier whose epsilon is <= `target_epsilon` (within `tolerance`).

    With ``tol = min(tolerance, target_epsilon / 20)`` (an absolute 0.01 by default, as Opacus,
    but never coarser than 5% of a small target), the returned sigma satisfies
    ``target - tol <= epsilon(sigma) <= target`` as computed
    by `accountant` (the upper inequality always; the lower one unless the accountant's epsilon
    jumps there, e.g. PRV's discretisation). The same role as Opacus' ``get_noise_multiplier``
    (whose default epsilon tolerance, 0.01, is kept), but bracketed from the cheap RDP solution
    and refined by safeguarded interpolation (see ``_search.smallest_sigma``), so a PRV search
    costs a handful of PRV evaluations. Deterministic.

    Every point is evaluated by :func:`account`, i.e. with the fallback chain: where the requested
    accountant fails (PRV at tiny noise or tiny delta), the fallback figure counts, which is never
    below what the requested accountant would have reported, so the epsilon stays non-increasing
    in sigma. Points no accountant can evaluate count as "above target", so the search only moves
    towards more noise and the answer is always a verified one; ``account(...)`` at the returned
    sigma names the accountant that produced its epsilon.

    Raises:
        InputError: invalid arguments; target_epsilon <= 0; steps == 0 (nothing to calibrate);
            a target unreachable below sigma = 1e6 (or, for PRV, not above its eps_error 0.01);
            or no evaluable sigma near the target.
    """
    name = getattr(accountant, "value", accountant)
    create_accountant(name)
    q = _check_sample_rate(sample_rate)
    n = _check_steps(steps)
    delta = _check_delta(delta)
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, numbers.Real) or not math.isfinite(target_epsilon):
        raise InputError(f"target epsilon must be a finite number > 0, got {target_epsilon!r}")
    target = float(target_epsilon)
    if target <= 0:
        raise InputError(
            f"target epsilon {target:g} is unreachable: DP-SGD always spends epsilon > 0; pass a positive --target-epsilon"
        )
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 < tolerance < math.inf:
        raise InputError(f"tolerance must be a number > 0, got {tolerance!r}")
    if n == 0:
        raise InputError("steps is 0: no noise is needed for a run that takes no step; pass the planned --steps")
    if name == "prv" and target <= PRV_EPS_ERROR:
        raise InputError(
            f"target epsilon {target:g} is unreachable with prv: its upper bound adds eps_error {PRV_EPS_ERROR}; "
            "use --accountant pld, or a larger target"
        )

    def rdp_f(sigma: float) -> Optional[float]:
        return _rdp_to_epsilon(_rdp_vector([Segment(sigma, q, n)]), delta)

    def acc_f(sigma: float) -> Optional[float]:
        try:
            return account([Segment(sigma, q, n)], delta=delta, accountant=name).epsilon
        except AccountantFailure:
            return None

    unreachable = InputError(
        f"target epsilon {target:g} is unreachable at sample rate {q:g}, {n} steps, delta {delta:g}: "
        f"the noise multiplier would have to exceed {MAX_NOISE_MULTIPLIER:g}; raise the target, or lower "
        "--steps or the sample rate"
    )
    tol = min(float(tolerance), target / 20)
    try:
        # RDP bounds the tight accountants from above, so its sigma is (nearly) an upper bracket.
        guess: Optional[_search.SearchResult] = _search.smallest_sigma(
            rdp_f,
            target=target,
            tolerance=tol if name == "rdp" else target / 20,  # for prv/pld only a bracket start
            start=1.0,
            ceiling=MAX_NOISE_MULTIPLIER,
        )
    except _search.Unreachable:
        # Opacus' RDP cannot go below log(1/delta)/62 (its largest order is 63); PLD can.
        if name == "rdp":
            raise unreachable from None
        guess = None
    if name == "rdp":
        assert guess is not None
        return guess.sigma
    try:
        result = _search.smallest_sigma(
            acc_f,
            target=target,
            tolerance=tol,
            start=guess.sigma if guess is not None else 1.0,
            ceiling=MAX_NOISE_MULTIPLIER,
            factor=1.15 if guess is not None else 2.0,
        )
    except _search.Unreachable:
        raise unreachable from None
    if target - result.epsilon > tol and result.unevaluable:
        raise InputError(
            f"no accountant can evaluate epsilon near the target {target:g} at delta {delta:g} (each fails numerically "
            "there): use a larger delta or target"
        )
    return result.sigma


# ---------------------------------------------------------------------------------------------
# the cross-check



@dataclass(frozen=True)
class CrossCheck:
    """The chosen accountant's epsilon beside an independent reference and whether they agree.

    ``agree`` is None when the reference could not be computed (``note`` says why).
    ``lower``/``upper`` is the window the primary value must fall in (``upper`` None: no upper
    limit, because that accountant is looser by design).
    """

    accountant: str
    epsilon: float
    delta: float
    reference: str
    reference_epsilon: Optional[float]
    lower: Optional[float]
    upper: Optional[float]
    agree: Optional[bool]
    note: str

    def to_dict(self) -> dict:
        return {
            "accountant": _ACCOUNTANTS[self.accountant].describe(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "reference": _ACCOUNTANTS[self.reference].describe(),
            "reference_epsilon": self.reference_epsilon,
            "window": {"lower": self.lower, "upper": self.upper},
            "agree": self.agree,
            "note": self.note,
        }


def cross_check(
    history: Sequence[Segment], *, delta: float, accountant: str = DEFAULT_ACCOUNTANT, value: Optional[float] = None
) -> CrossCheck:
    """Epsilon by `accountant` beside an independent reference, with a stated tolerance.

    `value` is the accountant's epsilon when the caller has already computed it (it is not
    recomputed); :meth:`EpsilonReport.cross_check` passes the producing accountant's own value.

    Reference: Google's PLD (``dp_accounting``), a code base independent of Opacus; when the
    primary accountant is PLD itself, the reference is Opacus' RDP.

    Every accountant here returns an upper bound on the same true epsilon, and PLD (pessimistic,
    interval 1e-4) is within a few 1e-3 of it at the settings in reference/dp.md section 3. With
    ``slack = CROSS_CHECK_ABS + CROSS_CHECK_REL * reference`` (0.005 + 0.1%):

    - **prv** must lie in ``[pld - slack, pld + 2 * 0.01 + slack]``. Below: PRV would claim less
      loss than a tight independent computation allows, so one of them is wrong. Above: PRV's
      upper bound is its estimate + eps_error (0.01) and the estimate is within eps_error of the
      truth, so it can exceed the truth by at most 0.02; more is implausible. (Measured over the
      dp.md table and eps up to 92: PRV - PLD is 0.0100 to 0.0122.)
    - **rdp** must be ``>= pld - slack`` only. RDP is looser by design (7% at T1, 35% at T8, 5x at
      T15's tiny epsilon), so no upper limit is meaningful; the ratio is reported in ``note``.
    - **pld** must be ``<= rdp + slack``: a tight bound above a valid looser one means an error.
    - any other registered accountant: ``[pld - slack, pld + slack]`` if its class says it is
      tight, else ``>= pld - slack``.

    "Disagree" therefore always means "the primary value may be too optimistic (or implausibly
    off)", which is what a reviewer of a privacy claim needs to hear.

    Raises:
        InputError: as :func:`epsilon_of_history` for the primary accountant. A failure of the
            reference does not raise: ``agree`` is None and ``note`` says why.
    """
    primary = getattr(accountant, "value", accountant)
    if value is None:
        value = epsilon_of_history(history, delta=delta, accountant=primary)
    reference = "rdp" if primary == "pld" else "pld"
    try:
        ref = epsilon_of_history(history, delta=delta, accountant=reference)
    except AccountantFailure as exc:
        return CrossCheck(primary, value, float(delta), reference, None, None, None, None, f"{reference} not computed: {exc.reason}")
    slack = CROSS_CHECK_ABS + CROSS_CHECK_REL * ref
    if primary == "prv":
        lower, upper = ref - slack, ref + 2 * PRV_EPS_ERROR + slack
        note = f"PRV - PLD = {value - ref:+.4f} (expected about +{PRV_EPS_ERROR}: PRV reports an upper bound)"
    elif primary == "pld":
        lower, upper = None, ref + slack
        note = f"PLD is {ref / value:.3g}x tighter than RDP" if value > 0 else "no steps: both are 0"
    elif _ACCOUNTANTS[primary].tight:
        lower, upper = ref - slack, ref + slack
        note = f"{primary} - PLD = {value - ref:+.4f}"
    else:
        lower, upper = ref - slack, None
        label = primary.upper() if primary == "rdp" else primary
        note = f"{label} is {value / ref:.3g}x the PLD value (looser by design)" if ref > 0 else "no steps: both are 0"
    agree = (lower is None or value >= lower) and (upper is None or value <= upper)
    return CrossCheck(primary, value, float(delta), reference, ref, lower, upper, agree, note)


# ---------------------------------------------------------------------------------------------
# the default delta


def default_delta(n_units: int) -> float:
    """Default delta for a dataset of `n_units` privacy units (documents or data subjects).

    Rule: ``min(1e-5, 10**-k)`` with k the smallest integer such that ``10**k >= 10 * n_units``;
    i.e. the largest power of ten that is at most ``1 / (10 * N)``, and never above 1e-5.
    N <= 10,000 gives 1e-5, N = 60,000 gives 1e-6, N = 1,000,000 gives 1e-7.

    Why: delta is the probability that the epsilon guarantee fails outright, and a mechanism that
    publishes each unit with probability delta is (0, delta)-DP; with delta near 1/N it would
    publish about one unit in full (Dwork and Roth, "The Algorithmic Foundations of Differential
    Privacy", 2014, section 2.3). Guidance is therefore delta well below 1/N: "orders of magnitude
    less than 1/N" (Opacus maintainers), "significantly smaller than 1/N" (Ponomareva et al., "How
    to DP-fy ML", JAIR 2023, arXiv 2303.00654). The factor 10 is that margin at least once; the
    1e-5 ceiling keeps small datasets at the value most published DP-SGD results use (dp.md
    section 3), and a power of ten keeps the figure readable in reports. Its cost in epsilon is
    small: epsilon grows roughly with sqrt(log(1/delta)).

    Raises:
        InputError: n_units is not a whole number >= 1.
    """
    if isinstance(n_units, bool) or not isinstance(n_units, numbers.Integral) or n_units < 1:
        raise InputError(f"the number of privacy units must be a whole number >= 1, got {n_units!r}")
    k = 0
    while 10**k < 10 * int(n_units):
        k += 1
    return min(1e-5, float(f"1e-{k}"))
