"""The query language parser."""

import ipaddress
from datetime import UTC, datetime

import pytest

from correlator.query import Cidr, Prefix, QueryError, Range, Term, Text, parse_query, parse_time, tokens


def test_parses_every_clause_kind():
    q = parse_query('source.ip:10.0.0.0/8 destination.port:>=1024 dns.question.name:evil* beacon '
                    'http.response.status_code:[200 TO 299] user_agent.original:"curl 8" event.dataset:soc.dns')
    assert q.clauses == (
        Cidr("source.ip", ipaddress.ip_network("10.0.0.0/8")),
        Range("destination.port", gte=1024),
        Prefix("dns.question.name", "evil"),
        Text(("beacon",)),
        Range("http.response.status_code", gte=200, lte=299),
        Term("user_agent.original", "curl 8"),
        Term("event.dataset", "soc.dns"),
    )


def test_values_keep_types_and_ipv6_cidr():
    assert parse_query("destination.port:53").clauses == (Term("destination.port", 53),)
    assert parse_query("source.ip:2001:db8::/32").clauses == (Cidr("source.ip", ipaddress.ip_network("2001:db8::/32")),)
    assert parse_query("source.ip:2001:db8::1").clauses == (Term("source.ip", "2001:db8::1"),)
    assert parse_query("url.original:/a/b").clauses == (Term("url.original", "/a/b"),)  # not a CIDR


def test_free_text_tokenizes_like_the_stores():
    assert tokens("GET /Index.PHP?id=1 — Ünïcode_x") == ["get", "index", "php", "id", "1", "ünïcode", "x"]
    assert parse_query("Evil.COM").clauses == (Text(("evil", "com")),)


@pytest.mark.parametrize("bad", ["a:[x TO 3]", "a:>=ten", 'a:"open', "a:", "---"])
def test_bad_queries_say_where(bad):
    with pytest.raises(QueryError):
        parse_query(bad)


def test_parse_time_forms():
    now = datetime(2024, 5, 2, tzinfo=UTC)
    assert parse_time("24h", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_time("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time(None) is None
    with pytest.raises(QueryError):
        parse_time("last tuesday")
