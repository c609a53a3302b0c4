"""Property: an alert's label is the highest label of the events it derives from; severity rises with it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.policy import PolicyDetector, PolicyEngine, severity

RULES = ["write-down", "cross-organization", "caveat", "protection", "expired-exception"]

event_spec = st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(RULES), st.integers(0, 900))


def make_event(i: int, spec: tuple, policy) -> dict:
    group, rank, rule, offset = spec
    lv = policy.levels[rank]
    return {"@timestamp": f"2026-01-15T09:{offset // 60:02d}:{offset % 60:02d}.000000Z", "event.id": f"e{i}",
            "event.dataset": "soc.flow", "source.ip": f"10.0.0.{group}", "destination.ip": "10.9.9.9",
            "destination.port": 443, "gov.label.rank": rank, "gov.label.level": lv.name, "gov.label.ar": lv.ar,
            "gov.policy.decision": "deny", "gov.policy.violations": [rule], "gov.policy.reasons": [f"{rule} test"]}


@settings(max_examples=200, deadline=None)
@given(st.lists(event_spec, min_size=1, max_size=40), st.integers(1, 10))
def test_alert_label_is_high_water_mark_of_inputs(policy, specs, batch):
    engine = PolicyEngine(policy)
    events = [make_event(i, s, engine.policy) for i, s in enumerate(sorted(specs, key=lambda s: s[3]))]
    det = PolicyDetector(engine)
    alerts: dict[str, dict] = {}
    for k in range(0, len(events), batch):
        for a in det.detect(events[k:k + batch]):
            alerts[a["soc.alert.uuid"]] = a
    by_id = {e["event.id"]: e for e in events}
    covered = set()
    for a in alerts.values():
        inputs = [by_id[i] for i in a["soc.alert.ancestors"]]
        assert inputs
        assert all(a["gov.label.rank"] >= e["gov.label.rank"] for e in inputs)
        assert a["gov.label.rank"] == max(e["gov.label.rank"] for e in inputs)
        assert a["gov.label.level"] == engine.policy.levels[a["gov.label.rank"]].name
        assert (a["soc.alert.severity"], a["soc.alert.risk_score"]) == severity(a["gov.label.rank"], 4)
        covered.update(a["soc.alert.ancestors"])
    assert covered == set(by_id)  # every denied event is in some alert


def test_severity_is_monotonic():
    for n in (2, 3, 4, 6):
        risks = [severity(r, n)[1] for r in range(n)]
        assert risks == sorted(risks) and risks[0] == 21 and risks[-1] == 99
        assert severity(0, n)[0] == "low" and severity(n - 1, n)[0] == "critical"
