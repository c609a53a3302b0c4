"""The watch policy: the shipped example loads; every problem is reported with its line and field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import rules
from sensors.compliance.policy import PolicyError
from sensors.integrity.policy import ATTRIBUTES, load_watch_policy, parse_watch_policy
from tests.integrity.conftest import Host

LEVELS = {"public": 0, "restricted": 1, "secret": 2, "top-secret": 3}
EXAMPLE = Path(rules.__file__).parent / "integrity" / "example-watch.yml"


def test_shipped_example_loads() -> None:
    pol = load_watch_policy(EXAMPLE, LEVELS)
    assert pol.id == "ministry-web"
    paths = {w.path: w for w in pol.watches}
    assert paths["/var/www/html"].tags == ("webroot",) and paths["/var/www/html"].attributes == set(ATTRIBUTES)
    assert paths["/srv/records"].label == "secret"
    assert "mtime" not in paths["/etc"].attributes
    assert paths["/var/www/html"].ignore.match("cache/x.html", "x.html")  # watch pattern
    assert paths["/etc"].ignore.match("ssh/.sshd_config.swp", ".sshd_config.swp")  # policy-wide pattern
    assert not paths["/etc"].ignore.match("passwd", "passwd")
    assert pol.in_change_window(datetime(2026, 11, 29, 22, 30, tzinfo=UTC))  # a Sunday, 22:30 UTC
    assert not pol.in_change_window(datetime(2026, 11, 30, 22, 30, tzinfo=UTC))  # Monday


BAD = """\
policy: {id: "bad id", name: x}
watch:
  - path: etc
  - path: /var/www
    attributes: [sha256, colour]
    label: confidential
  - path: /var/www/
  - {path: /srv, colour: red}
change_windows:
  - {days: [someday], from: "25:00", to: "02:00"}
web:
  dynamic: ["#ok", "div[[["]
"""


def test_every_problem_is_located() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_watch_policy(BAD, "bad.yml", LEVELS)
    got = [(p.line, p.field) for p in exc.value.problems]
    assert got == [(1, "policy.id"), (3, "watch[0].path"), (5, "watch[1].attributes"), (6, "watch[1].label"),
                   (7, "watch[2].path"), (8, "watch[3].colour"), (10, "change_windows[0].days"),
                   (10, "change_windows[0].from"), (12, "web.dynamic")]
    text = "\n".join(map(str, exc.value.problems))
    assert "bad.yml:5: watch[1].attributes: unknown attribute(s) colour" in text
    assert "bad.yml:7: watch[2].path: /var/www is already watched at line 4" in text
    assert "unknown classification level 'confidential'" in text


def test_cli_names_file_line_and_field(host: Host) -> None:
    host.policy.write_text(BAD)
    res = host.soc("integrity", "baseline", "--policy", str(host.policy), "--root", str(host.root))
    assert res.returncode == 2
    assert f"{host.policy}:3: watch[0].path: 'etc' must be absolute" in res.stderr
    assert f"watch policy {host.policy} is invalid (9 problem(s))" in res.stderr
    assert not (Path(host.store.removeprefix("sqlite:///"))).exists()  # nothing written
