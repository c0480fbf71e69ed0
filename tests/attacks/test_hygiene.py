"""The blind baseline: chance on an IID split, a loud warning on a shifted one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attacks import InputError, blind_baseline
from attacks import testing as tiny


def test_iid_split_is_near_chance():
    texts = tiny.synthetic_texts(80, seed=4)
    rng = np.random.default_rng(0)
    idx = rng.permutation(80)
    res = blind_baseline([texts[i] for i in idx[:40]], [texts[i] for i in idx[40:]], n_bootstrap=200)
    assert res.auc < 0.65 and res.warning is None and res.folds == 5 and len(res.fold_aucs) == 5
    json.dumps(res.as_dict(), allow_nan=False)


def test_shifted_split_is_flagged():
    members = tiny.synthetic_texts(30, seed=5)
    shifted = [t.upper().replace(" ", ", ") + " Ref 2024-05-01" for t in tiny.synthetic_texts(30, seed=6)]
    res = blind_baseline(members, shifted, n_bootstrap=200)
    assert res.auc > 0.9 and "not trustworthy" in res.warning
    assert res.as_dict() == blind_baseline(members, shifted, n_bootstrap=200).as_dict()  # seeded


def test_needs_two_of_each():
    with pytest.raises(InputError):
        blind_baseline(["a b c"], ["d e f", "g h i"])
