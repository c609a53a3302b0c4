"""soc integrity: file integrity monitoring (baseline, scan, follow) and website defacement checks."""

from __future__ import annotations

import signal
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from correlator import audit
from correlator.store import StoreUnavailable, data_dir
from sensors.compliance import PolicyError
from sensors.compliance.rootfs import RootFS
from sensors.integrity import WatchPolicy, load_watch_policy
from sensors.integrity.baseline import Baseline, BaselineWriter, KeyError_, find_head, load_key
from sensors.integrity.events import EventMaker, LabelEnricher
from sensors.integrity.scan import ScanStats, owner_names, scan
from soc_cli.common import (
    ExitCode,
    JsonOpt,
    StoreOpt,
    active_policy,
    console,
    die,
    err_console,
    get_store,
    print_event,
    print_ndjson,
    warn,
)
from soc_cli.wiring import build_pipeline

app = typer.Typer(help="File integrity monitoring and website defacement checks: a keyed baseline in the store, "
                       "changes as events through the pipeline's rules.\n\n"
                       "Example: soc integrity scan --policy rules/integrity/example-watch.yml --root /srv/web01",
                  no_args_is_help=True)

PolicyArg = Annotated[Path, typer.Option("--policy", "-p", help="Watch policy (YAML): what to watch, attributes, "
                                                                "ignore patterns, labels (rules/integrity/).")]
RootOpt = Annotated[Path, typer.Option("--root", help="Watch this tree as if it were / (mounted image, fixture).")]
HostOpt = Annotated[str | None, typer.Option("--host", help="Host name (default: this host, or the root's name).")]
TABLE_ROWS = 200


def _levels() -> dict[str, tuple[int, str]]:
    return {lv.name: (lv.rank, lv.ar) for lv in active_policy().levels}


def _load(path: Path) -> WatchPolicy:
    try:
        return load_watch_policy(path, {k: v[0] for k, v in _levels().items()})
    except PolicyError as exc:
        for p in exc.problems:
            err_console.print(str(p), highlight=False, markup=False, emoji=False, soft_wrap=True)
        die(f"watch policy {path} is invalid ({len(exc.problems)} problem(s))")
    except (OSError, UnicodeDecodeError) as exc:
        die(f"{path}: cannot read the watch policy: {getattr(exc, 'strerror', None) or exc}")


def _target(root: Path, host: str | None) -> tuple[RootFS, str]:
    if not root.is_dir():
        die(f"{root}: --root is not a directory")
    fs = RootFS(str(root))
    return fs, host or (socket.gethostname() if fs.is_live else Path(fs.root).name)


def _key(create: bool) -> bytes:
    try:
        return load_key(data_dir(), create=create)
    except KeyError_ as exc:
        die(str(exc), ExitCode.FAILURE)


def _now() -> datetime:
    return datetime.now(UTC)


