"""Stores: the embedded SQLite default and Elasticsearch for scale-out, behind one interface."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from correlator.store.base import Store, StoreError, StoreMissing, StoreRejected, StoreUnavailable, parse_retention
from correlator.store.spool import Spool

__all__ = [
    "Store", "StoreError", "StoreMissing", "StoreRejected", "StoreUnavailable", "Spool", "open_store", "default_uri",
    "data_dir", "spool_for", "parse_retention",
]

URI_HELP = ("use sqlite:///abs/path.db[?retention=90d], sqlite:relative/path.db, or http(s)://host:port for "
            "Elasticsearch")


def data_dir() -> Path:
    """soc's data directory: $SOC_HOME, else $XDG_DATA_HOME/soc, else ~/.local/share/soc."""
    if home := os.environ.get("SOC_HOME"):
        return Path(home)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "soc"


def default_uri() -> str:
    """$SOC_STORE, else the SQLite file in the data directory."""
    return os.environ.get("SOC_STORE") or f"sqlite:///{data_dir() / 'soc.db'}"


def spool_for(uri: str) -> Spool:
    """The spool that holds batches waiting for the store at `uri`."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Spool(Path(os.environ.get("SOC_SPOOL_DIR") or data_dir() / "spool") / key)


def open_store(uri: str | None = None, create: bool = True) -> Store:
    """Open the store named by `uri` (see URI_HELP). Raises StoreError with a clear message.

    Only soc's own data directory (the default store, no `uri` and no $SOC_STORE) is created when missing; the
    folder of an explicit SQLite path must exist. With `create=False` (a read) nothing is created: a SQLite file that
    does not exist or holds no tables raises StoreMissing.
    """
    if not uri and not os.environ.get("SOC_STORE"):
        if create:
            data_dir().mkdir(parents=True, exist_ok=True)
        elif not data_dir().is_dir():  # soc never wrote here: no store, not a wrong path
            raise StoreMissing.at(data_dir() / "soc.db")
    uri = uri or default_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        if parsed.netloc:
            raise StoreError(f"store URI {uri!r}: unexpected host {parsed.netloc!r}; {URI_HELP}")
        if not parsed.path:
            raise StoreError(f"store URI {uri!r}: no database path; {URI_HELP}")
        from correlator.store.sqlite import SQLiteStore

        options = parse_qs(parsed.query)
        try:
            timeout = int(options.pop("busy_timeout", ["10000"])[0])
        except ValueError:
            raise StoreError(f"store URI {uri!r}: busy_timeout must be milliseconds") from None
        retention = options.pop("retention", [None])[0]
        if retention is not None:
            try:
                parse_retention(retention)
            except ValueError as exc:
                raise StoreError(f"store URI {uri!r}: retention {exc}") from None
        if options:
            raise StoreError(f"store URI {uri!r}: unknown option(s) {', '.join(options)}; known: busy_timeout, "
                             "retention")
        return SQLiteStore(Path(parsed.path), uri, busy_timeout_ms=timeout, create=create, retention=retention)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise StoreError(f"store URI {uri!r}: no host; {URI_HELP}")
        from correlator.store.elastic import ElasticStore

        return ElasticStore(uri)
    raise StoreError(f"store URI {uri!r}: unknown scheme {parsed.scheme!r}; {URI_HELP}")
