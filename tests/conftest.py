"""Shared fixtures: the test corpus (loud when absent), a fresh SQLite store, a CLI runner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_missing: list[str] = []


def corpus_dir() -> Path:
    """The shared test corpus: $SOC_CORPUS, else ../shared/data beside the repository."""
    return Path(os.environ.get("SOC_CORPUS") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus directory; CI fails without it, a user's clone skips with a loud reason."""
    path = corpus_dir()
    if not (path / "pcaps").is_dir():
        message = f"TEST CORPUS ABSENT: {path} (set SOC_CORPUS); tests that compare with independent truth did not run"
        if os.environ.get("CI"):
            pytest.fail(message)
        _missing.append(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def audit_key_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The audit key and anchor file every test uses unless it sets its own: never the user's ($SOC_HOME)."""
    from correlator.audit import ANCHOR_ENV, KEY_ENV

    home = tmp_path_factory.mktemp("audit")
    saved = {k: os.environ.get(k) for k in (KEY_ENV, ANCHOR_ENV)}
    os.environ[KEY_ENV], os.environ[ANCHOR_ENV] = str(home / "audit.key"), str(home / "audit.anchors")
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def sqlite_store(tmp_path: Path):
    """A new, initialized SQLite store in a temporary directory."""
    from correlator.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
    store.init()
    yield store
    store.close()


@pytest.fixture
def soc_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate soc's data directory, spool and store in tmp_path for CLI runs."""
    monkeypatch.setenv("SOC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SOC_STORE", raising=False)
    monkeypatch.delenv("SOC_SPOOL_DIR", raising=False)
    return tmp_path


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest hook
    if _missing:
        terminalreporter.write_sep("!", "TEST CORPUS ABSENT", red=True, bold=True)
        terminalreporter.write_line(_missing[0], red=True)
