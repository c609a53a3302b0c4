"""soc sensor: read pcap/pcapng files or capture live, turning packets into ECS events in the store."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from scapy.error import Scapy_Exception

from correlator.evidence import RingCapture
from correlator.query import QueryError
from correlator.store import data_dir
from correlator.triage import parse_duration
from sensors.capture import BpfFilter, CaptureError, NoSuchInterface, Record, file_size, live, read_file
from sensors.engine import Sensor
from sensors.metrics import serve as serve_metrics
from soc_cli.common import (
    ExitCode,
    JsonOpt,
    ProgressBar,
    StoreOpt,
    console,
    die,
    err_console,
    get_store,
    make_progress,
    print_ndjson,
    state,
)
from soc_cli.wiring import open_pipeline

app = typer.Typer(help="Network sensor: pcap files or a live interface → flows, DNS, HTTP, TLS, SSH, ICMP events.\n\n"
                       "Example: soc sensor pcap rules/samples/demo-ministry.pcap",
                  no_args_is_help=True)

BpfOpt = Annotated[str | None, typer.Option("--bpf", help="tcpdump-syntax filter, compiled by libpcap (the copy "
                                                           "that the cypcap wheel ships).")]
NameOpt = Annotated[str | None, typer.Option("--sensor-name", help="observer.name (default: config sensor_name, "
                                                                   "else the host name).")]
SeedOpt = Annotated[int, typer.Option("--community-id-seed", min=0, max=65535,
                                      help="Community ID seed (as Suricata's community-id-seed).")]
HomeOpt = Annotated[str | None, typer.Option(
    "--home-net", help="Comma-separated CIDRs of the protected networks; sets network.direction "
                       "(default: config home_net).")]


def _options(sensor_name: str | None, home_net: str | None) -> tuple[str | None, list[str]]:
    """The flags, else the config's `sensor_name` / `home_net` (validated by soc_cli.main.load_config)."""
    cfg = state.get("config") or {}
    name = sensor_name or cfg.get("sensor_name")
    nets = home_net.split(",") if home_net is not None else cfg.get("home_net", [])
    return name, [n for n in (x.strip() for x in nets) if n]


def _make_sensor(name: str | None, nets: list[str], source: str | None, seed: int = 0) -> Sensor:
    try:
        return Sensor(sensor_name=name, home_net=nets, source=source, community_seed=seed)
    except ValueError as exc:
        die(f"--home-net: {exc}")


def _bpf(expression: str | None) -> BpfFilter | None:
    if not expression:
        return None
    try:
        return BpfFilter(expression)
    except ValueError as exc:  # names the expression and libpcap's reason
        die(f"--bpf: {exc}")


def _damage(fstats: dict) -> dict:
    """The reader's account of a damaged file: counters and the located messages (`FILE: byte offset N: ...`)."""
    return {"file_truncated_records": fstats.get("file_truncated", 0),
            "damaged_regions": fstats.get("damaged_regions", 0), "damaged_bytes": fstats.get("damaged_bytes", 0),
            "damage": fstats.get("damage", [])}


def _summary(stats: dict, run: dict) -> None:
    ev = ", ".join(f"{k} {v}" for k, v in sorted(stats["events"].items())) or "none"
    err_console.print(
        f"{stats.get('file', 'capture')}: {stats['packets_read']} packets read, {stats['packets_decoded']} decoded, "
        f"{stats['malformed']} malformed, {stats['truncated']} truncated, {stats['unknown_link_type']} unknown link "
        f"type, {stats['fragments']} fragments; flows emitted {stats['flows_emitted']}, evicted "
        f"{stats['flows_evicted']}; events: {ev}", highlight=False)
    if stats.get("damaged_regions") or stats.get("file_truncated_records"):
        err_console.print(f"{stats.get('file', 'capture')}: damaged: {stats['damaged_regions']} regions skipped "
                          f"({stats['damaged_bytes']} bytes), {stats['file_truncated_records']} records cut short",
                          highlight=False)
    if run:
        err_console.print(f"store: {run['written']} new, {run['duplicates']} already stored, "
                          f"{run['spooled_events']} spooled, {run['alerts']} alerts", highlight=False)


