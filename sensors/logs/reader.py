"""`LogReader`: the ingest loop of one log file: lines from `LogTail`, decoded by the format's registered decoder,
stamped with `log.file.path`/`log.offset` and normalized, with counters and per-line errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from correlator.events import normalize
from sensors.logs.fields import BAD_RECORD
from sensors.logs.follow import LogTail
from sensors.logs.registry import decoder_for


class LogReader:
    """Events from one log file in `fmt`, with counters and per-line errors (file and byte offset)."""

    def __init__(self, path: str, fmt: str, checkpoint: Path | None = None, max_errors: int = 100) -> None:
        self.decoder_cls = decoder_for(fmt)
        self.fmt, self.tail = fmt, LogTail(path, checkpoint)
        self.path = self.tail.path
        self.counters = {"lines": 0, "events": 0, "errors": 0, "skipped": 0}
        self.errors: list[str] = []
        self.max_errors = max_errors

    def events(self, follow: bool = False, stop: Callable[[], bool] = lambda: False) -> Iterator[dict | None]:
        """Events in file order; when following, None each time the file is idle (a cue to flush)."""
        decoder = self.decoder_cls(self.path)
        decode = decoder.decode
        seen_header: list[bytes] = []
        for offset, raw in self.tail.lines(follow, stop):
            if raw is None:
                yield None
                continue
            if self.tail.header is not seen_header:  # a (new) file was opened: take its header lines
                seen_header = self.tail.header
                decoder.header(seen_header)
            self.counters["lines"] += 1
            if not raw.strip():
                self.counters["skipped"] += 1
                continue
            try:
                ev = decode(raw)
                if ev is not None:
                    ev["log.file.path"] = self.path
                    ev["log.offset"] = offset
                    ev = normalize(ev)
            except BAD_RECORD as exc:
                self.counters["errors"] += 1
                if len(self.errors) < self.max_errors:
                    why = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
                    self.errors.append(f"{self.path}: byte offset {offset}: {why}")
                continue
            if ev is None:
                self.counters["skipped"] += 1
                continue
            self.counters["events"] += 1
            yield ev
