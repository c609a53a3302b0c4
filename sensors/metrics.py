"""A running sensor's counters in the Prometheus text format (`prometheus-client`), served on a local port.

```python
server = serve(snapshot, port=9108)        # snapshot() -> {"packets": …, "kernel_drops": …, "events": {…}, …}
...
server.close()
```
Nothing is counted here: `snapshot` reads the counters the capture, the sensor and the pipeline keep anyway, once
per scrape, so the packet path pays nothing for the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# snapshot key → (metric name, kind, help); `events` is a per-dataset counter
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("packets", "soc_sensor_packets", "counter", "Packets read from the capture."),
    ("kernel_drops", "soc_sensor_kernel_drops", "counter",
     "Packets the kernel dropped because the capture socket's queue was full (PACKET_STATISTICS)."),
    ("stored", "soc_sensor_events_stored", "counter", "Events newly written to the store."),
    ("alerts", "soc_sensor_alerts", "counter", "Alerts raised by the pipeline's detectors."),
    ("store_errors", "soc_sensor_store_errors", "counter", "Store writes that failed (unavailable or refused)."),
    ("spool_depth", "soc_sensor_spool_depth", "gauge", "Events and alerts waiting in the spool for the store."),
)
Snapshot = Callable[[], dict[str, Any]]


class _Collector:
    """Reads the snapshot at scrape time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        values = self.snapshot()
        for key, name, kind, doc in METRICS:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=values.get(key, 0))
        events = CounterMetricFamily("soc_sensor_events", "Events produced by the sensor, per event.dataset.",
                                     labels=["dataset"])
        for dataset, n in sorted(dict(values.get("events", {})).items()):
            events.add_metric([dataset], n)
        yield events


@dataclass
class MetricsServer:
    """The HTTP server thread serving /metrics; `close()` stops it."""

    address: str
    port: int
    _server: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(snapshot: Snapshot, port: int, address: str = "127.0.0.1") -> MetricsServer:
    """Serve the snapshot's counters at http://ADDRESS:PORT/metrics (port 0: any free port, see `.port`).
    OSError when the port cannot be bound."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    server, _thread = start_http_server(port, address, registry)
    return MetricsServer(address, server.server_address[1], server)