def _records(path: str, fstats: dict, flt: BpfFilter | None, bar: ProgressBar, errors: list[str],
             shift: float = 0.0, stopping: dict | None = None) -> Iterator[Record]:
    """A file's records: progress advanced by bytes read, times shifted by `shift` seconds, the BPF filter applied,
    a read error reported (what was read before it is kept); reading ends before the next record once
    `stopping["signal"]` is set (SIGTERM/SIGINT)."""
    source = read_file(path, fstats)
    if shift:
        source = ((ts + shift, data, wirelen, linktype) for ts, data, wirelen, linktype in source)
    stop = stopping if stopping is not None else {"signal": None}

    def counted() -> Iterator[Record]:
        done = 0
        try:
            for n, rec in enumerate(source, 1):
                if stop["signal"]:
                    break
                done += len(rec[1]) + 16
                if n % 2000 == 0:
                    bar.advance(done)
                    done = 0
                yield rec
        except CaptureError as exc:
            errors.append(str(exc))
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        bar.advance(done)

    def filtered() -> Iterator[Record]:
        records = counted()
        try:
            yield from flt.apply(records)
        except ValueError as exc:  # the filter does not compile for this file's link type
            errors.append(f"{path}: --bpf: {exc}")
            err_console.print(f"[bold red]error:[/] {path}: --bpf: {exc}", highlight=False)
        finally:
            records.close()

    return filtered() if flt is not None else counted()


