"""The counting fast path (Store.alert_fields: only the fields counting needs, one query) against a brute-force
Python count over the same generated alerts, on SQLite and each ES emulator: stats by every key, group-by,
the first page of the queue, suppressed and withheld counts, at two clearances."""

from __future__ import annotations

import random

import pytest

from correlator import triage
from correlator.gate import Gate, Reader
from soc_cli.common import active_policy

NOW = "2026-11-01T00:00:00.000000Z"
RULES = [(f"rule-{i}", f"Rule {i}") for i in range(5)]
ORGS = ["moi", "cdc", "mof", None]
SCANNER = "10.3.0.1"


def generated(n: int = 1500, seed: int = 5) -> list[dict]:
    """Alerts with every shape counting meets: missing fields, lists, labels 0-3, each status and timer."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        rule, name = rnd.choice(RULES)
        status = rnd.choice(triage.STATUSES)
        a = {"@timestamp": f"2026-10-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:00:00.{i:06d}Z",
             "soc.alert.uuid": f"a{i:05d}", "soc.alert.rule.uuid": rule, "soc.alert.rule.name": name,
             "soc.alert.severity": rnd.choice(triage.SEVERITIES), "soc.alert.risk_score": rnd.randint(1, 99),
             "soc.alert.workflow_status": status, "soc.alert.suppression.docs_count": rnd.randint(1, 9),
             "source.ip": f"10.{rnd.choice([3, 4])}.0.{rnd.randint(1, 3)}"}
        day = f"2026-10-{rnd.randint(1, 28):02d}T00:00:00Z"
        a["soc.alert.created"] = a["@timestamp"] if rnd.random() < 0.7 else day
        for side in ("source", "destination"):
            if org := rnd.choice(ORGS):
                a[f"gov.{side}.organization"] = org
        if (rank := rnd.choice([0, 0, 1, 2, 3])):
            a["gov.label.rank"] = rank
        if status != "open":
            a["soc.alert.assignees"] = [rnd.choice(["ana", "bo"])]
            a["soc.alert.time_to_ack"] = float(rnd.randint(1, 999))
        if status == "closed":
            a["soc.alert.time_to_close"] = float(rnd.randint(1000, 9999))
        out.append(a)
    return out


@pytest.fixture
def loaded(any_store):
    store, _ = any_store
    alerts = generated()
    store.write_alerts(alerts)
    if hasattr(store, "refresh"):  # Elasticsearch: searchable at the next refresh
        store.refresh()
    policy = active_policy()
    top = Gate(store, Reader("tester", policy.top, "test"), policy)
    sup = triage.suppress(top, RULES[0][0], f"source.ip:{SCANNER}", "30d", "scanner", "tester", now=NOW)
    if hasattr(store, "refresh"):
        store.refresh()
    return store, policy, alerts, sup


def _visible(alerts: list[dict], rank: int) -> list[dict]:
    return [a for a in alerts if int(a.get("gov.label.rank") or 0) <= rank]


def _hidden(alerts: list[dict], sup: triage.Suppression) -> set[str]:
    return {a["soc.alert.uuid"] for a in alerts
            if a["soc.alert.rule.uuid"] == sup.rule and a["source.ip"] == SCANNER}


@pytest.mark.parametrize("rank", [3, 1])
def test_fast_counts_agree_with_brute_force(loaded, rank):
    store, policy, alerts, sup = loaded
    gate = Gate(store, Reader("tester", policy.levels[rank], "test"), policy)
    mine = _visible(alerts, rank)
    above = len(alerts) - len(mine)
    hidden = _hidden(mine, sup)
    assert hidden, "the suppression hides some alerts"
    everything = triage.Filters(statuses=triage.STATUSES)
    for by in triage.STATS_BY:
        rows, q = triage.stats(gate, by, everything, now=NOW)
        assert rows == triage.tally(mine, by, hidden), by
        assert q.withheld == (above if policy.disclose_withheld else None)
    assert rows[-1]["alerts"] + rows[-1]["suppressed"] == len(mine)

    queue_items = [a for a in mine if triage.status_of(a) in triage.OPEN and a["soc.alert.uuid"] not in hidden]
    for by in ("source.ip", "rule", "organization", "soc.alert.severity"):
        rows, q = triage.grouped(gate, triage.Filters(), by, now=NOW)
        assert rows == triage.group(queue_items, by), by
    sc = triage.suppression_counts(gate, NOW)
    events = sum(a["soc.alert.suppression.docs_count"] for a in mine if a["soc.alert.uuid"] in hidden)
    if sup.rank <= rank:
        assert [(c.alerts, c.events) for c in sc.counts] == [(len(hidden), events)]
    else:  # a suppression above the reader: its hidden alerts are counted, not named
        assert (sc.counts, sc.hidden_by_withheld) == ([], len(hidden))

    page = triage.queue(gate, triage.Filters(), limit=50, now=NOW)
    want = sorted(queue_items, key=lambda a: (-a["soc.alert.risk_score"], a["@timestamp"]), reverse=False)
    want = sorted(want, key=lambda a: (-a["soc.alert.risk_score"], _neg(a["@timestamp"]), a["soc.alert.uuid"]))
    assert [a["soc.alert.uuid"] for a in page.items] == [a["soc.alert.uuid"] for a in want[:50]]
    rule0 = [a for a in want if a["soc.alert.rule.uuid"] == RULES[0][0]]
    for limit in (1, 2, 3, 5, 8):  # small pages of the suppressed rule: the queue reads on until the page is full
        got = triage.queue(gate, triage.Filters(rule=RULES[0][0]), limit=limit, now=NOW).items
        assert [a["soc.alert.uuid"] for a in got] == [a["soc.alert.uuid"] for a in rule0[:limit]]
    assert page.withheld == (len([a for a in alerts if triage.status_of(a) in triage.OPEN]) - len(
        [a for a in mine if triage.status_of(a) in triage.OPEN]) if policy.disclose_withheld else None)


def _neg(ts: str) -> tuple[int, ...]:
    """A timestamp key that sorts newest first."""
    return tuple(-ord(c) for c in ts)



def test_sqlite_first_page_reads_the_queue_index_without_sorting(tmp_path):
    """The queue's first page at scale: each status reads the index in the list's order (no temp B-tree sort),
    and clearance and suppressions are served by the rank and rule indexes, not a scan of every document."""
    from correlator.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
    store.init()
    store.write_alerts(generated(200))
    policy = active_policy()
    gate = Gate(store, Reader("tester", policy.levels[1], "test"), policy)
    triage.suppress(gate, RULES[0][0], f"source.ip:{SCANNER}", "30d", "scanner", "tester", now=NOW)
    sql: list[str] = []
    store.db.set_trace_callback(sql.append)
    triage.queue(gate, triage.Filters(), now=NOW)
    store.db.set_trace_callback(None)
    plans = {s: " | ".join(r[3] for r in store.db.execute("EXPLAIN QUERY PLAN " + s))
             for s in sql if s.startswith("SELECT") and " FROM alerts " in s}
    pages = [p for s, p in plans.items() if "ORDER BY risk_score DESC" in s]
    assert len(pages) == 3 and all("alerts_queue" in p and "TEMP B-TREE" not in p for p in pages), pages
    assert all("SCAN alerts" not in p for p in plans.values()), plans
    store.close()