@app.command()
def baseline(
    policy: PolicyArg,
    root: RootOpt = Path("/"),
    host: HostOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Record the watched files' attributes as this host's baseline under the policy (read-only on the files).

    The baseline is stored sealed with a keyed hash ($SOC_INTEGRITY_KEY or $SOC_HOME/integrity.key, never in the
    store); the previous baseline stays in force until the new one is complete.

    Example: soc integrity baseline --policy rules/integrity/example-watch.yml --root /srv/web01 --host web01
    """
    pol = _load(policy)
    fs, host = _target(root, host)
    key = _key(create=True)
    st = get_store(store, create=True)
    try:
        previous = find_head(st, host, pol.id)
        writer = BaselineWriter(st, key, host, pol.id, pol.digest, _now().isoformat(),
                                previous.get("slot") if previous else None)
        stats = ScanStats()
        for _ in scan(fs, pol, EventMaker(pol, host, _now(), {}), None, writer, stats):
            pass
        for path in stats.unreadable[:20]:
            warn(f"{path}: cannot list this folder; it is not in the baseline")
        head = writer.commit()
        st.audit("integrity-baseline", {"host": host, "policy": pol.id, "entries": stats.entries,
                                        "root": fs.root, "policy_digest": pol.digest}, actor=audit.current_actor())
    except StoreUnavailable as exc:
        die(f"store unavailable, no baseline recorded: {exc}", ExitCode.FAILURE)
    finally:
        st.close()
    row = {"host": host, "policy": pol.id, "entries": stats.entries, "chunks": len(head["chunks"]),
           "created": head["created"]}
    if json_out:
        print_ndjson(row)
    else:
        console.print(f"baseline of {host} under {pol.id}: {stats.entries} entries", highlight=False)


@app.command("scan")
def scan_cmd(
    policy: PolicyArg,
    root: RootOpt = Path("/"),
    host: HostOpt = None,
    update: Annotated[bool, typer.Option("--update", help="Then make what was found the new baseline.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Keep watching (inotify) until SIGINT/SIGTERM, with a "
                                                          "full scan every --interval seconds; implies --update.")]
    = False,
    interval: Annotated[float, typer.Option("--interval", help="--follow: seconds between full scans.", min=1)]
    = 3600.0,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare the watched files with the stored baseline: each difference (and any edit of the stored baseline
    itself) is an event through the pipeline, where the shipped rules and the policy decide alerts.

    Exit 0: no difference (--follow: stopped by SIGINT/SIGTERM); 1: differences found (or no baseline); 3: events
    spooled (store unavailable).

    Example: soc integrity scan --policy rules/integrity/example-watch.yml --root /srv/web01 --host web01
    """
    pol = _load(policy)
    fs, host = _target(root, host)
    st = get_store(store)  # the baseline must be there: a scan never creates a store
    key = _key(create=False)
    levels = _levels()
    pipeline = build_pipeline(st)
    pipeline.enrichers.append(LabelEnricher())
    users, groups = owner_names(fs)
    try:
        head = _head(st, host, pol)
        found = _scan_once(fs, pol, host, st, key, head, pipeline, levels, users, groups, update or follow,
                           json_out)
        if follow:
            from sensors.integrity.follow import Follower

            stopping: dict[str, bool] = {"stop": False}

            def on_signal(_signum: int, _frame: object) -> None:
                stopping["stop"] = True

            old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                follower = Follower(fs, pol, host, _head(st, host, pol), st, key, audit.current_actor())

                def emit(events: list[dict[str, Any]]) -> None:
                    nonlocal found
                    found += len(events)
                    _run(pipeline, events, json_out)

                follower.run(lambda: EventMaker(pol, host, _now(), levels, users, groups), emit,
                             lambda: stopping["stop"], interval)
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
    finally:
        st.close()
    if pipeline.stats.spooled:
        raise typer.Exit(ExitCode.PARTIAL)
    if found and not follow:  # a follow stopped by a signal did its job: what it found went to the pipeline
        raise typer.Exit(ExitCode.FAILURE)


def _head(st: Any, host: str, pol: WatchPolicy) -> dict[str, Any]:
    try:
        head = find_head(st, host, pol.id)
    except StoreUnavailable as exc:
        die(f"store unavailable, cannot read the baseline: {exc}", ExitCode.FAILURE)
    if head is None:
        die(f"no baseline of {host} under policy {pol.id} (soc integrity baseline --policy {pol.path} creates it)",
            ExitCode.FAILURE)
    if head.get("policy_digest") != pol.digest:
        die(f"the baseline of {host} was taken under another version of {pol.path} (policy {pol.id}); compare "
            "under that version, or record a new baseline under this one")
    return head


def _scan_once(fs: RootFS, pol: WatchPolicy, host: str, st: Any, key: bytes, head: dict[str, Any], pipeline: Any,
               levels: dict[str, tuple[int, str]], users: dict[int, str], groups: dict[int, str], update: bool,
               json_out: bool) -> int:
    """One full scan against the stored baseline; events through the pipeline; the differences' count."""
    maker = EventMaker(pol, host, _now(), levels, users, groups)
    base = Baseline(st, key, head)
    writer = BaselineWriter(st, key, host, pol.id, pol.digest, maker.ts, head.get("slot")) if update else None
    stats = ScanStats()
    shown: list[dict[str, Any]] = []

    def watched():
        for ev in scan(fs, pol, maker, base, writer, stats):
            if json_out:
                print_event(ev)
            elif len(shown) < TABLE_ROWS:
                shown.append(ev)
            yield ev

    alerts_before = pipeline.stats.alerts
    pipeline.run(watched())
    for err in pipeline.stats.errors[:5]:
        warn(err)
    if writer is not None:
        writer.commit()
        st.audit("integrity-baseline-update", {"host": host, "policy": pol.id, "entries": stats.entries,
                                               "differences": stats.created + stats.changed + stats.deleted},
                 actor=audit.current_actor())
    found = stats.created + stats.changed + stats.deleted + stats.tampered
    for path in stats.unreadable[:20]:
        warn(f"{path}: cannot list this folder; what it holds was not compared")
    if not json_out:
        if shown:
            _table(shown, host)
        more = f" (first {TABLE_ROWS} shown)" if found > TABLE_ROWS else ""
        console.print(f"{host} under {pol.id}: {stats.entries} entries, {stats.created} created, {stats.changed} "
                      f"changed, {stats.deleted} deleted, {stats.tampered} baseline parts tampered{more}; "
                      f"{pipeline.stats.alerts - alerts_before} alerts", highlight=False)
    return found


def _run(pipeline: Any, events: list[dict[str, Any]], json_out: bool) -> None:
    for ev in events:
        if json_out:
            print_event(ev)
        else:
            console.print(ev["message"], highlight=False, markup=False)
    pipeline.run(events)


def _table(events: list[dict[str, Any]], host: str) -> None:
    table = Table(title=f"Integrity changes — {host}")
    for col in ("Change", "Path", "Attributes", "Old", "New"):
        table.add_column(col)
    for ev in events:
        old = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in ev.items() if k.startswith("soc.integrity.old."))
        new = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in ev.items() if k.startswith("soc.integrity.new."))
        table.add_row(ev["event.action"], ev["file.path"], ", ".join(ev.get("soc.integrity.changed", [])), old, new)
    console.print(table)


