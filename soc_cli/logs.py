"""soc logs: ingest Suricata EVE, Zeek and NDJSON logs into the store, resuming from a checkpoint."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from correlator.store import data_dir
from sensors.logs import FORMATS, LogError, LogReader
from soc_cli.common import ExitCode, JsonOpt, StoreOpt, die, err_console, make_progress, print_ndjson
from soc_cli.wiring import open_pipeline

app = typer.Typer(help="Log readers: Suricata EVE JSON, Zeek (JSON or TSV) and NDJSON → ECS events in the store.\n\n"
                       "Example: soc logs ingest rules/samples/demo-conn.log --format zeek",
                  no_args_is_help=True)


def checkpoint_for(path: Path, fmt: str, directory: Path | None) -> Path:
    """One checkpoint file per (absolute log path, format)."""
    key = hashlib.sha256(f"{path.resolve()}|{fmt}".encode()).hexdigest()[:16]
    return (directory or data_dir() / "checkpoints") / f"{path.name}.{key}.json"


@app.command("ingest")
def ingest(
    file: Annotated[Path, typer.Argument(help="The log file (rotated predecessors path.1, … are found by inode).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")],
    store: StoreOpt = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep reading new lines (and rotated files) until "
                                                          "SIGINT/SIGTERM.")] = False,
    checkpoint_dir: Annotated[Path | None, typer.Option("--checkpoint-dir", help="Where checkpoints live (default "
                                                                                "$SOC_HOME/checkpoints).")] = None,
    no_checkpoint: Annotated[bool, typer.Option("--no-checkpoint", help="Read from the start; save nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Ingest a log file from its checkpoint: a re-run or a follow neither loses nor repeats a line.

    Example: soc logs ingest rules/samples/demo-eve.json --format suricata-eve --follow
    """
    if fmt not in FORMATS:
        die(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not file.is_file():
        die(f"{file}: no such file")
    reader = LogReader(str(file), fmt, None if no_checkpoint else checkpoint_for(file, fmt, checkpoint_dir))
    stopping: dict[str, str | None] = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    pipeline = open_pipeline(store)
    st = pipeline.store
    batch: list[dict] = []
    last_flush = time.monotonic()

    committed = {"offset": None, "inode": None}

    def flush() -> None:
        nonlocal last_flush
        if batch:
            pipeline.process(batch)
            batch.clear()
        where = {"offset": reader.tail.offset, "inode": reader.tail.inode}
        if where != committed:
            reader.tail.commit()  # only after the events read so far are stored (or spooled)
            committed.update(where)
        last_flush = time.monotonic()

    try:
        pipeline.replay()
        with make_progress(None, f"Ingesting {file.name}", enabled=not json_out) as bar:
            for ev in reader.events(follow=follow, stop=lambda: stopping["signal"] is not None):
                if ev is not None:
                    batch.append(ev)
                if len(batch) >= pipeline.batch_size or (follow and (ev is None or time.monotonic() - last_flush > 1)):
                    bar.advance(len(batch))
                    flush()
            bar.advance(len(batch))
            flush()
        pipeline.finish()
    except LogError as exc:
        die(str(exc))
    finally:
        reader.tail.close()
        st.close()
        for s, h in old.items():
            signal.signal(s, h)
    stats = pipeline.stats.as_dict()
    for msg in reader.errors:
        err_console.print(f"[red]error:[/] {msg}", highlight=False)
    summary = {"file": reader.path, "format": fmt, **reader.counters, "offset": reader.tail.offset,
               "incomplete_tail_bytes": reader.tail.incomplete, "store": stats}
    if json_out:
        print_ndjson(summary)
    else:
        err_console.print(f"{reader.path}: {reader.counters['lines']} lines, {reader.counters['events']} events, "
                          f"{reader.counters['errors']} bad lines; store: {stats['written']} new, "
                          f"{stats['duplicates']} already stored, {stats['spooled_events']} spooled", highlight=False)
        if reader.tail.incomplete:
            err_console.print(f"{reader.path}: {reader.tail.incomplete} bytes of an unfinished last line left for "
                              "the next run", highlight=False)
    if stats["spooled_events"]:
        raise typer.Exit(ExitCode.PARTIAL)
    if reader.counters["errors"]:
        raise typer.Exit(ExitCode.FAILURE)
