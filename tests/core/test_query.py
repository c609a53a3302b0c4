"""The query language parser."""

import ipaddress
from datetime import UTC, datetime

import pytest

from correlator.query import Cidr, Prefix, QueryError, Range, Term, Text, Wildcard, parse_query, parse_time, tokens
from correlator.store import open_store


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


def test_star_anywhere_is_a_wildcard_and_a_trailing_one_a_prefix():
    assert parse_query("dns.question.name:*.exfil-tunnel.example a:*x* b:x*y c:pre* d:* e:/a?b").clauses == (
        Wildcard("dns.question.name", "*.exfil-tunnel.example"),
        Wildcard("a", "*x*"),
        Wildcard("b", "x*y"),
        Prefix("c", "pre"),
        Prefix("d", ""),
        Term("e", "/a?b"),  # no star: `?` is a literal character of an exact value (URLs)
    )


@pytest.mark.parametrize("query, column", [("x:1 dns.question.name:a?c*", 24), ('x:1 m:"a b?*"', 11), ("u:*?", 4)])
def test_question_mark_in_a_pattern_is_a_located_error(query, column):
    with pytest.raises(QueryError, match=rf"query term \d+ .*character {column}: '\?' is not a wildcard") as err:
        parse_query(query)
    assert query[column - 1] == "?"
    assert str(err.value).count("\n") == 0


NAMES = ["c2.exfil-tunnel.example", "x.EXFIL-TUNNEL.example", "exfil-tunnel.example", "a.exfil-tunnel.example.org",
         "50%_off[1].example", "50x_off[1].example", "50%Xoff1.example"]


@pytest.mark.parametrize("pattern, want", [
    ("*.exfil-tunnel.example", lambda n: n.endswith(".exfil-tunnel.example")),
    ("*exfil*", lambda n: "exfil" in n),
    ("*%_off[1]*", lambda n: "%_off[1]" in n),
    ("50*[1]*", lambda n: n.startswith("50") and "[1]" in n[2:]),
])
def test_readme_suffix_query_finds_the_names_python_says_match(tmp_path, pattern, want):
    """The README's `dns.question.name:*.exfil-tunnel.example` on the SQLite store, checked against str methods:
    case-sensitive, `%`, `_` and `[` literal, any element of a list field."""
    store = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
    store.init()
    events = [{"@timestamp": f"2024-05-01T10:00:0{i}.000000Z", "event.id": f"e{i}", "dns.question.name": n,
               "related.hosts": ["a.example", n]} for i, n in enumerate(NAMES)]
    store.write_events(events)
    for field in ("dns.question.name", "related.hosts"):
        got = {e["dns.question.name"] for e in store.search_events(parse_query(f"{field}:{pattern}"))}
        assert got == {n for n in NAMES if want(n)} != set()
    store.close()


def test_parse_time_forms():
    now = datetime(2024, 5, 2, tzinfo=UTC)
    assert parse_time("24h", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_time("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time(None) is None
    with pytest.raises(QueryError):
        parse_time("last tuesday")


def test_numbers_beyond_what_stores_hold_are_text_or_located_errors(sqlite_store):
    """An integer beyond 64 bits cannot equal a stored number: it is matched as text, never an OverflowError;
    non-finite bounds and times beyond datetime's years are located errors."""
    from correlator.query import QueryError, parse_query, parse_time

    sqlite_store.write_events([{"@timestamp": "2026-11-02T09:00:01Z", "event.id": "big", "network.bytes": 2**63 - 1,
                                "labels.serial": "99999999999999999999"}])
    assert sqlite_store.count_events(parse_query("labels.serial:99999999999999999999")) == 1
    assert sqlite_store.count_events(parse_query("network.bytes:99999999999999999999")) == 0
    assert sqlite_store.count_events(parse_query(f"network.bytes:{2**63 - 1}")) == 1
    for bad in ("network.bytes:>=1e400", "network.bytes:<nan", "network.bytes:[0 TO inf]"):
        with pytest.raises(QueryError, match="query term 1"):
            parse_query(bad)
    for bad in ("99999999999999d", "1e400", "99999999999999999999"):
        with pytest.raises(QueryError, match="time"):
            parse_time(bad)