@app.command()
def web(
    url: Annotated[list[str], typer.Option("--url", help="A page of the state's own site (repeat for more).")],
    take_baseline: Annotated[bool, typer.Option("--baseline", help="Record the pages' fingerprints.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Compare the pages with their fingerprints.")] = False,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="Watch policy whose web: section names "
                                                                       "dynamic regions and known domains.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per page.", min=0.1)] = 10.0,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Website defacement: fingerprint pages (--baseline) or compare them with their fingerprints (--check):
    changed text or title, new external scripts, links or frames to unknown domains become events, and alerts.

    Exit 0: all pages fetched (and, with --check, unchanged); 1: a page changed or could not be fetched.

    Example: soc integrity web --url https://www.mof.gov.example/ --check --policy rules/integrity/example-watch.yml
    """
    from sensors.integrity.policy import WebPolicy
    from sensors.integrity.web import KIND, FetchError, compare, fetch, mac, normalize, web_event

    if take_baseline == check:
        die("give exactly one of --baseline and --check")
    bad_urls = [u for u in url if not u.startswith(("http://", "https://"))]
    if bad_urls:
        die(f"--url {bad_urls[0]}: expected an http:// or https:// URL")
    wpol = _load(policy).web if policy else WebPolicy()
    levels = _levels()
    label = (wpol.label, *levels[wpol.label]) if wpol.label else None
    st = get_store(store, create=take_baseline)  # --check reads fingerprints: it never creates a store
    key = _key(create=take_baseline)
    failed = changed = 0
    events: list[dict[str, Any]] = []
    now = _now()
    host = socket.gethostname()
    try:
        stored = {r.get("url"): r for r in st.records(KIND)} if check else {}
        for u in url:
            try:
                page = normalize(u, *fetch(u, timeout), wpol)
            except FetchError as exc:
                err_console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
                failed += 1
                continue
            if take_baseline:
                st.put_record(KIND, u, page.record(key, now.isoformat()))
                st.audit("integrity-web-baseline", {"url": u, "title": page.title}, actor=audit.current_actor())
                row = {"url": u, "title": page.title, "scripts": len(page.scripts), "domains": len(page.domains)}
                if json_out:
                    print_ndjson(row)
                else:
                    console.print(f"fingerprint of {u}: title {page.title!r}, {len(page.scripts)} external scripts, "
                                  f"{len(page.domains)} linked domains", highlight=False, markup=False)
                continue
            old = stored.get(u)
            if old is None:
                err_console.print(f"error: {u}: no fingerprint (soc integrity web --url {u} --baseline takes it)",
                                  highlight=False, markup=False, soft_wrap=True)
                failed += 1
                continue
            if old.get("mac") != mac(key, old):
                events.append(web_event(page, {}, now, host, label, tampered=True))
            findings = compare(old, page, wpol)
            if findings:
                changed += 1
                events.append(web_event(page, findings, now, host, label))
            elif not json_out:
                console.print(f"unchanged {u}", highlight=False, markup=False)
        if events:
            pipeline = build_pipeline(st)
            pipeline.enrichers.append(LabelEnricher())
            _run(pipeline, events, json_out)
            if not json_out:
                console.print(f"{changed} of {len(url)} pages changed; {pipeline.stats.alerts} alerts",
                              highlight=False)
            if pipeline.stats.spooled:
                raise typer.Exit(ExitCode.PARTIAL)
    except StoreUnavailable as exc:
        die(f"store unavailable: {exc}", ExitCode.FAILURE)
    finally:
        st.close()
    if failed or events:
        raise typer.Exit(ExitCode.FAILURE)
