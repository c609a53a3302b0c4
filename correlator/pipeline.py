"""The event pipeline: normalize -> enrich -> detect -> store, batch by batch, spooling when the store is down."""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from correlator.events import normalize
from correlator.store import Spool, Store, StoreRejected, StoreUnavailable, spool_for

Event = dict[str, Any]
Enricher = Callable[[list[Event]], None]


class Detector(Protocol):
    """Finds alerts in batches of events; `flush` closes what is still open at the end of the stream."""

    def detect(self, events: list[Event]) -> list[Event]: ...

    def flush(self) -> list[Event]: ...


@dataclass
class PipelineStats:
    """What a run did; `partial` when anything had to be spooled or was rejected."""

    events_in: int = 0
    rejected: int = 0
    written: int = 0
    duplicates: int = 0
    alerts: int = 0
    spooled_events: int = 0
    spooled_alerts: int = 0
    replayed_events: int = 0
    store_errors: int = 0  # writes the store refused or could not take
    errors: list[str] = field(default_factory=list)

    @property
    def spooled(self) -> bool:
        return bool(self.spooled_events or self.spooled_alerts)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": self.errors[:100]}


def batched(items: Iterable[Event], size: int) -> Iterator[list[Event]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _send_whole(conn: Any, data: bytes) -> None:
    """Send one message with SIGINT/SIGTERM held until it is written: a Ctrl-C never leaves half a batch in the
    pipe (the child would wait for the rest)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        conn.send_bytes(data)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class Pipeline:
    """Runs producers' events through enrichment and detection into a store."""

    RETRY_AFTER = 5.0  # seconds to spool directly after the store failed, before trying it again

    def __init__(
        self,
        store: Store,
        enrichers: Iterable[Enricher] = (),
        detectors: Iterable[Detector] = (),
        batch_size: int = 2000,
        spool: Spool | None = None,
    ) -> None:
        self.store = store
        self.enrichers = list(enrichers)
        self.detectors = list(detectors)
        self.batch_size = batch_size
        self.spool = spool or spool_for(store.uri)
        self.stats = PipelineStats()
        self._down_until = 0.0

    def run(self, events: Iterable[Event], on_batch: Callable[[PipelineStats], None] | None = None) -> PipelineStats:
        """Process every event, then flush detectors and replay anything spooled if the store is back."""
        self.replay()
        for batch in batched(events, self.batch_size):
            self.process(batch)
            if on_batch:
                on_batch(self.stats)
        self.finish()
        return self.stats

    def run_parallel(self, events: Iterable[Event], open_store: Callable[[], Store]) -> PipelineStats:
        """`run` on two cores: this process iterates `events` (the producer: packet decoding) and normalizes them;
        a forked child enriches, detects and stores them batch by batch, in the same order, into the store
        `open_store()` opens there (a database connection is never shared across fork). The leading enrichers that
        hold nothing to flush run here too (they see the same batches in the same order), balancing the two.
        The results are `run`'s; the child's statistics are returned (and become `self.stats`). A producer error
        or Ctrl-C still stores and flushes every batch already sent."""
        here = next((i for i, e in enumerate(self.enrichers) if hasattr(e, "flush")), len(self.enrichers))
        ctx = multiprocessing.get_context("fork")
        conn, child_conn = ctx.Pipe()
        child = ctx.Process(target=self._consume, args=(child_conn, conn, open_store, here), name="soc-pipeline",
                            daemon=True)
        child.start()
        child_conn.close()
        produced = 0
        try:
            for batch in batched(events, self.batch_size):
                good, errors = self._normalized(batch, produced + 1)
                produced += len(batch)
                for enrich in self.enrichers[:here]:
                    enrich(good)
                _send_whole(conn, pickle.dumps((len(batch), good, errors), pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped: its result says why
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                _send_whole(conn, b"")  # end of stream
            try:
                result = pickle.loads(conn.recv_bytes())  # noqa: S301 - our own child
            except EOFError:
                child.join()
                result = RuntimeError(f"the pipeline process ended with exit code {child.exitcode}")
            child.join()
            conn.close()
        if isinstance(result, BaseException):
            raise result
        self.stats = result
        return result

    def _consume(self, conn: Any, parent_end: Any, open_store: Callable[[], Store], enriched: int) -> None:
        """The child of `run_parallel`: enrich (from enricher number ``enriched`` on), detect and store each batch
        received, then finish."""
        parent_end.close()  # the parent's end, inherited: closed, so the parent's death reads as end of stream
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the producer; the child stores what it got
        result: Any
        try:
            self.store = open_store()
            self.replay()
            stats = self.stats
            while data := conn.recv_bytes():
                n, good, errors = pickle.loads(data)  # noqa: S301 - from our parent
                stats.events_in += n
                stats.rejected += len(errors)
                stats.errors.extend(errors)
                self._enrich_detect_store(good, enriched)
            self.finish()
            self.store.close()
            result = self.stats
        except EOFError:  # the producer died: store what arrived
            self.finish()
            self.store.close()
            result = self.stats
        except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
            result = exc
        try:
            data = pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            data = pickle.dumps(RuntimeError(f"pipeline process: {result!r}"))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send_bytes(data)

    def _normalized(self, batch: list[Event], first: int) -> tuple[list[Event], list[str]]:
        """The batch's events made conform (`normalize`) and an error for each it rejects (numbered from
        `first`)."""
        good: list[Event] = []
        errors: list[str] = []
        for n, ev in enumerate(batch, first):
            try:
                good.append(normalize(ev))
            except (ValueError, TypeError) as exc:
                errors.append(f"event {n}: {exc}")
        return good, errors

    def process(self, batch: list[Event]) -> None:
        """Normalize, enrich, detect and store one batch."""
        stats = self.stats
        good, errors = self._normalized(batch, stats.events_in + 1)
        stats.rejected += len(errors)
        stats.errors.extend(errors)
        stats.events_in += len(batch)
        self._enrich_detect_store(good)

    def _enrich_detect_store(self, good: list[Event], enriched: int = 0) -> None:
        for enrich in self.enrichers[enriched:]:
            enrich(good)
        alerts = [a for d in self.detectors for a in d.detect(good)]
        self._write(good, alerts)

    def finish(self) -> None:
        """Flush enrichers that hold summaries (their final events are detected and stored), then detectors
        (closing correlation windows), and retry the spool once."""
        tail = [e for enrich in self.enrichers for e in (getattr(enrich, "flush", None) or list)()]
        if tail:
            self._write(tail, [a for d in self.detectors for a in d.detect(tail)])
        alerts = [a for d in self.detectors for a in d.flush()]
        if alerts:
            self._write([], alerts)
        if self.stats.spooled:
            self._down_until = 0.0
            self.replay()

    def replay(self) -> None:
        """Write spooled batches to the store if it is reachable; leave them spooled if not."""
        try:
            done = self.spool.replay(self.store)
        except StoreUnavailable as exc:
            self.stats.errors.append(f"spool not replayed, store still unavailable: {exc}")
            return
        self.stats.replayed_events += done["events"]
        if done["events"] or done["alerts"]:
            self.stats.spooled_events = max(0, self.stats.spooled_events - done["events"])
            self.stats.spooled_alerts = max(0, self.stats.spooled_alerts - done["alerts"])

    def _write(self, events: list[Event], alerts: list[Event]) -> None:
        stats = self.stats
        stats.alerts += len(alerts)
        if time.monotonic() >= self._down_until:
            try:
                if events:
                    try:
                        new, refused = self.store.write_events(events), 0
                    except StoreRejected as exc:  # the rest of the batch was written
                        new, refused = exc.new, len(exc.problems)
                        stats.rejected += refused
                        stats.store_errors += 1
                        stats.errors.extend(f"store refused {p}" for p in exc.problems)
                    stats.written += new
                    stats.duplicates += len(events) - new - refused
                if alerts:
                    try:
                        self.store.write_alerts(alerts)
                    except StoreRejected as exc:
                        stats.store_errors += 1
                        stats.errors.extend(f"store refused alert {p}" for p in exc.problems)
                return
            except StoreUnavailable as exc:
                stats.store_errors += 1
                self._down_until = time.monotonic() + self.RETRY_AFTER
                stats.errors.append(f"store unavailable, spooling to {self.spool.directory}: {exc}")
        if events:
            self.spool.append("events", events)
            stats.spooled_events += len(events)
        if alerts:
            self.spool.append("alerts", alerts)
            stats.spooled_alerts += len(alerts)
