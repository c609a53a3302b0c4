"""Beaconing statistics: a stateful enricher annotating each connection-start flow with its pair's regularity.

Per (source.ip, destination.ip, destination.port, network.transport) pair it keeps the most recent ``window``
connection starts and their client byte counts (the flow's ``source.bytes``), and writes onto the flow event:

- ``soc.beacon.count``: connections of the pair seen so far (since the pair entered the table);
- ``soc.beacon.duration``: seconds spanned by the connections in the window;
- once the window holds ``MIN_CONNECTIONS`` starts: ``soc.beacon.interval`` (median inter-arrival, s),
  ``soc.beacon.jitter`` (MAD/median of the intervals), ``soc.beacon.size_jitter`` (MAD/median of the byte
  counts) and ``soc.beacon.score`` in [0, 1].

Score, after RITA (activecm/rita ``analysis/beacons.go``: Bowley skewness and median absolute deviation of the
inter-arrival times and of the data sizes, each subscore ``((1 - |skew|) + max(0, 1 - MAD/median)) / 2``; RITA v4
also scored the connection count)::

    ts    = ((1 - |bowley(intervals)|) + max(0, 1 - jitter)) / 2
    ds    = ((1 - |bowley(sizes)|) + max(0, 1 - size_jitter)) / 2
    conn  = min(1, connections in window / FULL_CONNECTIONS)
    score = 0.5 ts + 0.25 ds + 0.25 conn

Timing carries half the weight: a C2 implant's check-in period is its signature, while its payload sizes vary with
tasking. As in RITA, skewness counts only when the quartiles are spread and the median differs from both
quartiles: RITA requires IQR >= 10 (s or bytes), soc the scale-free IQR >= 20 % of the median (about RITA's guard
for a 60 s beacon) — below that the Bowley skewness of a few dozen values is sampling noise. A zero median gives
jitter 1 (undefined regularity counts as none).

Only flows that start a connection (``event.type`` holds ``start``) count: active-timeout continuations of one
long connection would otherwise look perfectly periodic. Event time is the flow's ``event.start``. The window is
kept sorted by start time, so a flow arriving out of order (the sensor emits a flow when it ends, so a long
connection arrives after shorter, later ones) is inserted in place and the intervals it splits are replaced; a
start older than everything a full window holds is counted as ``late`` and left unannotated.

Cost per flow: bisections and array inserts/deletes (O(log w) comparisons, O(w) memmove in C); median and quartiles
are O(1) reads of the sorted arrays, each MAD an O(log w) bisection of the two sorted runs of deviations.
Memory: ``window`` x 4 doubles per pair, at most ``max_pairs`` pairs (least recently seen evicted, counted);
``state()`` reports it.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from typing import Any

from correlator.events import epoch

MIN_CONNECTIONS = 4  # three intervals, RITA's minimum
FULL_CONNECTIONS = 16  # the connection-count subscore saturates here
SKEW_MIN_SPREAD = 0.2  # skewness ignored when IQR < 20 % of the median


class _Pair:
    """One pair's window: start times and sizes in time order, intervals and sizes sorted."""

    __slots__ = ("count", "gaps", "sizes", "times", "tsizes")

    def __init__(self) -> None:
        self.times, self.tsizes = array("d"), array("d")
        self.gaps, self.sizes = array("d"), array("d")
        self.count = 0

    def add(self, t: float, size: float, window: int) -> bool:
        """Insert a connection start in time order; False when it is older than a full window (late)."""
        times, gaps = self.times, self.gaps
        n = len(times)
        if n >= window and t < times[0]:
            return False
        i = bisect_right(times, t)
        if 0 < i < n:  # splits an interval
            _remove(gaps, times[i] - times[i - 1])
        if i > 0:
            insort(gaps, t - times[i - 1])
        if i < n:
            insort(gaps, times[i] - t)
        times.insert(i, t)
        self.tsizes.insert(i, size)
        insort(self.sizes, size)
        if n + 1 > window:
            _remove(gaps, times[1] - times[0])
            _remove(self.sizes, self.tsizes[0])
            del times[0], self.tsizes[0]
        self.count += 1
        return True

    def nbytes(self) -> int:
        return sum(sys.getsizeof(a) for a in (self.times, self.tsizes, self.gaps, self.sizes)) + sys.getsizeof(self)


def _remove(a: array, v: float) -> None:
    del a[bisect_left(a, v)]