@app.command("pcap")
def pcap(
    files: Annotated[list[Path], typer.Argument(help="pcap or pcapng files.", show_default=False)],
    store: StoreOpt = None,
    bpf: BpfOpt = None,
    sensor_name: NameOpt = None,
    home_net: HomeOpt = None,
    community_id_seed: SeedOpt = 0,
    time_shift: Annotated[float, typer.Option(
        "--time-shift", help="Add SECONDS (may be negative) to every packet's time, as editcap -t does: replay an "
                             "old capture as recent traffic.")] = 0.0,
    processes: Annotated[int | None, typer.Option(
        "--processes", min=1, max=2, help="1: decode, detect and store in one process; 2: decoding in this one, "
                                          "detection and storage in a second (same results; default: 2 on a "
                                          "machine with two or more cores).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Read capture files and store their events (flows, DNS, HTTP, TLS, SSH, ICMP) through the pipeline.

    SIGTERM or SIGINT stops the reading: the flows open so far and the pending batch are stored, the summary is
    printed (stopped_by) and the exit code is 3 (partial).

    Example: soc sensor pcap rules/samples/demo-ministry.pcap --sensor-name core-1 --home-net 10.0.0.0/8,172.16.0.0/12
    """
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        die(f"no such file: {', '.join(missing)}")
    name, nets = _options(sensor_name, home_net)
    flt = _bpf(bpf)
    pipeline = open_pipeline(store)  # the policy first: a refused run creates no store
    st = pipeline.store
    per_file: list[dict] = []
    errors: list[str] = []
    total = sum(file_size(str(f)) for f in files)

    stopping: dict = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: stop reading; the flows open so far, the pending batch and the summary still follow."""
        stopping["signal"] = signal.Signals(signum).name

    def events() -> Iterator[dict]:
        with make_progress(total, "Reading", enabled=not json_out) as bar:
            for f in files:
                if stopping["signal"]:
                    break
                path = str(f.resolve())
                sensor = _make_sensor(name, nets, path, community_id_seed)
                if flt is not None:  # the extract re-reads the file through the same filter (correlator.evidence)
                    sensor.base["soc.capture.bpf"] = flt.expression
                fstats: dict = {}

                yield from sensor.run(_records(path, fstats, flt, bar, errors, time_shift, stopping))
                stats = sensor.stats() | {"file": path, **_damage(fstats)}
                if flt is not None:
                    stats["bpf"] = flt.expression
                per_file.append(stats)

    if processes is None:
        processes = 2 if (os.cpu_count() or 1) > 1 else 1
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if processes == 2:  # the child opens its own connection to the same store
            run = pipeline.run_parallel(events(), lambda: get_store(store, init=False, create=True)).as_dict()
        else:
            run = pipeline.run(events()).as_dict()
    finally:
        st.close()
        for s, h in old.items():
            signal.signal(s, h)
    if stopping["signal"]:
        run["stopped_by"] = stopping["signal"]
        err_console.print(f"stopped by {stopping['signal']}: what was read is stored", highlight=False)
    for stats in per_file:
        if json_out:
            print_ndjson({"type": "file"} | stats)
        else:
            for message in stats["damage"]:
                err_console.print(f"[bold yellow]damaged:[/] {message}", highlight=False)
            _summary(stats, {})
    damaged = sum(1 for stats in per_file if stats["damage"])
    if json_out:
        print_ndjson({"type": "summary", "files": len(files), "errors": errors, "damaged_files": damaged} | run)
    else:
        _summary({"file": "total", **_total(per_file)}, run)
    if errors:  # every file unreadable: bad input (2); some: a failure (1), the readable ones are stored
        unreadable = sum(1 for e in errors if "not a readable pcap" in e)
        raise typer.Exit(ExitCode.USAGE if unreadable == len(files) else ExitCode.FAILURE)
    if damaged or run["spooled_events"] or run.get("spooled_alerts") or stopping["signal"]:
        raise typer.Exit(ExitCode.PARTIAL)  # read around damage, spooled, or stopped before the end of the input


def _total(per_file: list[dict]) -> dict:
    out: dict = {"events": {}}
    for stats in per_file:
        for k, v in stats.items():
            if isinstance(v, int) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
        for k, v in stats["events"].items():
            out["events"][k] = out["events"].get(k, 0) + v
    for k in ("packets_read", "packets_decoded", "malformed", "truncated", "unknown_link_type", "fragments",
              "flows_emitted", "flows_evicted"):
        out.setdefault(k, 0)
    return out


@app.command("live")
def live_capture(
    iface: Annotated[str, typer.Option("--iface", "-i", help="Interface to capture on.")],
    store: StoreOpt = None,
    bpf: BpfOpt = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after S seconds.")] = None,
    count: Annotated[int | None, typer.Option("--count", help="Stop after N packets.")] = None,
    sensor_name: NameOpt = None,
    home_net: HomeOpt = None,
    community_id_seed: SeedOpt = 0,
    ring: Annotated[bool, typer.Option(
        "--ring/--no-ring", help="Keep a bounded rolling capture in $SOC_HOME/capture/IFACE/ so recent alerts have "
                                 "packets (`soc pcap extract`).")] = True,
    ring_size: Annotated[int, typer.Option("--ring-size", min=1, help="The rolling capture's cap in MB (all runs of "
                                                                      "the interface).")] = 512,
    ring_keep: Annotated[str, typer.Option("--ring-keep", help="Delete rolling-capture files older than this "
                                                               "(30m, 24h, 7d).")] = "24h",
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=0, max=65535, help="Serve the counters (packets, kernel drops, events, alerts, spool "
                                                 "depth, store errors) in the Prometheus text format on this port "
                                                 "(0: any free port, printed on stderr).")] = None,
    metrics_address: Annotated[str, typer.Option("--metrics-address", help="Address the metrics port listens on.")]
    = "127.0.0.1",
    buffer_size: Annotated[int, typer.Option(
        "--buffer-size", min=1, max=2047, help="The capture socket's receive queue in MB: it absorbs bursts while the "
                                               "pipeline is busy (dumpcap's default is 2).")] = 32,
    live_processes: Annotated[int | None, typer.Option(
        "--processes", min=1, max=2, help="2: a second process reads the socket while this one decodes, detects and "
                                          "stores (as dumpcap does for tshark); 1: one process (default: 2 on a "
                                          "machine with two or more cores).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Capture on an interface (scapy raw socket, needs root) until --duration/--count or SIGINT/SIGTERM; events are
    stored within a second, open flows are flushed on stop and kernel drops are reported.

    Example: soc sensor live --iface lo --bpf 'not port 22' --duration 5
    """
    if duration is not None and count is not None:
        die("give --duration or --count, not both")
    name, nets = _options(sensor_name, home_net)
    flt = _bpf(bpf)  # syntax checked before the socket opens; compiled for the interface's link type on open
    sensor = _make_sensor(name, nets, None, community_id_seed)
    sensor.base["observer.ingress.interface.name"] = iface
    keeper = None
    if ring:
        try:
            keep = parse_duration(ring_keep).total_seconds()
        except QueryError:
            die(f"--ring-keep {ring_keep!r}: expected a duration such as 30m, 24h or 7d")
        keeper = RingCapture(data_dir() / "capture" / iface.replace("/", "_"), ring_size << 20, keep)
        sensor.base["soc.capture.ring"] = str(keeper.run)  # where `soc pcap extract` finds the packets
    stopping = {"signal": None}
    deadline = time.monotonic() + duration if duration is not None else None
    seen = {"n": 0}

    def stop() -> bool:
        return bool(stopping["signal"]) or (deadline is not None and time.monotonic() >= deadline) or (
            count is not None and seen["n"] >= count)

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    cap_stats: dict = {}
    two = (live_processes or (2 if (os.cpu_count() or 1) > 1 else 1)) == 2

    def records() -> Iterator[Record]:
        try:
            ready = lambda: err_console.print(f"capturing on {iface}", highlight=False)  # noqa: E731
            for rec in live(iface, flt, stop, cap_stats, on_ready=ready, idle=flush, buffer_bytes=buffer_size << 20,
                            reader_process=two):
                seen["n"] += 1
                yield rec
                if count is not None and seen["n"] >= count:  # else the capture itself stops, yielding what it read
                    return
        except (OSError, PermissionError, Scapy_Exception) as exc:
            cap_stats["error"] = f"{iface}: {exc}"
        except NoSuchInterface as exc:  # bad input
            cap_stats["error"], cap_stats["code"] = f"--iface {exc}", ExitCode.USAGE
        except ValueError as exc:  # the filter does not compile for this interface's link type: bad input
            cap_stats["error"], cap_stats["code"] = f"--bpf: {iface}: {exc}", ExitCode.USAGE

    pipeline = open_pipeline(store)  # the policy first: a refused run creates no store
    st = pipeline.store
    pending: list[dict] = []
    flushed = [time.monotonic()]

    def flush() -> None:
        """Store what is pending: a live stream is stored within a second, not once a batch has gathered."""
        if pending:
            pipeline.process(pending)
            pending.clear()
        flushed[0] = time.monotonic()

    def snapshot() -> dict:
        run = pipeline.stats
        return {"packets": seen["n"], "kernel_drops": cap_stats.get("kernel_drops", 0), "events": dict(sensor.events),
                "stored": run.written, "alerts": run.alerts, "store_errors": run.store_errors,
                "spool_depth": run.spooled_events + run.spooled_alerts}

    server = None
    try:
        if metrics_port is not None:
            try:
                server = serve_metrics(snapshot, metrics_port, metrics_address)
            except OSError as exc:
                die(f"--metrics-port {metrics_port} on {metrics_address}: {exc}", ExitCode.USAGE)
            err_console.print(f"metrics on http://{metrics_address}:{server.port}/metrics", highlight=False)
        pipeline.replay()
        batch_size = pipeline.batch_size
        for ev in sensor.run(keeper.records(records()) if keeper else records()):
            pending.append(ev)
            if len(pending) >= batch_size or time.monotonic() - flushed[0] >= 1.0:
                flush()
        flush()
        pipeline.finish()
        run = pipeline.stats.as_dict()
    finally:
        if server is not None:
            server.close()
        st.close()
        for s, h in old.items():
            signal.signal(s, h)
    stats = sensor.stats() | {"interface": iface, "kernel_drops": cap_stats.get("kernel_drops", 0),
                              "capture_buffer_bytes": cap_stats.get("buffer_bytes", 0),
                              "stopped_by": stopping["signal"] or ("count" if count else "duration")}
    if json_out:
        print_ndjson({"type": "capture"} | stats | {"store": run})
    else:
        _summary(stats | {"file": iface}, run)
        console.print(f"kernel drops: {stats['kernel_drops']}", highlight=False)
    if "error" in cap_stats:
        die(cap_stats["error"], cap_stats.get("code", ExitCode.FAILURE))
    if run["spooled_events"]:
        raise typer.Exit(ExitCode.PARTIAL)
