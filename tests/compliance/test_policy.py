"""Policy validation: every error names file, line and field; valid SCA and soc policies load."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sensors.compliance import PolicyError, load_policy, parse_policy

HEAD = """\
policy:
  id: p
  name: P
  description: test policy
"""


def policy_text(checks: str, extra: str = "") -> str:
    return HEAD + extra + "checks:\n" + textwrap.indent(textwrap.dedent(checks), "  ")


def error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "bad.yml")
    return info.value


@pytest.mark.parametrize(("checks", "line", "field", "words"), [
    ("- {id: 1, title: t, condition: all, rules: ['x:/etc/passwd']}\n", 6, "checks[0].rules[0]", "unknown rule type"),
    ("- id: 1\n  title: t\n  condition: most\n  rules: ['f:/a']\n", 8, "checks[0].condition", "not one of"),
    ("- id: 1\n  title: t\n  rules: ['f:/a']\n  condition: all\n  colour: red\n", 10, "checks[0].colour",
     "unknown field"),
    ("- id: 1\n  condition: all\n  rules: ['f:/a']\n", 6, "checks[0].title", "missing"),
    ("- {id: 1, title: a, condition: all, rules: ['f:/a']}\n- {id: 1, title: b, condition: all, rules: ['f:/b']}\n",
     7, "checks[1].id", "duplicate check id 1"),
    ("- id: one\n  title: t\n  condition: all\n  rules: ['f:/a']\n", 6, "checks[0].id", "positive integer"),
    ("- id: 1\n  title: t\n  condition: all\n  rules:\n    - 'f:/a'\n    - 'f:/etc/x -> r:(unclosed'\n", 11,
     "checks[0].rules[1]", "invalid regex"),
    ("- id: 1\n  title: t\n  condition: all\n  rules:\n    - 'f:/a -> n:^x\\s+\\d+ compare <= 3'\n", 10,
     "checks[0].rules[0]", "capture group"),
    ("- id: 1\n  title: t\n  condition: all\n  rules: ['f:/a -> n:^x(\\d+) compare about 3']\n", 9,
     "checks[0].rules[0]", "bad comparison"),
    ("- id: 1\n  title: t\n  condition: all\n  rules: ['f:$nope -> r:x']\n", 9, "checks[0].rules[0]",
     "undefined variable $nope"),
    ("- id: 1\n  title: t\n  condition: all\n  rules: ['tls:10.1.2.3:443 -> r:x']\n", 9, "checks[0].rules[0]",
     "loopback"),
    ("- id: 1\n  title: t\n  condition: all\n  rules: ['c:id']\n", 9, "checks[0].rules[0]", "content checks"),
    ("- id: 1\n  title: t\n  severity: urgent\n  condition: all\n  rules: ['f:/a']\n", 8, "checks[0].severity",
     "not one of"),
    ("- id: 1\n  title: t\n  condition: all\n  rules: []\n", 9, "checks[0].rules", "non-empty"),
])
def test_errors_name_file_line_and_field(checks, line, field, words):
    exc = error(policy_text(checks))
    assert (exc.file, exc.line, exc.field) == ("bad.yml", line, field)
    assert words in exc.message
    assert str(exc).startswith(f"bad.yml:{line}: {field}: ")


def test_yaml_syntax_error_has_its_line():
    exc = error(HEAD + "checks:\n  - id: 1\n    title: [unclosed\n")
    assert exc.field == "<yaml>" and exc.line == 8


def test_missing_sections_and_bad_variables():
    assert error("policy: {id: p, name: n, description: d}\n").field == "<document>.checks"
    exc = error(policy_text("- {id: 1, title: t, condition: all, rules: ['f:/a']}\n",
                            "variables:\n  nodollar: /etc\n"))
    assert (exc.line, exc.field) == (6, "variables.nodollar")
    exc = error("policy: {id: p, name: n}\nchecks: []\n")
    assert exc.field == "policy.description"


def test_valid_policy_model(tmp_path: Path):
    text = policy_text("""\
        - id: 7
          title: "SSH"
          description: d
          rationale: r
          remediation: fix it
          severity: critical
          references: [https://example.org]
          compliance:
            - cis: ["5.2.1"]
            - nist_800_53: ["AC-3", "CM-6"]
          condition: none
          rules:
            - 'not f:$f -> r:^PermitRootLogin\\s+yes'
        """, "variables:\n  $f: /etc/ssh/sshd_config,/etc/ssh/other\nrequirements:\n  title: linux\n"
             "  condition: any\n  rules: ['f:/etc/os-release']\n")
    path = tmp_path / "ok.yml"
    path.write_text(text)
    pol = load_policy(path)
    check = pol.checks[0]
    assert (check.id, check.severity, check.condition) == (7, "critical", "none")
    assert check.compliance == {"cis": ["5.2.1"], "nist_800_53": ["AC-3", "CM-6"]}
    rule = check.rules[0]
    assert rule.negated and rule.type == "f" and rule.location == "/etc/ssh/sshd_config,/etc/ssh/other"
    assert pol.requirements.condition == "any"
    assert load_policy(path, {"$f": "/x"}).checks[0].rules[0].location == "/x"


def test_shipped_baseline_validates():
    pol = load_policy(Path(__file__).resolve().parents[2] / "rules" / "compliance" / "national_baseline.yml")
    assert len(pol.checks) >= 25
    for check in pol.checks:
        assert check.remediation and check.compliance.get("nist_800_53"), check.id


def test_duplicate_keys_are_errors_not_silently_dropped():
    exc = error(policy_text("- id: 1\n  title: t\n  condition: all\n  rules: ['f:/a']\n  rules: ['f:/b']\n"))
    assert (exc.line, exc.field) == (10, "<yaml>") and "duplicate key 'rules'" in exc.message


def test_binary_policy_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "blob.yml"
    path.write_bytes(b"policy:\n  id: \xff\xfe\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (info.value.line, info.value.field) == (2, "<file>") and "UTF-8" in info.value.message


# Defects found by tests/fuzz/test_compliance_yaml.py: each raised a bare exception, mislocated, or loaded a bad value.
CHECK = "- {id: 1, title: t, condition: all, rules: ['f:$x']}\n"
BOMB = "".join(f"  $b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9 if i else ["lol"] * 9) + "]\n" for i in range(7))


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    (HEAD + "checks: " + "[" * 5000 + "]" * 5000 + "\n", 5, "<yaml>", "nesting depth"),  # was RecursionError
    (HEAD + "checks: " + "[" * 70 + "]" * 70 + "\n", 5, "<yaml>", "nested deeper than 64"),
    (HEAD + "? [a]\n: 1\n" + "checks: []\n", 5, "<yaml>", "a key must be a plain value"),  # was TypeError
    (policy_text(CHECK, "variables:\n" + BOMB + "  $x: *b6\n"), 11, "<yaml>", "alias bomb"),  # was 9^6 "lol,lol..."
    (policy_text(CHECK, "variables:\n  $x: &r [*r]\n"), 6, "<yaml>", "recursive alias"),  # was "[[...]]"
    (policy_text("- {id: 1, title: 2024-02-30, condition: all, rules: ['f:/a']}\n"), 6, "<yaml>",
     "day is out of range"),  # was ValueError from PyYAML's timestamp constructor
    (policy_text("- {id: " + "9" * 5000 + ", title: t, condition: all, rules: ['f:/a']}\n"), 6, "<yaml>",
     "bad int value"),  # was ValueError (int() of 5,000 digits)
    (policy_text("- {id: !!int '', title: t, condition: all, rules: ['f:/a']}\n"), 6, "<yaml>", "bad int value"),
    (policy_text("- {id: 1, title: !!timestamp x, condition: all, rules: ['f:/a']}\n"), 6, "<yaml>",
     "bad timestamp value"),  # were IndexError and AttributeError inside PyYAML (fuzz-found)
    (policy_text("- {id: 0x" + "f" * 5000 + ", title: t, condition: all, rules: ['f:/a']}\n"), 6, "checks[0].id",
     "positive integer up to 2147483647, got int"),  # was accepted: an id str() cannot print
    (policy_text("- {id: 1, title: t, condition: all, rules: ['f:/a -> n:^x(\\d+) compare <= " + "9" * 5000 + "']}\n"),
     6, "checks[0].rules[0]", "bad comparison"),  # was ValueError
    (policy_text("- {id: 1, title: t, condition: all, rules: ['f:/a -> r:a{99999999999999999999}']}\n",
                 "").replace("  description: test policy\n", "  description: d\n  regex_type: pcre2\n"), 7,
     "checks[0].rules[0]", "repetition number is too large"),  # was OverflowError
    (policy_text("- {id: 1, title: t, condition: all, rules: ['f:/a -> r:" + "(" * 2000 + ")" * 2000 + "']}\n",
                 "").replace("  description: test policy\n", "  description: d\n  regex_type: pcre2\n"), 7,
     "checks[0].rules[0]", "invalid regex"),  # was RecursionError
    (policy_text(CHECK) + "# \x00\n", 7, "<yaml>", "unacceptable character #x0000"),  # was line 0
    (policy_text("- {id: 1, title: t, condition: all, rules: ['f:/a'], compliance: [{cis: [[1]]}]}\n"), 6,
     "checks[0].compliance", "{framework: [ids]}"),  # was accepted as "[1]"
])
def test_hostile_yaml_is_a_located_policy_error(text, line, field, words):
    exc = error(text)
    assert (exc.file, exc.line, exc.field) == ("bad.yml", line, field), exc
    assert words in exc.message


def test_variables_are_substituted_once_not_chained():
    """`$a: $b$b…` chains grew 10^n per level (a variable bomb); Wazuh looks each variable up once."""
    vars_ = "".join(f"  $v{i}: '" + f"$v{i + 1}" * 10 + "'\n" for i in range(8)) + "  $v8: x\n"
    pol = parse_policy(policy_text("- {id: 1, title: t, condition: all, rules: ['f:$v7']}\n",
                                   "variables:\n" + vars_), "ok.yml")
    assert pol.checks[0].rules[0].location == "$v8" * 10


def test_cli_validate_prints_file_text_verbatim_on_stderr(tmp_path: Path):
    """A field named `[/x]` made rich raise MarkupError (a traceback) in `soc compliance validate`."""
    from typer.testing import CliRunner

    from soc_cli.main import app

    bad = tmp_path / "bad.yml"
    bad.write_text(HEAD + '"[/x]": 1\nchecks: []\n')
    res = CliRunner().invoke(app, ["compliance", "validate", str(bad)])
    assert res.exit_code == 2, res.exception  # not 1: no traceback
    assert res.stderr == f"{bad}:5: <document>.[/x]: unknown field (allowed: policy, requirements, variables, " \
                         f"checks)\n{bad}:6: checks: must be a non-empty list\n" and res.stdout == ""


def test_cli_validate_line_100_is_not_an_emoji(tmp_path: Path):
    """rich turned `file:100: ...` into `file💯 ...` (its `:100:` emoji code)."""
    from typer.testing import CliRunner

    from soc_cli.main import app

    bad = tmp_path / "bad.yml"
    bad.write_text(HEAD + "#\n" * 95 + "colour: red\nchecks: []\n")
    res = CliRunner().invoke(app, ["compliance", "validate", str(bad)])
    assert res.exit_code == 2 and res.stderr.startswith(f"{bad}:100: <document>.colour: unknown field"), res.stderr


@pytest.mark.parametrize(("text", "line"), [("policy: [p", 1), (HEAD + 'checks: "abc', 5), ("? ", 1)])
def test_yaml_error_at_end_of_input_names_the_last_line(text, line):
    """libyaml marks end-of-input one line past the last (fuzz-found)."""
    assert error(text).line == line


def test_lone_surrogate_in_text_is_located():
    """parse_policy(str) with a lone surrogate raised UnicodeEncodeError inside libyaml (fuzz-found)."""
    exc = error(HEAD + "x: \ud800\n")
    assert (exc.line, exc.field) == (5, "<yaml>")
    assert exc.message == f"character {len(HEAD) + 3} is not text (surrogates not allowed)"


def test_a_key_with_a_line_break_stays_on_one_located_line():
    exc = error(HEAD + '"a\\nb": 1\nchecks: []\n')
    assert str(exc) == "bad.yml:5: <document>.a\\nb: unknown field (allowed: policy, requirements, variables, checks)"