def _q(s: array, p: float) -> float:
    """Quantile ``p`` of sorted ``s`` by linear interpolation."""
    x = p * (len(s) - 1)
    i = int(x)
    return s[i] if i + 1 >= len(s) else s[i] + (s[i + 1] - s[i]) * (x - i)


def _mad(s: array, med: float) -> float:
    """Median absolute deviation of sorted ``s`` about ``med`` in O(log n): the deviations are two sorted runs,
    ``med - s[m-1-i]`` (left of the median) and ``s[m+j] - med`` (right), and their middle is found by bisection."""
    n, m = len(s), bisect_left(s, med)
    la, lb = m, n - m

    def kth(k: int) -> float:  # k-th smallest (0-based) of the two runs: take i from the left, k + 1 - i from the right
        lo, hi = max(0, k + 1 - lb), min(k + 1, la)
        while lo < hi:
            i = (lo + hi) // 2
            if med - s[m - 1 - i] < s[m + k - i] - med:
                lo = i + 1
            else:
                hi = i
        j = k + 1 - lo
        return max(med - s[m - lo] if lo else 0.0, s[m + j - 1] - med if j else 0.0)

    return kth(n // 2) if n % 2 else (kth(n // 2 - 1) + kth(n // 2)) / 2


def dispersion(s: array) -> tuple[float, float, float]:
    """(median, MAD/median, subscore) of sorted ``s``: subscore = ((1 - |Bowley skew|) + max(0, 1 - MAD/median))/2."""
    q1, med, q3 = _q(s, 0.25), _q(s, 0.5), _q(s, 0.75)
    rel = _mad(s, med) / med if med > 0 else 1.0
    spread = q3 - q1
    skew = (q3 + q1 - 2 * med) / spread if spread >= SKEW_MIN_SPREAD * med and q1 < med < q3 else 0.0
    return med, rel, ((1 - abs(skew)) + max(0.0, 1 - rel)) / 2


class BeaconEnricher:
    """Pipeline enricher: annotates connection-start ``soc.flow`` events with ``soc.beacon.*`` (see module doc)."""

    def __init__(self, window: int = 32, max_pairs: int = 50_000) -> None:
        if window < MIN_CONNECTIONS:
            raise ValueError(f"window must hold at least {MIN_CONNECTIONS} connections")
        self.window, self.max_pairs = window, max_pairs
        self.pairs: OrderedDict[tuple, _Pair] = OrderedDict()
        self.seen = self.late = self.evicted = 0

    def __call__(self, events: list[dict[str, Any]]) -> None:
        pairs, window = self.pairs, self.window
        for e in events:
            if e.get("event.dataset") != "soc.flow" or "start" not in (e.get("event.type") or ()):
                continue
            t = epoch(e.get("event.start") or e.get("@timestamp"))
            if t is None:
                continue
            key = (e.get("source.ip"), e.get("destination.ip"), e.get("destination.port"), e.get("network.transport"))
            p = pairs.get(key)
            if p is None:
                p = pairs[key] = _Pair()
                if len(pairs) > self.max_pairs:
                    pairs.popitem(last=False)
                    self.evicted += 1
            else:
                pairs.move_to_end(key)
            self.seen += 1
            if not p.add(t, float(e.get("source.bytes") or e.get("network.bytes") or 0), window):
                self.late += 1
                continue
            self._annotate(e, p)

    @staticmethod
    def _annotate(e: dict[str, Any], p: _Pair) -> None:
        times = p.times
        n = len(times)
        e["soc.beacon.count"] = p.count
        e["soc.beacon.duration"] = round(times[-1] - times[0], 3)
        if n < MIN_CONNECTIONS:
            return
        interval, jitter, ts = dispersion(p.gaps)
        _, size_jitter, ds = dispersion(p.sizes)
        conn = min(1.0, n / FULL_CONNECTIONS)
        e["soc.beacon.interval"] = round(interval, 3)
        e["soc.beacon.jitter"] = round(jitter, 4)
        e["soc.beacon.size_jitter"] = round(size_jitter, 4)
        e["soc.beacon.score"] = round(0.5 * ts + 0.25 * ds + 0.25 * conn, 4)

    def state(self) -> dict[str, int]:
        """Pairs held, connections in their windows, bytes of state, and counters (seen, late, evicted pairs)."""
        return {"pairs": len(self.pairs), "connections": sum(len(p.times) for p in self.pairs.values()),
                "bytes": sys.getsizeof(self.pairs) + sum(p.nbytes() for p in self.pairs.values()),
                "seen": self.seen, "late": self.late, "evicted_pairs": self.evicted}
