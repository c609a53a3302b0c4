"""The `soc` entry point: global options and the command groups."""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from correlator.policy.loader import one_line
from soc_cli.common import JsonOpt, die, err_console, print_ndjson, state

app = typer.Typer(
    name="soc",
    help="soc — a national SOC toolkit: network sensors, Sigma detection, classification policy, compliance scans."
         "\n\nExample: soc demo\n\nExample: soc -v --store sqlite:///tmp/soc.db alerts list --since 24h",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each group lives in soc_cli/<name>.py and exposes `app`.
GROUPS = ["store", "events", "sensor", "logs", "rules", "alerts", "hunt", "compliance", "policy", "audit", "share",
          "demo", "incident", "pcap", "timeline", "triage", "report", "playbook", "integrity"]


def groups_to_load(argv: list[str]) -> list[str]:
    """Run as `soc [--store X] [--config F] [-v] GROUP …`, only that group (start-up: the groups' libraries take
    ~1 s to import); anything else (help, `soc version`, a typo, the app imported by tests) loads them all."""
    if Path(argv[0]).name != "soc":
        return GROUPS
    args = iter(argv[1:])
    for arg in args:
        if arg in ("--store", "--config"):
            next(args, None)
        elif not arg.startswith("-"):
            return [arg] if arg in GROUPS else GROUPS
    return GROUPS


for _name in groups_to_load(sys.argv):
    _module = importlib.import_module(f"soc_cli.{_name}")
    app.add_typer(_module.app, name=_name)


CONFIG_KEYS = ("store", "clearance", "policy", "home_net", "sensor_name")
_STR = "tag:yaml.org,2002:str"


def config_path(flag: Path | None) -> Path:
    """--config / SOC_CONFIG, else `$XDG_CONFIG_HOME/soc/config.yaml` (`~/.config/soc/config.yaml`)."""
    return flag or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "soc" / "config.yaml"


def parse_config(text: str, path: str = "<config>") -> tuple[dict[str, Any], list[str]]:
    """Validate config YAML: the settings and every problem as `file:line: key: reason`.

    Keys: `store`, `policy`, `sensor_name` (strings), `clearance` (a level name or rank), `home_net` (CIDRs:
    comma-separated or a list); the nested form `sensor: {name, home_net}` is also read (docs/sensors.md)."""
    problems: list[tuple[int, str]] = []

    def fail(node: yaml.Node, key: str, reason: str) -> None:
        line = node.start_mark.line + 1
        problems.append((line, f"{path}:{line}: {one_line(key)}: {one_line(reason)}"))

    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, UnicodeEncodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        return {}, [f"{path}:{mark.line + 1 if mark else 1}: yaml: {one_line(reason)}"]
    if root is None:
        return {}, []
    if not isinstance(root, yaml.MappingNode):
        fail(root, "config", f"must be a mapping of settings ({', '.join(CONFIG_KEYS)})")
        return {}, [p for _, p in problems]

    def text_of(node: yaml.Node, key: str, rank: bool = False) -> str | None:
        allowed = (_STR, "tag:yaml.org,2002:int") if rank else (_STR,)
        if isinstance(node, yaml.ScalarNode) and node.tag in allowed and str(node.value).strip():
            return str(node.value)
        got = node.tag.rsplit(":", 1)[-1] if isinstance(node, yaml.ScalarNode) else type(node).__name__[:-4].lower()
        fail(node, key, f"must be a {'level name or rank' if rank else 'non-empty string'}, got {got}")
        return None

    def networks(node: yaml.Node, key: str) -> list[str] | None:
        out: list[str] = []
        ok = True
        for item in node.value if isinstance(node, yaml.SequenceNode) else [node]:
            value = text_of(item, key)
            ok = ok and value is not None
            for net in filter(None, (n.strip() for n in (value or "").split(","))):
                try:
                    out.append(str(ipaddress.ip_network(net, strict=False)))
                except ValueError as exc:
                    ok = False
                    fail(item, key, f"{net!r} is not a network (CIDR): {exc}")
        return out if ok else None

    readers = {"store": text_of, "policy": text_of, "sensor_name": text_of, "home_net": networks,
               "clearance": lambda n, k: text_of(n, k, rank=True)}
    pairs: list[tuple[yaml.Node, str, str, yaml.Node]] = []  # (key node, as written, setting, value node)
    for key_node, value in root.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
        if key == "sensor" and isinstance(value, yaml.MappingNode):
            for k, v in value.value:
                sub = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                if sub in ("name", "home_net"):
                    pairs.append((k, f"sensor.{sub}", "sensor_name" if sub == "name" else "home_net", v))
                else:
                    fail(k, f"sensor.{sub}", "unknown key (known: name, home_net)")
        elif key == "sensor":
            fail(value, key, "must be a mapping (name, home_net)")
        elif key in readers:
            pairs.append((key_node, key, key, value))
        else:
            fail(key_node, key, f"unknown key (known: {', '.join(CONFIG_KEYS)}, sensor)")
    settings: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for key_node, written, key, value in pairs:
        if key in seen:
            fail(key_node, written, f"{key} is already set at line {seen[key]}")
            continue
        seen[key] = key_node.start_mark.line + 1
        got = readers[key](value, written)
        if got is not None:
            settings[key] = got
    return settings, [p for _, p in sorted(problems, key=lambda lp: lp[0])]


def load_config(flag: Path | None) -> dict[str, Any]:
    """The validated config (an absent default file is empty); exits 2 naming every problem."""
    path = config_path(flag)
    if flag is None and not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        die(f"{path}: cannot read the config file: {getattr(exc, 'strerror', None) or exc}")
    settings, problems = parse_config(text, str(path))
    for problem in problems:
        err_console.print(problem, highlight=False, markup=False, emoji=False, soft_wrap=True)
    if problems:
        die(f"config {path} is invalid ({len(problems)} problem(s))")
    return settings


def say_context(config: Path) -> None:
    """-v: which config file, store and policy this run uses (a store URI's password masked), on stderr."""
    from correlator.store import default_uri
    from soc_cli.common import policy_path

    store = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", state["store"] or default_uri())
    err_console.print(f"config: {config}{'' if config.exists() else ' (absent)'}\nstore: {store}\n"
                      f"policy: {policy_path()}", highlight=False, markup=False, soft_wrap=True)


@app.callback()
def main(
    store: Annotated[str | None, typer.Option("--store", envvar="SOC_STORE", show_envvar=True,
                                              help="Store URI (sqlite:///path.db or http(s)://host:9200).")] = None,
    config: Annotated[Path | None, typer.Option("--config", envvar="SOC_CONFIG", show_envvar=True,
                                                help="Config file (default ~/.config/soc/config.yaml).")] = None,
    verbose: Annotated[int, typer.Option(
        "-v", "--verbose", count=True, metavar="",
        help="-v: say which config, store and policy are used; -vv: also the libraries' debug log "
             "(Elasticsearch requests). On stderr.")] = 0,
) -> None:
    """Global options apply to every command."""
    state["config"] = load_config(config)
    state["store"] = store or state["config"].get("store")
    state["verbose"] = verbose
    if verbose:
        say_context(config_path(config))
    if verbose >= 2:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.DEBUG)


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print soc's version and the versions of the engines it uses.

    Example: soc version --json
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    for pkg in ("soc", "pysigma", "elasticsearch", "scapy", "typer", "rich"):
        try:
            found: str | None = v(pkg)
        except PackageNotFoundError:
            found = None
        if as_json:
            print_ndjson({"package": pkg, "version": found})
        else:
            typer.echo(f"{pkg} {found or '(not installed)'}")


if __name__ == "__main__":
    app()
