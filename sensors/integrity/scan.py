"""One pass over the watched folders: stream the walk into a new baseline and/or against the stored one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sensors.compliance.rootfs import RootFS, Unreadable
from sensors.integrity.baseline import Baseline, BaselineWriter
from sensors.integrity.events import EventMaker, diff, names_from
from sensors.integrity.policy import Watch, WatchPolicy
from sensors.integrity.walker import Entry, walk

_COUNTERS = {"creation": "created", "change": "changed", "deletion": "deleted"}


@dataclass
class ScanStats:
    entries: int = 0
    created: int = 0
    changed: int = 0
    deleted: int = 0
    tampered: int = 0
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed (their entries unknown)


def nested(policy: WatchPolicy, watch: Watch) -> frozenset[str]:
    """Paths of the other watches inside `watch` (each is walked under its own attributes)."""
    base = watch.path.rstrip("/") + "/"
    return frozenset(w.path for w in policy.watches if w is not watch and w.path.startswith(base))


def owner_names(fs: RootFS) -> tuple[dict[int, str], dict[int, str]]:
    """uid and gid names from the scanned tree's /etc/passwd and /etc/group (empty when absent)."""
    out = []
    for path in ("/etc/passwd", "/etc/group"):
        try:
            out.append(names_from(fs.read_lines(path)))
        except (FileNotFoundError, Unreadable):
            out.append({})
    return out[0], out[1]


def scan(fs: RootFS, policy: WatchPolicy, maker: EventMaker, baseline: Baseline | None,
         writer: BaselineWriter | None, stats: ScanStats) -> Iterator[dict[str, Any]]:
    """Walk every watch once; each entry goes to `writer` (a new baseline) and, against `baseline`, every
    difference and every edited part of the stored baseline is yielded as an ECS event."""
    if baseline is not None:
        yield from _tampered(baseline, maker, stats)
    for i, watch in enumerate(policy.watches):
        entries = _tee(walk(fs, watch, nested(policy, watch), stats.unreadable), i, writer, stats)
        if baseline is None:
            for _ in entries:
                pass
            continue
        for kind, old, new, changed in diff(baseline.entries(i), entries, watch.attributes, stats.unreadable):
            counter = _COUNTERS[kind]
            setattr(stats, counter, getattr(stats, counter) + 1)
            yield maker.file_event(watch, kind, old, new, changed)
        yield from _tampered(baseline, maker, stats)


def _tampered(baseline: Baseline, maker: EventMaker, stats: ScanStats) -> Iterator[dict[str, Any]]:
    while baseline.tampered:
        stats.tampered += 1
        yield maker.tamper_event(baseline.tampered.pop(0))


def _tee(entries: Iterator[Entry], watch: int, writer: BaselineWriter | None, stats: ScanStats) -> Iterator[Entry]:
    for e in entries:
        stats.entries += 1
        if writer is not None:
            writer.add(watch, e)
        yield e
