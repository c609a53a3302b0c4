"""Policy validation: errors name file, line and field; the CLI exits 2; valid policies load exactly."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from correlator.policy import PolicyError, load_policy, parse_policy
from soc_cli.main import app
from tests.policy.conftest import BACKBONE

runner = CliRunner()

BASE = """\
name: t
organizations:
  - {id: a, name: A}
  - {id: b, name: B}
zones:
  - {id: net, default: true, max_level: public}
  - id: za
    organization: a
    max_level: secret
    cidrs: [10.1.0.0/16]
assets:
  - {id: s1, level: restricted, match: ["10.1.0.5:443"]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "p.yaml")
    return exc.value.problems


def test_shipped_policy_is_valid(policy):
    assert [lv.name for lv in policy.levels] == ["public", "restricted", "secret", "top-secret"]
    assert [lv.ar for lv in policy.levels] == ["عام", "محدود", "سري", "سري للغاية"]
    assert policy.default_zone.id == "internet" and len(policy.organizations) >= 5
    assert policy.level("سري").rank == 2 and policy.level("SECRET").rank == 2 and policy.level(3).name == "top-secret"


def test_default_ladder_when_levels_absent():
    p = parse_policy(BASE)
    assert [lv.name for lv in p.levels] == ["public", "restricted", "secret", "top-secret"]


@pytest.mark.parametrize("edit, where", [
    (("max_level: secret", "max_level: cosmic"), "p.yaml:9: zones[1].max_level: unknown level 'cosmic'"),
    (("cidrs: [10.1.0.0/16]", "cidrs: [10.1.0.1/16]"), "p.yaml:10: zones[1].cidrs: '10.1.0.1/16' is not a network"),
    (("organization: a", "organization: zz"), "p.yaml:8: zones[1].organization: unknown organization 'zz'"),
    (('match: ["10.1.0.5:443"]', 'match: ["10.1.0.5:99999"]'), "p.yaml:12: assets[0].match: '10.1.0.5:99999'"),
    (("  - {id: b, name: B}", "  - {id: b}"), "p.yaml:4: organizations[1].name: required field missing"),
    (("name: t", "name: t\nbogus: 1"), "p.yaml:2: policy.bogus: unknown field"),
    (("{id: net, default: true, max_level: public}", "{id: net, max_level: public}"),
     "zones: one zone must be `default: true`"),
])
def test_errors_name_file_line_field(edit, where):
    found = problems(BASE.replace(*edit))
    assert any(p.startswith(where) or where in p for p in found), found


def test_all_problems_reported_at_once():
    text = BASE.replace("max_level: secret", "max_level: cosmic").replace("level: restricted", "level: ultra")
    found = problems(text)
    assert len(found) == 2 and "zones[1].max_level" in found[0] and "assets[0].level" in found[1]


def test_yaml_syntax_error_has_line():
    found = problems(BASE + "  - {id: broken\n")
    assert found[0].startswith("p.yaml:") and "yaml" in found[0]


def test_more_semantic_checks():
    extra = """\
agreements:
  - {between: [a], up_to: secret}
protection:
  - {name: p, from_level: restricted, allowed: [rot13]}
exceptions:
  - {id: X1, owner: o, reason: r, rules: [teleport], scope: {ports: [21]}, expires: someday}
"""
    found = problems(BASE + extra)
    joined = "\n".join(found)
    for needle in ("agreements[0].between: an agreement needs at least two organizations",
                   "protection[0].allowed: 'rot13'", "exceptions[0].rules: unknown rule 'teleport'",
                   "exceptions[0].scope: name a source or destination network",
                   "exceptions[0].expires: 'someday' is not a date"):
        assert needle in joined, joined


