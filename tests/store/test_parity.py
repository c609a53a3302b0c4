"""The same queries on the SQLite and the Elasticsearch store over the same events give identical results
(ids in order, counts, documents), and both agree with the brute-force oracle (tests/core/oracle.py)."""

from __future__ import annotations

import ipaddress
from datetime import datetime

import pytest
from core.oracle import QUERIES, expected, sample_events

from correlator.query import Cidr, Query, Term, Text, parse_query
from correlator.store import open_store
from correlator.store.elastic import is_ip_field

from .conftest import expect_gap

EVENTS = sample_events()

pytestmark = pytest.mark.es


def _extra_queries() -> list[str]:
    """Queries built from the data: an IPv6 address spelled out in full, exact multi-word values, combinations."""
    v6 = next(e["source.ip"] for e in EVENTS if ":" in e["source.ip"])
    two_words = next(e["message"] for e in EVENTS if e.get("message", "").count(" ") == 1)
    return [
        f"source.ip:{ipaddress.ip_address(v6).exploded}",
        f'message:"{two_words}"',
        f"message:{two_words.split()[0]}",  # exact value, not a word of it: matches one-word messages only
        "url.original:/Portal/Index",
        "url.original:/portal/index",
        "http.response.status_code:>=400 beacon",
        "event.kind:alert dns.question.name:a* related.ip:192.0.2.0/24",
        "192.0.2.1",
        "source.ip:10.0.0.0/8 destination.ip:2001:db8::/32",
        "network.bytes:[1000 TO 2000] event.category:network",
        "network.bytes:>99000.5",
        "event.dataset:soc.dns missing.field:[1 TO 2]",
    ]


def _windows() -> list[tuple[str | None, str | None]]:
    """No bounds; whole hours; and bounds equal to stored microsecond timestamps (since inclusive, until exclusive)."""
    micro = sorted(e["@timestamp"] for e in EVENTS if e["@timestamp"].endswith("001Z"))
    return [(None, None), ("2024-05-01T12:00:00Z", "2024-05-01T20:00:00Z"), (micro[2], micro[-3])]


CASES = [(q, w) for q in QUERIES + _extra_queries() for w in _windows()]


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory):
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('parity') / 'soc.db'}")
    store.init()
    assert store.write_events([dict(e) for e in EVENTS]) == len(EVENTS)
    yield store
    store.close()


@pytest.fixture(scope="module")
def elastic(es_server):
    store = es_server.store()
    store.init()
    assert store.write_events([dict(e) for e in EVENTS]) == len(EVENTS)
    store.refresh()
    yield store
    store.close()


def _query(text: str, window: tuple[str | None, str | None]) -> Query:
    since, until = (datetime.fromisoformat(w.replace("Z", "+00:00")) if w else None for w in window)
    return parse_query(text, since, until)


@pytest.mark.parametrize("text, window", CASES, ids=[f"{q or '*'}|{w[0] or ''}..{w[1] or ''}" for q, w in CASES])
def test_same_results_on_both_stores(request, es_server, sqlite, elastic, text, window):
    q = _query(text, window)
    want = expected(EVENTS, q, 10_000)
    if want:  # an emulator that returns nothing for a clause only fails where something should match
        if any(isinstance(c, Cidr) for c in q.clauses):
            expect_gap(request, es_server, "cidr")
        if any(isinstance(c, Text) for c in q.clauses):
            expect_gap(request, es_server, "text")
        if any(isinstance(c, Term) and is_ip_field(c.field) and str(ipaddress.ip_address(c.value)) != c.value
               for c in q.clauses):
            expect_gap(request, es_server, "ip_spelling")
    lite = sqlite.search_events(q, limit=10_000)
    es = elastic.search_events(q, limit=10_000)
    assert [e["event.id"] for e in lite] == want  # the SQLite store agrees with the oracle …
    assert [e["event.id"] for e in es] == want  # … and so does Elasticsearch, in the same order
    assert es == lite  # documents come back as they were written
    assert elastic.count_events(q) == sqlite.count_events(q) == len(want)
    assert [e["event.id"] for e in elastic.search_events(q, limit=7)] == want[:7]


def test_cases_are_discriminating():
    """Guard against a vacuous comparison: most cases must match some but not all events."""
    sizes = [len(expected(EVENTS, _query(q, w), 10_000)) for q, w in CASES]
    assert sum(0 < s < len(EVENTS) for s in sizes) >= len(CASES) * 0.75
