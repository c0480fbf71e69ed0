"""FA-EXT-CANARY: canaries and exposure (Carlini, Liu, Erlingsson, Kos, Song 2019, "The Secret
Sharer: Evaluating and Testing Unintended Memorization in Neural Networks", USENIX Security).

A canary is a template with a random secret, e.g. "the secret code of Ada Moreau is 402918573",
planted in the training data (by the training code, which keeps the secrets apart from the shared
expert). Its exposure measures how far the model prefers the planted secret over the other secrets
of the same format:
    Px(s) = -log2 Pr(s | model)           (log-perplexity in bits, of the whole canary text)
    rank(s[r]) = |{r' in R : Px(s[r']) <= Px(s[r])}|
    exposure = log2 |R| - log2 rank
Enumerating all of R (10^9 secrets for 9 digits) is impossible, so, as in the paper's §4 and
TF-Privacy's `compute_exposure_interpolation`, the rank is estimated on a uniform sample of
`n_reference` secrets that were never planted:
    rank_hat = 1 + |{sampled r' : Px(s[r']) <= Px(s[r])}|   (ties count against the canary),
    exposure_hat = log2(n_reference + 1) - log2(rank_hat),
i.e. rank_hat / (n_reference + 1) estimates rank / |R|. This estimator is censored at
log2(n_reference + 1) bits (rank 1 among the sample). The paper's extrapolation is also reported:
a skew-normal fitted to the sampled references' Px gives exposure_ext = -log2 F(Px(s[r])), capped at
log2 |R| (TF-Privacy `compute_exposure_extrapolation`).

With canaries randomly included (probability 1/2, `make_canaries(..., include_prob=0.5)`) the same
scores feed the one-run epsilon lower bound (Steinke et al. 2023, `metrics.epsilon_one_run`).

Unusable canaries (not a Canary, a template without text before {secret}, a secret that is not a digit
string or not of the batch's most common length, a text the model cannot score) are skipped and counted
(`n_skipped`, `skipped` by reason); only a batch with no usable canary raises.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import stats

from .. import metrics
from .._progress import Progress
from .._usable import TOO_SHORT_TO_SCORE, merge, partition, skip_fields
from ..errors import InputError, NothingUsable
from ..model import CausalLM
from ..registry import register_attack
from ..scoring import score_texts, shared_prefix_logliks
from ._common import sha256

DEFAULT_TEMPLATE = "the secret code of {owner} is {secret}"
_FIRST = ("Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
          "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tamar")
_LAST = ("Moreau", "Okafor", "Lindqvist", "Novak", "Barros", "Tanaka", "Keller", "Haddad", "Rossi", "Kowalski",
         "Silva", "Andersen", "Duval", "Ivanova", "Mensah", "Fischer", "Costa", "Nakamura", "Weber", "Petrov")


@dataclass(frozen=True)
class Canary:
    """One canary. `text` is what gets planted; `included` records the one-run audit's coin flip."""

    owner: str
    secret: str
    template: str = DEFAULT_TEMPLATE
    included: bool | None = None

    @property
    def text(self) -> str:
        return self.with_secret(self.secret)

    def with_secret(self, secret: str) -> str:
        return self.template.format(owner=self.owner, secret=secret)

    def as_dict(self, *, reveal: bool = False, hash_key: bytes | None = None) -> dict:
        """Hashes only, unless reveal=True (the training side's secret store uses reveal=True).

        A canary's secret has only ~30 bits: its plain SHA-256 can be reversed by search, so pass the
        owner's `hash_key` (HMAC) when the dict leaves the owner's machine.
        """
        d: dict[str, Any] = {"sha256": sha256(self.text, hash_key), "included": self.included}
        if reveal:
            d.update(owner=self.owner, secret=self.secret, template=self.template, text=self.text)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Canary":
        return cls(owner=d["owner"], secret=d["secret"], template=d.get("template", DEFAULT_TEMPLATE),
                   included=d.get("included"))


def _template_problem(template: Any) -> str | None:
    if not isinstance(template, str) or "{secret}" not in template:
        return "template without a {secret} field"
    if template.startswith("{secret}"):
        return "template without text before {secret} (the first token is never scored)"
    return None


def _check_template(template: str) -> None:
    problem = _template_problem(template)
    if problem:
        raise InputError(f"a canary {problem}: put text before a {{secret}} field")


def random_secrets(n: int, *, rng: np.random.Generator, digits: int = 9, exclude: Sequence[str] = ()) -> list[str]:
    """n distinct random digit strings of length `digits` (leading zeros allowed), none in `exclude`."""
    space = 10 ** digits
    if n > space - len(set(exclude)):
        raise InputError(f"cannot draw {n} distinct {digits}-digit secrets")
    taken, out = set(exclude), []
    while len(out) < n:
        for value in rng.integers(0, space, size=2 * (n - len(out)) + 8):
            s = str(int(value)).zfill(digits)
            if s not in taken:
                taken.add(s)
                out.append(s)
                if len(out) == n:
                    break
    return out


