"""Evaluation hygiene: the blind baseline (Das, Zhang, Tramèr 2024, "Blind Baselines Beat Membership
Inference Attacks for Foundation Models", arXiv:2406.16201).

A membership attack is only meaningful if members and non-members come from the same distribution;
otherwise a classifier that never looks at the model separates them too, and the "attack" measures the
shift. `blind_baseline` trains such a model-free classifier on the texts alone and reports its
cross-validated AUC. Ours is an L2-regularised logistic regression (numpy + scipy L-BFGS) on
  * length and character-class features (characters, words, mean word length, share of digits,
    upper-case letters, punctuation and whitespace), standardised, and
  * hashed bag-of-words and character 3-grams (CRC32 into `n_buckets`, log1p counts, L2-normalised);
the AUC is computed on pooled out-of-fold predictions of stratified k-fold cross-validation. An AUC
above `warn_above` (default 0.6) raises a warning: the membership numbers are then not trustworthy.
With a recorded random train/holdout split (our case) the AUC should be close to 0.5. Items that are no
text, or are empty, carry nothing to classify: they are skipped and counted (`n_skipped`, `skipped`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize, special

from . import metrics
from ._usable import describe, merge, partition, prefixed, skip_fields, text_reason
from .errors import NothingUsable

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class BlindBaselineResult:
    check_id: str
    auc: float
    auc_ci: metrics.Interval
    fold_aucs: list[float]
    n_members: int
    n_nonmembers: int
    folds: int
    warn_above: float
    warning: str | None
    skipped: dict[str, int] = field(default_factory=dict)  # texts left out ("member: ...", "non-member: ...")

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        return {"check_id": self.check_id, "auc": self.auc, "auc_ci": self.auc_ci.as_dict(),
                "fold_aucs": list(self.fold_aucs), "n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
                **skip_fields(self.skipped),
                "folds": self.folds, "warn_above": self.warn_above, "warning": self.warning,
                "classifier": "logistic regression on length, character-class and hashed word/char-3-gram features"}


def text_features(texts: Sequence[str], *, n_buckets: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(dense length/character-class features, hashed n-gram features) per text."""
    dense = np.zeros((len(texts), 7))
    grams = np.zeros((len(texts), n_buckets))
    for i, t in enumerate(texts):
        n = max(len(t), 1)
        words = _WORD.findall(t)
        dense[i] = [np.log1p(len(t)), np.log1p(len(words)), np.mean([len(w) for w in words]) if words else 0.0,
                    sum(c.isdigit() for c in t) / n, sum(c.isupper() for c in t) / n,
                    sum((not c.isalnum()) and not c.isspace() for c in t) / n, sum(c.isspace() for c in t) / n]
        low = t.lower()
        keys = [f"w:{w.lower()}" for w in words] + [f"c:{low[k:k + 3]}" for k in range(max(len(low) - 2, 0))]
        for key in keys:  # crc32, not hash(): Python's string hash is salted per process
            grams[i, zlib.crc32(key.encode("utf-8")) % n_buckets] += 1
    grams = np.log1p(grams)
    norms = np.linalg.norm(grams, axis=1, keepdims=True)
    return dense, grams / np.where(norms > 0, norms, 1.0)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights (last entry: intercept) minimising mean log-loss + l2/2 |w|^2 (intercept unpenalised)."""
    xb = np.hstack([x, np.ones((x.shape[0], 1))])
    sign = 2 * y - 1

    def loss_grad(w):
        z = xb @ w
        loss = np.mean(np.logaddexp(0, -sign * z)) + 0.5 * l2 * np.dot(w[:-1], w[:-1])
        g = xb.T @ (-sign * special.expit(-sign * z)) / len(y)
        g[:-1] += l2 * w[:-1]
        return loss, g

    res = optimize.minimize(loss_grad, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B",
                            options={"maxiter": 500})
    return res.x


def blind_baseline(member_texts: Sequence[str], nonmember_texts: Sequence[str], *, folds: int = 5,
                   seed: int = 0, l2: float = 1e-2, n_buckets: int = 2048, warn_above: float = 0.6,
                   n_bootstrap: int = 1000, alpha: float = 0.05) -> BlindBaselineResult:
    """Cross-validated AUC of a model-free member/non-member classifier; warns when it is high.

    Raises:
        NothingUsable: fewer than 2 usable members or non-members (the message counts the skipped).
    """
    sides = []
    for label, given in (("member", list(member_texts)), ("non-member", list(nonmember_texts))):
        part = partition(given, lambda i, t: text_reason(t))
        sides.append(([given[i] for i in part.kept], prefixed(label, part.skipped)))
    (member_texts, member_skipped), (nonmember_texts, nonmember_skipped) = sides
    skipped = merge(member_skipped, nonmember_skipped)
    texts = member_texts + nonmember_texts
    y = np.r_[np.ones(len(member_texts)), np.zeros(len(nonmember_texts))]
    smaller = int(min(len(member_texts), len(nonmember_texts)))
    if smaller < 2:
        left = f"; skipped: {describe(skipped)}" if skipped else ""
        raise NothingUsable(f"the blind baseline needs at least 2 usable members and 2 usable non-members, got "
                            f"{len(member_texts)} and {len(nonmember_texts)}{left}: pass non-empty texts",
                            skipped=skipped, n_items=len(texts) + sum(skipped.values()))
    folds = max(2, min(folds, smaller))
    dense, grams = text_features(texts, n_buckets=n_buckets)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(texts), dtype=int)
    for label in (0, 1):  # stratified: each class spread evenly over the folds
        idx = rng.permutation(np.flatnonzero(y == label))
        fold_of[idx] = np.arange(idx.size) % folds
    oof = np.empty(len(texts))
    fold_aucs = []
    for f in range(folds):
        train, test = fold_of != f, fold_of == f
        mu, sd = dense[train].mean(0), dense[train].std(0)
        sd = np.where(sd > 0, sd, 1.0)
        x = np.hstack([(dense - mu) / sd, grams])
        w = _fit_logistic(x[train], y[train], l2)
        oof[test] = x[test] @ w[:-1] + w[-1]
        fold_aucs.append(metrics.roc_auc(oof[test & (y == 1)], oof[test & (y == 0)]))
    auc = metrics.roc_auc(oof[y == 1], oof[y == 0])
    warning = None
    if auc > warn_above:
        warning = (f"a model-free classifier separates members from non-members (blind-baseline AUC {auc:.2f} > "
                   f"{warn_above}): member and non-member sets differ in distribution; MIA numbers are not trustworthy")
    return BlindBaselineResult(
        check_id="FA-HYG-BLIND", auc=auc,
        auc_ci=metrics.bootstrap_auc_ci(oof[y == 1], oof[y == 0], n_boot=n_bootstrap, alpha=alpha, seed=seed),
        fold_aucs=fold_aucs, n_members=len(member_texts), n_nonmembers=len(nonmember_texts), folds=folds,
        warn_above=warn_above, warning=warning, skipped=skipped)
