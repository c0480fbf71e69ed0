"""The pure bracketing search behind noise calibration, on closed-form functions."""

from __future__ import annotations

import pytest

from flexaudit.privacy._search import Unreachable, smallest_sigma


def test_finds_the_smallest_sigma_within_tolerance():
    result = smallest_sigma(lambda s: 4.0 / s, target=0.5, tolerance=1e-3, start=1.0, ceiling=1e6)
    assert 0.5 - 1e-3 <= result.epsilon <= 0.5 and result.sigma == pytest.approx(8.0, rel=3e-3)
    assert result.evaluations < 20


def test_unevaluable_points_only_push_towards_more_noise():
    f = lambda s: None if s < 3.0 else 4.0 / s  # noqa: E731 - an accountant failing at small noise
    result = smallest_sigma(f, target=2.0, tolerance=1e-3, start=1.0, ceiling=1e6)
    assert result.sigma >= 3.0 and result.epsilon <= 2.0 and result.unevaluable >= 1


def test_unreachable_past_the_ceiling():
    with pytest.raises(Unreachable):
        smallest_sigma(lambda s: 1.0 + 1.0 / s, target=0.5, tolerance=1e-3, start=1.0, ceiling=1e3)


def test_deterministic():
    run = lambda: smallest_sigma(lambda s: 3.0 / s**0.5, target=1.0, tolerance=1e-4, start=2.0, ceiling=1e6)  # noqa: E731
    assert run() == run()