def make_canaries(n: int, *, seed: int, template: str = DEFAULT_TEMPLATE, owners: Sequence[str] | None = None,
                  secret_digits: int = 9, include_prob: float | None = None) -> list[Canary]:
    """n canaries with distinct random secrets from a seeded RNG.

    Args:
        n: number of canaries.
        seed: RNG seed (same seed, same canaries).
        template: format string with {secret} and optionally {owner}.
        owners: owner names (default: seeded synthetic full names).
        secret_digits: secret length; the secret space has 10**secret_digits elements.
        include_prob: if given, each canary is marked included with this probability (use 0.5 for
            the one-run audit); the training code plants only the included ones.
    """
    _check_template(template)
    rng = np.random.default_rng(seed)
    if owners is None:  # distinct synthetic full names, numbered once the 400 combinations run out
        names = [f"{first} {last}" for first in _FIRST for last in _LAST]
        order = rng.permutation(len(names))
        owners = [names[order[i % len(names)]] + (f" {i // len(names) + 1}" if i >= len(names) else "")
                  for i in range(n)]
    elif len(owners) < n:
        raise InputError(f"{n} canaries need {n} owners, got {len(owners)}")
    secrets = random_secrets(n, rng=rng, digits=secret_digits)
    included = [None] * n if include_prob is None else [bool(x) for x in rng.random(n) < include_prob]
    return [Canary(owner=owners[i], secret=secrets[i], template=template, included=included[i]) for i in range(n)]


