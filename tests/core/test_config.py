"""The config file (`~/.config/soc/config.yaml`, `--config`, SOC_CONFIG): every key README documents takes effect;
an unknown or mistyped key is a located error (`file:line: key: reason`, exit 2) and nothing runs."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.query import Query
from correlator.store import open_store
from soc_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PCAP = ROOT / "rules" / "samples" / "demo-ministry.pcap"
POLICY = ROOT / "rules" / "policy" / "national-backbone.yml"
runner = CliRunner()


def documented_keys() -> list[str]:
    """The keys README's Configuration paragraph names (`may set `a`, `b` … and `z`;`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = section.split("may set", 1)[1].split(";", 1)[0]
    return re.findall(r"`(\w+)`", listed)


@pytest.fixture
def config_home(soc_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_CONFIG_HOME in tmp: the default config path is `<it>/soc/config.yaml`; no SOC_* override around."""
    home = soc_env / "xdg"
    (home / "soc").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for var in ("SOC_CONFIG", "SOC_CLEARANCE", "SOC_POLICY"):
        monkeypatch.delenv(var, raising=False)
    return home / "soc" / "config.yaml"


def direction(src: str, dst: str, nets: list[str]) -> str:
    """network.direction as Suricata/ECS define it, from the home networks."""
    home = [ipaddress.ip_network(n) for n in nets]
    s_in = any(ipaddress.ip_address(src) in n for n in home)
    d_in = any(ipaddress.ip_address(dst) in n for n in home)
    return ("internal" if d_in else "outbound") if s_in else ("inbound" if d_in else "external")


def stored_events(db: Path) -> list[dict]:
    store = open_store(f"sqlite:///{db}")
    try:
        return store.search_events(Query(), limit=100_000)
    finally:
        store.close()


def test_every_documented_key_takes_effect(config_home: Path, tmp_path: Path) -> None:
    assert documented_keys() == ["store", "clearance", "policy", "home_net", "sensor_name"]
    db, nets = tmp_path / "from-config.db", ["10.10.0.0/16", "10.20.0.0/16"]
    config_home.write_text(f"store: sqlite:///{db}\nclearance: public\npolicy: {POLICY}\n"
                           f"home_net: {', '.join(nets)}\nsensor_name: gw-config\n")
    res = runner.invoke(app, ["sensor", "pcap", str(PCAP)])
    assert res.exit_code == 0, res.output
    events = [e for e in stored_events(db) if e.get("source.ip") and e.get("destination.ip")]
    assert events and {e["observer.name"] for e in events} == {"gw-config"}
    assert len({e["network.direction"] for e in events}) >= 3  # the two networks split the capture
    wrong = [e for e in events if e["network.direction"] != direction(e["source.ip"], e["destination.ip"], nets)]
    assert wrong == []
    who = json.loads(runner.invoke(app, ["policy", "whoami", "--json"]).stdout)
    assert (who["clearance"], who["source"]) == ("public", "config clearance")
    other = tmp_path / "other-policy.yml"
    other.write_text(POLICY.read_text(encoding="utf-8"), encoding="utf-8")
    config_home.write_text(f"policy: {other}\n")
    assert str(other) in json.loads(runner.invoke(app, ["policy", "whoami", "--json"]).stdout)["source"]


def test_the_nested_sensor_form_and_a_list_of_networks(config_home: Path, tmp_path: Path) -> None:
    db = tmp_path / "nested.db"
    config_home.write_text(f"store: sqlite:///{db}\nsensor:\n  name: gw-nested\n  home_net: [10.10.0.0/16]\n")
    assert runner.invoke(app, ["sensor", "pcap", str(PCAP)]).exit_code == 0
    events = [e for e in stored_events(db) if e.get("source.ip") and e.get("destination.ip")]
    assert {e["observer.name"] for e in events} == {"gw-nested"}
    assert all(e["network.direction"] == direction(e["source.ip"], e["destination.ip"], ["10.10.0.0/16"])
               for e in events)


BAD = """\
store: sqlite:///{db}
clearence: secret
home_net: [10.10.0.0/16, 300.1.1.1/8]
sensor_name: 7
sensor:
  name: gw1
  colour: red
policy:
"""


@pytest.mark.parametrize("how", ["default", "--config", "SOC_CONFIG"])
def test_unknown_and_mistyped_keys_are_located_errors(config_home: Path, tmp_path: Path, how: str) -> None:
    db = tmp_path / "never.db"
    path = config_home if how == "default" else tmp_path / "elsewhere.yaml"
    path.write_text(BAD.format(db=db))
    args = ["--config", str(path)] if how == "--config" else []
    env = {"SOC_CONFIG": str(path)} if how == "SOC_CONFIG" else {}
    res = runner.invoke(app, [*args, "store", "init"], env=env)
    assert res.exit_code == 2 and res.stdout == ""
    assert not db.exists()  # nothing ran
    lines = BAD.splitlines()

    def at(key: str, needle: str) -> str:
        return f"{path}:{next(i for i, x in enumerate(lines, 1) if needle in x)}: {key}: "

    expected = [at("clearence", "clearence:"), at("home_net", "300.1.1.1"), at("sensor_name", "sensor_name: 7"),
                at("sensor.name", "name: gw1"), at("sensor.colour", "colour:"), at("policy", "policy:")]
    errors = res.stderr.splitlines()
    assert [e[: len(x)] for e, x in zip(errors, expected, strict=False)] == expected, res.stderr
    assert "300.1.1.1/8" in errors[1] and "got int" in errors[2] and "already set at line 4" in errors[3]
    assert errors[-1] == f"error: config {path} is invalid (6 problem(s))"


def test_broken_or_missing_config(config_home: Path, tmp_path: Path) -> None:
    config_home.write_text("store: sqlite:///x.db\nclearance: [secret\n")
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 2 and res.stderr.startswith(f"{config_home}:3: yaml: "), res.stderr
    config_home.write_text("- store\n")
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 2 and res.stderr.startswith(f"{config_home}:1: config: must be a mapping"), res.stderr
    res = runner.invoke(app, ["--config", str(tmp_path / "absent.yaml"), "version"])
    assert res.exit_code == 2 and "absent.yaml: cannot read the config file" in res.stderr
    config_home.unlink()  # the default file may be absent
    assert runner.invoke(app, ["version"]).exit_code == 0
