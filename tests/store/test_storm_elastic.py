"""Storm alerts (correlator.storm) stored in Elasticsearch: the soc.alert.storm.* fields map and read back whole,
whatever the type of the storm's field (an address, a port), and a rewrite with more keys upserts the same alert."""

from __future__ import annotations

from correlator.alerts import AlertFolder
from correlator.sigma.engine import RuleInfo
from correlator.storm import StormSpec

T0 = 1_780_000_000.0


def _storm(spec: StormSpec, n: int) -> dict:
    folder = AlertFolder(300)
    rule = RuleInfo(f"r-{spec.field}", "Probe", storm=spec)
    alert: dict = {}
    for i in range(n):
        ev = {"@timestamp": f"2026-05-28T20:26:{i:02d}.000000Z", "event.id": f"e{i}", "source.ip": f"192.0.2.{i}",
              "destination.ip": "10.0.5.5", "destination.port": 22}
        alert = folder.add(rule, ev, T0 + i, {"source.ip": ev["source.ip"]})
    return dict(alert)


def test_storm_alerts_round_trip(es_store) -> None:
    by_ip = _storm(StormSpec(2, 60.0, "destination.ip"), 6)
    by_port = _storm(StormSpec(2, 60.0, "destination.port"), 6)
    es_store.write_alerts([by_ip, by_port])
    for want in (by_ip, by_port):
        got = es_store.get_alert(want["soc.alert.uuid"])
        assert got is not None
        assert {k: v for k, v in got.items() if k.startswith("soc.alert.storm.")} == {
            k: v for k, v in want.items() if k.startswith("soc.alert.storm.")}
        assert got["soc.alert.storm.keys"] == 4 and got["soc.alert.storm.suppressed"] == 4
    assert by_port["soc.alert.storm.value"] == "22" and by_ip["soc.alert.storm.value"] == "10.0.5.5"
    more = _storm(StormSpec(2, 60.0, "destination.ip"), 9)
    assert more["soc.alert.uuid"] == by_ip["soc.alert.uuid"]
    es_store.write_alerts([more])
    assert es_store.get_alert(by_ip["soc.alert.uuid"])["soc.alert.storm.keys"] == 7