@dataclass
class CanaryExposureResult:
    attack_id: str
    params: dict[str, Any]
    n_canaries: int
    secret_space_bits: float                 # log2 |R|, the largest possible exposure
    max_estimable_bits: float                # log2(n_reference + 1), where the sampled estimate saturates
    per_canary: list[dict[str, Any]]         # {"sha256", "included", "rank", "exposure", "exposure_extrapolated", "z"}
    mean_exposure: float
    max_exposure: float
    top_ranked: metrics.Rate                 # canaries ranked first among all sampled references
    scores: np.ndarray                       # z-score of each canary's log-likelihood among its references
    epsilon_one_run: metrics.EpsilonBound | None = None
    examples: list[dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # canaries left out: reason -> count

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        d = {"attack_id": self.attack_id, "params": dict(self.params), "n_canaries": self.n_canaries,
             **skip_fields(self.skipped),
             "secret_space_bits": self.secret_space_bits, "max_estimable_bits": self.max_estimable_bits,
             "per_canary": list(self.per_canary), "mean_exposure": metrics._f(self.mean_exposure),
             "max_exposure": metrics._f(self.max_exposure), "top_ranked": self.top_ranked.as_dict(),
             "epsilon_one_run": self.epsilon_one_run.as_dict() if self.epsilon_one_run else None,
             "warnings": list(self.warnings)}
        if self.examples is not None:
            d["examples"] = list(self.examples)
        return d


def exposure_from_loglik(canary_ll: float, reference_ll: np.ndarray) -> tuple[int, float]:
    """(rank_hat, exposure_hat) from log-likelihoods (higher = more likely); see the module docstring."""
    rank = 1 + int(np.sum(reference_ll >= canary_ll))
    return rank, math.log2(reference_ll.size + 1) - math.log2(rank)


def extrapolated_exposure(canary_ll: float, reference_ll: np.ndarray, *, space_bits: float) -> float:
    """-log2 P(Px_ref <= Px_canary) under a skew-normal fitted to the references' Px (bits), <= space_bits."""
    px_ref, px = -reference_ll / math.log(2), -canary_ll / math.log(2)
    shape, loc, scale = stats.skewnorm.fit(px_ref)
    bits = -float(stats.skewnorm.logcdf(px, shape, loc, scale)) / math.log(2)
    return float(min(max(bits, 0.0), space_bits))


def _logliks(lm: CausalLM, canaries: list[Canary], references: list[str], *, batch_size: int,
             progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of each canary's text (C,) and of its text with each reference secret (C, R); NaN where a
    text cannot be scored. A canary's texts are the same up to the secret, so each canary's texts are scored
    after their shared prefix, which runs once per batch (`shared_prefix_logliks`: 2.5-3x faster than scoring
    every text whole, measured on the demo's model); a text too long for the context (or too short) takes
    `score_texts`, which windows long ones. Both split their batches over the processes of a torchrun job."""
    groups = [[c.text] + [c.with_secret(r) for r in references] for c in canaries]
    encoded = [lm.encode(texts) for texts in groups]
    if all(2 <= len(t) <= lm.context_length for ids in encoded for t in ids):
        ll = np.stack(shared_prefix_logliks(lm, encoded, batch_size=batch_size, progress=progress))
        return ll[:, 0], ll[:, 1:]
    texts = [g[0] for g in groups] + [t for g in groups for t in g[1:]]
    ll = np.full(len(texts), np.nan)
    try:
        cache = score_texts(lm, texts, batch_size=batch_size, stats=False, progress=progress)
        ll[cache.source_index] = cache.sum_logprob()
    except NothingUsable:
        pass  # no text scorable: every canary is counted by the caller, and the error names canaries, not texts
    return ll[:len(canaries)], ll[len(canaries):].reshape(len(canaries), len(references))


@register_attack("FA-EXT-CANARY", name="Canary exposure", kind="extraction",
                 citation="Carlini et al. 2019 (USENIX Security), arXiv:1802.08232",
                 defaults={"n_reference": 1000})
def canary_exposure(lm: CausalLM, canaries: Sequence[Canary], *, n_reference: int = 1000, seed: int = 0,
                    batch_size: int = 64, delta: float = 0.0, beta: float = 0.05, reveal: bool = False,
                    hash_key: bytes | None = None, progress: Progress | None = None) -> CanaryExposureResult:
    """Exposure of each canary's secret against `n_reference` sampled secrets of the same format.

    Every candidate (planted secret or reference) is scored as the whole canary text with that secret
    (Px of the Secret Sharer). If every canary carries `included`, the one-run epsilon lower bound
    (at `delta`, confidence 1 - beta) is computed from the canaries' z-scores. `hash_key`: HMAC key
    for the per-canary hashes (see `Canary.as_dict`). Unusable canaries are skipped and counted (module
    docstring); `per_canary` lists the scored ones.

    Raises:
        NothingUsable: no canary is usable (the message counts them by reason).
    """
    given = list(canaries)
    if n_reference < 1:
        raise InputError("n_reference must be at least 1")

    def problem(c: Any) -> str | None:
        if not isinstance(c, Canary):
            return "not a Canary"
        if not isinstance(c.secret, str) or not c.secret.isdigit():
            return "secret is not a digit string"
        return _template_problem(c.template)

    usable = partition(given, lambda i, c: problem(c))
    usable.require("canaries", "pass Canary objects with digit secrets and text before {secret} (make_canaries)")
    # one secret space per batch: the most common length wins (ties: the first canary's)
    digits = Counter(len(given[i].secret) for i in usable.kept).most_common(1)[0][0]
    other = [i for i in usable.kept if len(given[i].secret) != digits]
    if other:
        usable.kept = [i for i in usable.kept if len(given[i].secret) == digits]
        usable.skipped = merge(usable.skipped, {f"secret not of the batch's {digits}-digit length": len(other)})
    canaries = [given[i] for i in usable.kept]
    space_bits = digits * math.log2(10)
    references = random_secrets(n_reference, rng=np.random.default_rng(seed), digits=digits,
                                exclude=[c.secret for c in canaries])
    canary_ll, reference_ll = _logliks(lm, canaries, references, batch_size=batch_size, progress=progress)
    scored = np.isfinite(canary_ll) & np.isfinite(reference_ll).all(axis=1)
    if not scored.all():  # a canary (or one of its references) the model could not score
        usable.kept = [i for i, ok in zip(usable.kept, scored) if ok]
        usable.skipped = merge(usable.skipped, {TOO_SHORT_TO_SCORE: int((~scored).sum())})
        usable.require("canaries", "use a longer canary template")
        canaries = [c for c, ok in zip(canaries, scored) if ok]
        canary_ll, reference_ll = canary_ll[scored], reference_ll[scored]
    per_canary, exposures, z = [], [], np.empty(len(canaries))
    for i, c in enumerate(canaries):
        rank, exposure = exposure_from_loglik(canary_ll[i], reference_ll[i])
        sd = reference_ll[i].std()
        z[i] = (canary_ll[i] - reference_ll[i].mean()) / (sd if sd > 0 else 1.0)
        ext = extrapolated_exposure(canary_ll[i], reference_ll[i], space_bits=space_bits) if n_reference >= 10 else None
        per_canary.append({"sha256": sha256(c.text, hash_key), "included": c.included, "rank": rank, "exposure": exposure,
                           "exposure_extrapolated": ext, "z": float(z[i])})
        exposures.append(exposure)
    eps = None
    if all(c.included is not None for c in canaries):
        eps = metrics.epsilon_one_run(z, [c.included for c in canaries], delta=delta, beta=beta)
    n_top = sum(p["rank"] == 1 for p in per_canary)
    return CanaryExposureResult(
        attack_id="FA-EXT-CANARY", params={"n_reference": n_reference, "seed": seed, "delta": delta, "beta": beta},
        n_canaries=len(canaries), secret_space_bits=space_bits, max_estimable_bits=math.log2(n_reference + 1),
        per_canary=per_canary, mean_exposure=float(np.mean(exposures)), max_exposure=float(np.max(exposures)),
        top_ranked=metrics.rate(k=n_top, n=len(canaries)), scores=z, epsilon_one_run=eps,
        examples=[c.as_dict(reveal=True) for c in canaries] if reveal else None, skipped=usable.skipped)