def test_cli_validate(tmp_path):
    ok = runner.invoke(app, ["policy", "validate", str(BACKBONE), "--json"])
    assert ok.exit_code == 0 and '"valid":true' in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("max_level: secret", "max_level: cosmic"))
    res = runner.invoke(app, ["policy", "validate", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:9: zones[1].max_level: unknown level 'cosmic'" in res.stderr


def test_cli_explain_json():
    import json

    res = runner.invoke(app, ["policy", "explain", "--src", "10.10.3.3", "--dst", "10.1.0.10:443",
                              "--protocol", "tls", "--tls-version", "1.3", "--json"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["gov.label.level"] == "secret" and out["gov.policy.decision"] == "deny"
    assert set(out["gov.policy.violations"]) == {"write-down", "cross-organization", "caveat"}
    res = runner.invoke(app, ["policy", "explain", "--src", "nonsense", "--dst", "10.0.0.1"])
    assert res.exit_code == 2 and "--src" in res.stderr


def test_load_missing_file(tmp_path):
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path / "nope.yaml")
    assert exc.value.problems[0].startswith(f"{tmp_path / 'nope.yaml'}:1: file: cannot read")


def test_cli_show_and_es_roles(policy):
    import json
    from collections import Counter

    res = runner.invoke(app, ["policy", "show", "--json", "--policy", str(BACKBONE)])
    assert res.exit_code == 0, res.stderr
    kinds = Counter(json.loads(line)["kind"] for line in res.stdout.splitlines())
    assert kinds == {"level": len(policy.levels), "organization": len(policy.organizations), "zone": len(policy.zones),
                     "asset": len(policy.assets), "agreement": len(policy.agreements),
                     "protection": len(policy.profiles), "exception": len(policy.exceptions)}
    expired = {json.loads(x)["id"]: json.loads(x)["expired"] for x in res.stdout.splitlines() if '"exception"' in x}
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    assert expired == {x.id: x.expires < now for x in policy.exceptions} and expired["EXC-2025-031"] is True
    res = runner.invoke(app, ["policy", "es-roles", "--json"])
    assert [json.loads(x)["name"] for x in res.stdout.splitlines()] == [
        "soc_clearance_public", "soc_clearance_restricted", "soc_clearance_secret", "soc_clearance_top_secret"]


def test_invalid_policy_in_force_stops_commands(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("level: restricted", "level: ultra"))
    res = runner.invoke(app, ["policy", "show", "--policy", str(bad)])
    assert res.exit_code == 2 and f"{bad}:12: assets[0].level: unknown level 'ultra'" in res.stderr
    res = runner.invoke(app, ["share", "export", "-o", str(tmp_path / "b.json"), "--tlp", "purple"])
    assert res.exit_code == 2 and "--tlp 'purple'" in res.stderr


# Defects found by tests/fuzz/test_policy_yaml.py: each raised a bare exception, mislocated, or loaded a bad policy.
BOMB = "".join(f"x{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9 if i else ["lol"] * 9) + "]\n" for i in range(7))


@pytest.mark.parametrize("edit, where", [
    (("cidrs: [10.1.0.0/16]", "cidrs: [10.1.0.0/16]\n    vlans: ['²']"),
     "p.yaml:11: zones[1].vlans: '²' is not a VLAN"),
    (("cidrs: [10.1.0.0/16]", "cidrs: [10.1.0.0/16]\n    vlans: [" + "9" * 5000 + "]"),
     "p.yaml:11: zones[1].vlans: '9999"),
    (('match: ["10.1.0.5:443"]', 'match: ["10.1.0.5:' + "9" * 5000 + '"]'), "p.yaml:12: assets[0].match: '10.1.0.5:99"),
    (("assets:", "protection:\n  - {name: p, from_level: secret, allowed: ['tls>=1." + "2" * 5000 + "']}\nassets:"),
     "p.yaml:12: protection[0].allowed: 'tls>=1.22"),
])
def test_huge_or_unicode_numbers_are_located_errors(edit, where):
    """int('²') and int() of 5,000 digits raise ValueError: each used to escape the loader as a traceback."""
    assert any(p.startswith(where) for p in problems(BASE.replace(*edit)))


def test_empty_exception_scope_is_refused():
    """`scope: {}` names no network: the exception would silence its rules for every flow in the country."""
    text = BASE + ("exceptions:\n  - {id: E1, owner: o, reason: r, rules: [protection], scope: {},"
                   " expires: 2030-01-01}\n")
    assert problems(text) == ["p.yaml:14: exceptions[0].scope: name a source or destination network: "
                              "an exception must be narrow"]


def test_vlan_ids_are_normalised_as_events_carry_them():
    p = parse_policy(BASE.replace("cidrs: [10.1.0.0/16]", "cidrs: [10.1.0.0/16]\n    vlans: ['0110']"))
    assert p.zones[1].vlans == ("110",)  # an event's network.vlan.id 110 is str(110)


def test_alias_bomb_key_is_refused_without_expanding_it():
    """A collection used as a key was str()-ed: 9^7 nodes of repr (minutes, gigabytes) before the fix."""
    import time

    start = time.monotonic()
    found = problems(BOMB + "? *b6\n: 1\n")
    assert time.monotonic() - start < 1
    assert "p.yaml:7: policy: a key must be a plain name, not a list or mapping" in found  # where *b6 is defined


def test_control_character_and_quoted_newline_keys_are_located_on_one_line():
    assert problems(BASE + "x: \x00\n") == ["p.yaml:13: yaml: unacceptable character #x0000: "
                                            "control characters are not allowed"]
    assert problems(BASE + '"a\\nb": 1\n') == ["p.yaml:13: policy.a\\nb: unknown field (known: agreements, assets, "
                                               "caveats, clearance, exceptions, levels, name, organizations, "
                                               "protection, response, settings, zones)"]


def test_non_utf8_file_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.encode() + "# café\n".encode("latin-1"))
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    offset = len(BASE.encode()) + len("# caf")
    assert exc.value.problems == [f"{path}:13: file: not UTF-8 text (byte offset {offset}: invalid continuation byte)"]


@pytest.mark.parametrize("key", ["²", "4", "-1", -1, 99, "9" * 5000])
def test_level_by_unknown_rank_is_a_key_error(policy, key):
    """Policy.level documents KeyError; "²" raised ValueError, "4" IndexError and -1 returned top-secret."""
    with pytest.raises(KeyError):
        policy.level(key)


def test_cli_validate_prints_a_bracketed_name_verbatim(tmp_path):
    """`name: "[/x]"` is a valid policy; printing it as rich markup raised MarkupError (exit 1, traceback)."""
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace("name: t", 'name: "[/x] [bold]"'))
    res = runner.invoke(app, ["policy", "validate", str(path)])
    assert res.exit_code == 0, res.exception
    assert res.stdout.startswith(f"{path}: valid policy '[/x] [bold]': 4 levels, 2 organizations, 2 zones")


def test_cli_validate_line_100_is_not_an_emoji(tmp_path):
    """rich turned `file:100: ...` into `file💯 ...` (its `:100:` emoji code): every 100th line lost its place."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "#\n" * 87 + "bogus: 1\n")
    res = runner.invoke(app, ["policy", "validate", str(bad)])
    assert res.exit_code == 2 and res.stderr.startswith(f"{bad}:100: policy.bogus: unknown field"), res.stderr


@pytest.mark.parametrize("text, line", [("name: [t", 1), (BASE + "x: [a", 13), (BASE + 'x: "abc', 13)])
def test_yaml_error_at_end_of_input_names_the_last_line(text, line):
    """libyaml marks end-of-input one line past the last: `p.yaml:2:` for a one-line file (fuzz-found)."""
    assert problems(text)[0].startswith(f"p.yaml:{line}: yaml: ")


def test_lone_surrogate_in_text_is_located():
    """parse_policy(str) with a lone surrogate raised UnicodeEncodeError inside libyaml (fuzz-found)."""
    offset = len(BASE) + 3
    assert problems(BASE + "x: \ud800\n") == [f"p.yaml:13: yaml: character {offset} is not text (surrogates not "
                                               "allowed)"]


def test_a_level_name_with_a_line_break_stays_on_one_problem_line():
    """The ladder listed in `unknown level` printed a name's line break raw: one problem over two lines (fuzz-found)."""
    text = BASE.replace("name: t", 'name: t\nlevels: [{name: "lo\\nw", ar: a}, {name: high, ar: b}]')
    found = problems(text)
    assert found[0] == "p.yaml:7: zones[0].max_level: unknown level 'public' (levels: lo\\nw, high)"
    assert not any("\n" in p for p in found)


def test_response_rules_are_validated_and_located():
    """`response:` (the playbook rules) is part of the policy: each bad value is a located problem."""
    found = problems(BASE + "response:\n  two_person_rule: maybe\n  approval_ttl: -5\n  approval_impact: 101\n"
                            "  protected_assets: [10.0.0.1/8, 10.1.0.53]\n  bogus: 1\n")
    assert found == [
        "p.yaml:18: response.bogus: unknown field (known: approval_impact, approval_ttl, protected_assets, "
        "two_person_rule)",
        "p.yaml:14: response.two_person_rule: expected true or false, got 'maybe'",
        "p.yaml:15: response.approval_ttl: expected a whole number from 0 to 2592000, got '-5'",
        "p.yaml:16: response.approval_impact: expected a whole number from 0 to 100, got '101'",
        "p.yaml:17: response.protected_assets[0]: '10.0.0.1/8' is not a network: 10.0.0.1/8 has host bits set",
    ], found
