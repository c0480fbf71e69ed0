"""Fixtures for the compliance tests: small real expert packages, fake-but-realistic attack results
(computed once per session) and audit directories written from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from flexaudit.report.testing import dp_block, fake_report, fake_results, make_package


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def clean_results():
    return fake_results(leaky=False, seed=0)


@pytest.fixture(scope="session")
def leaky_results():
    return fake_results(leaky=True, seed=1)


@dataclass
class Audit:
    package: Path
    audit: Path
    report: dict


@pytest.fixture
def make_audit(tmp_path, clean_results, leaky_results):
    """make_audit(name, leaky=False, dp=False, **build_report overrides) -> Audit written to tmp_path."""
    from flexaudit.report import write_report

    def make(name: str = "clinical", *, leaky: bool = False, dp: bool = False, seed: int = 0, **overrides) -> Audit:
        pkg = make_package(tmp_path / "packages" / name, name=name, privacy=dp_block() if dp else None, seed=seed)
        report = fake_report(pkg, results=leaky_results if leaky else clean_results, **overrides)
        audit_dir = tmp_path / "audits" / name
        write_report(audit_dir, report)
        return Audit(pkg, audit_dir, report)

    return make
