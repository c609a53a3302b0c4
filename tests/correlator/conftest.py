"""Fixtures for the correlator tests: the Sigma corpus (regression cases, SigmaHQ rule tree)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sigma_dir(corpus: Path) -> Path:
    path = corpus / "sigma"
    if not (path / "regression" / "INDEX.tsv").is_file():
        pytest.fail(f"Sigma corpus incomplete: {path / 'regression' / 'INDEX.tsv'} missing")
    return path


def regression_rows(root: Path) -> list[dict[str, str]]:
    with (root / "sigma" / "regression" / "INDEX.tsv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))
