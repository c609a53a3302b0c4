"""The Elasticsearch store against a running ES-compatible server: layout, idempotent bulk, alerts, audit chain,
hunting, status and unreachable clusters. Emulator gaps are marked per check (see tests/es_server.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from elasticsearch import Elasticsearch
from es_server import EsServer, FaultProxy, free_port

from correlator.events import event_id
from correlator.pipeline import Pipeline
from correlator.query import Clearance, Query, parse_query
from correlator.store import StoreError, StoreRejected, StoreUnavailable, open_store
from correlator.store.elastic import SCHEMA_VERSION, ElasticStore

from .conftest import expect_gap

pytestmark = pytest.mark.es


def _raw(server: EsServer) -> Elasticsearch:
    return Elasticsearch(server.url, **server.client_options)


def _event(i: int, **extra) -> dict:
    ev = {"@timestamp": f"2024-05-01T10:00:{i % 60:02d}.{i:06d}Z", "event.kind": "event", "event.dataset": "soc.flow",
          "event.sequence": i, "source.ip": f"10.0.0.{i % 250 + 1}", "destination.port": 443, **extra}
    ev["event.id"] = event_id(ev)
    return ev


def test_init_installs_ecs_mappings(es_server, es_store):
    raw = _raw(es_server)
    template = raw.indices.get_index_template(name=es_store.policy)["index_templates"][0]["index_template"]
    assert template["_meta"]["schema_version"] == SCHEMA_VERSION
    assert template["index_patterns"] == [es_store.events_index]
    props = raw.indices.get_mapping(index=es_store.alerts_index)[es_store.alerts_index]["mappings"]["properties"]
    assert props["source"]["properties"]["ip"]["type"] == "ip"
    assert props["destination"]["properties"]["port"]["type"] == "long"
    assert props["@timestamp"]["type"] == "date_nanos"
    assert props["event"]["properties"]["id"]["type"] == "keyword"
    assert props["message"]["type"] == "text" and props["message"]["fields"]["keyword"]["type"] == "keyword"
    if raw.info()["version"].get("distribution") != "opensearch":  # logsdb would drop the _source exclusion
        settings = raw.indices.get_settings(index=es_store.events_index)
        assert all(i["settings"]["index"]["mode"] == "standard" for i in settings.values())
    es_store.init()  # idempotent
    es_store.write_events([_event(1, **{"custom.ip": "192.0.2.1", "custom.name": "x"})])
    es_store.refresh()
    dynamic = raw.indices.get_mapping(index=es_store.events_index)
    custom = next(iter(dynamic.values()))["mappings"]["properties"]["custom"]["properties"]
    assert custom["ip"]["type"] == "ip" and custom["name"]["type"] == "keyword"


def test_events_go_to_a_data_stream(request, es_server, es_store):
    expect_gap(request, es_server, "data_stream")
    streams = _raw(es_server).indices.get_data_stream(name=es_store.events_index)["data_streams"]
    assert [s["name"] for s in streams] == [es_store.events_index]
    assert es_store.status()["events_target"] == f"data stream {es_store.events_index}"


def test_ilm_policy_has_configured_retention(request, es_server):
    expect_gap(request, es_server, "ilm")
    store = es_server.store(retention="400d")
    store.init()
    policy = _raw(es_server).ilm.get_lifecycle(name=store.policy)[store.policy]["policy"]
    assert policy["phases"]["delete"]["min_age"] == "400d"
    assert "rollover" in policy["phases"]["hot"]["actions"]
    store.close()


def test_newer_schema_is_refused_and_nothing_written(es_server):
    store = es_server.store()
    raw = _raw(es_server)
    raw.indices.put_index_template(name=store.policy, index_patterns=[store.events_index], priority=500,
                                   meta={"application": "soc", "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(StoreError, match="newer than this soc supports"):
        store.init()
    assert not raw.indices.exists(index=store.alerts_index)


def test_foreign_template_is_refused(es_server):
    store = es_server.store()
    _raw(es_server).indices.put_index_template(name=store.policy, index_patterns=[store.events_index], priority=500,
                                               meta={"application": "someone-else"})
    with pytest.raises(StoreError, match="not soc's"):
        store.init()


def test_writes_are_idempotent_and_round_trip(es_store):
    events = [_event(i, message="hello world", **{"event.category": ["network", "dns"]}) for i in range(300)]
    assert es_store.write_events([dict(e) for e in events[:200]]) == 200
    assert es_store.write_events([dict(e) for e in events]) == 100  # 200 already stored: duplicates, not errors
    assert es_store.write_events([dict(e) for e in events]) == 0
    es_store.refresh()
    assert es_store.count_events(Query()) == 300
    got = es_store.search_events(Query(), limit=1000)
    assert got == sorted(sorted(events, key=lambda e: e["event.id"]), key=lambda e: e["@timestamp"], reverse=True)


def test_paging_beyond_one_page(es_store):
    es_store.PAGE = 40  # force several search_after pages
    events = [_event(i) for i in range(150)]
    es_store.write_events(events)
    es_store.refresh()
    want = [e["event.id"] for e in sorted(sorted(events, key=lambda e: e["event.id"]),
                                          key=lambda e: e["@timestamp"], reverse=True)]
    assert [e["event.id"] for e in es_store.search_events(Query(), limit=130)] == want[:130]
    assert [e["event.id"] for e in es_store.search_events(Query(), limit=1000)] == want


def test_rejected_documents_are_named_and_the_rest_stored(es_store):
    good, bad = _event(1, **{"x.y": "nested"}), _event(2, x="scalar where an object is mapped")
    es_store.write_events([good])
    with pytest.raises(StoreRejected, match=rf"1 of 2 documents rejected \(1 stored\).*_id {bad['event.id']}") as exc:
        es_store.write_events([_event(3), bad])
    assert exc.value.new == 1 and len(exc.value.problems) == 1
    es_store.refresh()
    assert es_store.count_events(Query()) == 2


def test_pipeline_goes_on_past_documents_the_cluster_refuses(es_store, soc_env):
    events = [_event(i, **{"x.y": "nested"}) for i in range(50)]
    events[7] = _event(7, x="scalar where an object is mapped")
    stats = Pipeline(es_store, batch_size=20).run([dict(e) for e in events] + [dict(e) for e in events[:5]])
    assert (stats.written, stats.rejected, stats.duplicates, stats.spooled) == (49, 1, 5, False)
    assert len(stats.errors) == 1 and events[7]["event.id"] in stats.errors[0]
    es_store.refresh()
    assert es_store.count_events(Query()) == 49


@pytest.fixture
def proxied(es_server):
    """A store reached through a proxy that answers chosen bulk requests/items with 429/5xx itself."""
    proxy = FaultProxy(es_server.url)
    store = es_server.store(via=proxy.url)
    store.init()
    store.BACKOFF = 0.2
    yield proxy, store
    store.close()
    proxy.close()


def _pauses(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_bulk_items_refused_with_429_or_503_are_resent_with_backoff(proxied):
    proxy, store = proxied
    proxy.fail_items = [(30, 429), (10, 503)]
    assert store.write_events([_event(i) for i in range(100)]) == 100
    store.refresh()
    assert store.count_events(Query()) == 100
    assert len(proxy.bulk_times) == 3
    first, second = _pauses(proxy.bulk_times)
    assert first >= 0.2 and second >= 0.4  # exponential backoff


def test_bulk_requests_refused_with_429_or_503_are_resent_with_backoff(proxied):
    proxy, store = proxied
    proxy.fail_requests = [429, 503]
    assert store.write_events([_event(i) for i in range(50)]) == 50
    assert len(proxy.bulk_times) == 3 and min(_pauses(proxy.bulk_times)) >= 0.2


def test_items_refused_beyond_the_retries_make_the_store_unavailable(proxied):
    proxy, store = proxied
    store.RETRIES = 2
    proxy.fail_items = [(5, 503)] * 3
    with pytest.raises(StoreUnavailable, match="5 documents still refused"):
        store.write_events([_event(i) for i in range(40)])
    proxy.fail_requests = [503] * 3
    with pytest.raises(StoreUnavailable, match="503"):
        store.write_events([_event(i) for i in range(40)])
    assert store.write_events([_event(i) for i in range(40)]) == 5  # the re-sent batch adds only what was missing


def _alert(uuid: str, risk: float, ts: str) -> dict:
    return {"@timestamp": ts, "soc.alert.uuid": uuid, "soc.alert.risk_score": risk, "soc.alert.severity": "high",
            "soc.alert.workflow_status": "open", "soc.alert.reason": f"reason {uuid}", "source.ip": "10.0.0.1",
            "soc.alert.rule.threat": [{"tactic": {"id": "TA0011"}}]}


def test_alerts_upsert_order_and_update(request, es_server, es_store):
    es_store.write_alerts([_alert("a", 50, "2024-05-01T10:00:00.000000Z"),
                           _alert("b", 90, "2024-05-01T09:00:00.000000Z"),
                           _alert("c", 50, "2024-05-01T11:00:00.000000Z")])
    es_store.write_alerts([_alert("a", 60, "2024-05-01T10:00:00.000000Z")])
    es_store.refresh()
    assert [a["soc.alert.uuid"] for a in es_store.search_alerts(Query())] == ["b", "a", "c"]
    stored = es_store.get_alert("a")  # the store adds when it first wrote the alert (the triage timers' start)
    assert stored.pop("soc.alert.created") and stored == _alert("a", 60, "2024-05-01T10:00:00.000000Z")
    es_store.update_alert("b", {"soc.alert.workflow_status": "closed"})
    assert es_store.get_alert("b")["soc.alert.workflow_status"] == "closed"
    open_ = es_store.search_alerts(parse_query("soc.alert.workflow_status:open"))
    assert [a["soc.alert.uuid"] for a in open_] == ["a", "c"]
    assert es_store.get_alert("nope") is None
    with pytest.raises(StoreError, match="no alert"):
        es_store.update_alert("nope", {})


def test_alert_free_text_survives_update(request, es_server, es_store):
    expect_gap(request, es_server, "text")
    es_store.write_alerts([_alert("c", 50, "2024-05-01T11:00:00.000000Z")])
    es_store.update_alert("c", {"soc.alert.workflow_status": "acknowledged"})
    assert [a["soc.alert.uuid"] for a in es_store.search_alerts(parse_query("reason c"))] == ["c"]


def test_clearance_hides_items_above_rank(es_store):
    base = {"@timestamp": "2024-05-01T10:00:00.000000Z", "event.kind": "event"}
    es_store.write_events([base | {"event.id": f"e{r}", "gov.label.rank": r} for r in range(4)]
                          + [base | {"event.id": "none"}])
    es_store.refresh()
    for rank in range(4):
        got = {e["event.id"] for e in es_store.search_events(Query((Clearance(rank),)))}
        assert got == {f"e{r}" for r in range(rank + 1)} | {"none"}


@pytest.fixture
def audited(es_store):
    for i in range(1, 6):
        es_store.audit("read", {"n": i, "level": "secret"}, actor="analyst")
    assert es_store.audit_verify() == []
    return es_store


def test_audit_chain_links_entries(audited):
    entries = audited.audit_entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))


def test_audit_detects_edit(es_server, audited):
    raw = _raw(es_server)
    doc = raw.get(index=audited.audit_index, id="3")["_source"] | {"details": {"n": 3, "level": "public"}}
    raw.index(index=audited.audit_index, id="3", document=doc, refresh=True)
    assert audited.audit_verify() == ["audit entry seq=3: content does not match its hash (edited)"]


def test_audit_detects_delete_in_middle_and_truncation(es_server, audited):
    raw = _raw(es_server)
    raw.delete(index=audited.audit_index, id="2", refresh=True)
    assert any("seq=3" in p and "deleted or reordered" in p for p in audited.audit_verify())
    raw.delete(index=audited.audit_index, id="5", refresh=True)
    assert any("removed from the end" in p for p in audited.audit_verify())


def test_audit_recovers_from_a_writer_that_died_before_moving_the_head(es_server, audited):
    five = audited.audit_entries()[-1]
    ts = "2024-05-01T10:00:00.000000Z"
    orphan = {"seq": 6, "ts": ts, "actor": "crashed", "action": "read", "details": {}, "prev_hash": five["hash"],
              "hash": audited.audit_chain.seal(five["hash"], five["hash"], 6, ts, "crashed", "read", {})}
    _raw(es_server).index(index=audited.audit_index, id="6", document=orphan, refresh=True)  # head still at 5
    audited.audit("export", {"n": 7}, actor="analyst")
    assert [(e["seq"], e["actor"]) for e in audited.audit_entries()][-2:] == [(6, "crashed"), (7, "analyst")]
    assert audited.audit_verify() == []


@pytest.fixture
def hunted(es_store):
    es_store.write_events([_event(i, **{"destination.port": 22 if i % 3 == 0 else 443}) for i in range(60)])
    es_store.refresh()
    return es_store


SINCE = datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)


def test_hunt_runs_lucene_within_time_range(hunted):
    got = hunted.hunt("destination.port:[1 TO 100] AND event.dataset:soc.flow", SINCE, None, 1000)
    want = hunted.search_events(parse_query("destination.port:<=100 event.dataset:soc.flow", SINCE), 1000)
    assert got == want
    assert len(got) == 10 and all(e["destination.port"] == 22 and e["@timestamp"] >= "2024-05-01T10:00:30" for e in got)
    with pytest.raises(StoreError, match="hunt"):
        hunted.hunt("destination.port:(22 AND", None, None)


def test_hunt_numeric_term(request, es_server, hunted):
    expect_gap(request, es_server, "lucene_numeric_term")
    assert len(hunted.hunt("destination.port:22", SINCE, None, 1000)) == 10


def test_hunt_ip_terms(request, es_server, hunted):
    expect_gap(request, es_server, "lucene_ip_term")
    got = hunted.hunt("source.ip:(10.0.0.4 OR 10.0.0.5) AND NOT destination.port:443", None, None, 1000)
    assert [(e["source.ip"], e["destination.port"]) for e in got] == [("10.0.0.4", 22)]  # event 3; event 4 is :443


def test_clear_errors_for_queries_elasticsearch_cannot_express(es_store):
    with pytest.raises(StoreError, match="prefix queries do not apply to IP fields"):
        es_store.search_events(parse_query("source.ip:10.*"))
    with pytest.raises(StoreError, match="CIDR queries need an ip-typed field"):
        es_store.search_events(parse_query("dns.question.name:10.0.0.0/8"))


def test_status_reports_health_counts_and_versions(es_store):
    es_store.write_events([_event(i) for i in range(5)])
    es_store.write_alerts([_alert("a", 50, "2024-05-01T10:00:00.000000Z")])
    es_store.audit("init", {})
    es_store.refresh()
    s = es_store.status()
    assert s["healthy"] is True and s["backend"] == "elasticsearch"
    assert (s["events"], s["alerts"], s["audit_entries"]) == (5, 1, 1)
    assert s["schema_version"] == SCHEMA_VERSION and s["server_version"] and s["client_version"].startswith("8.")
    assert (s["first_event"], s["last_event"]) == ("2024-05-01T10:00:00.000000Z", "2024-05-01T10:00:04.000004Z")


def test_status_of_an_uninitialized_namespace_is_unhealthy(es_server):
    s = es_server.store().status()
    assert s["healthy"] is False and "soc store init" in s["error"]


def test_unreachable_cluster_raises_store_unavailable():
    store = ElasticStore(f"http://127.0.0.1:{free_port()}/?timeout=2")
    for call in (store.init, lambda: store.write_events([_event(1)]), store.status,
                 lambda: store.search_events(Query())):
        with pytest.raises(StoreUnavailable, match="cannot reach Elasticsearch"):
            call()


@pytest.mark.parametrize("uri, message", [
    ("http://localhost:9200/?shards=3", "unknown parameter"),
    ("http://localhost:9200/?retention=forever", "not a duration"),
    ("http://localhost:9200/?namespace=Bad-NS", "namespace"),
    ("http://localhost:9200/?timeout=soon", "timeout"),
])
def test_bad_uris_are_clear_errors(uri, message):
    with pytest.raises(StoreError, match=message):
        open_store(uri)


def test_password_never_shown_and_sent_as_basic_auth():
    store = ElasticStore(f"http://elastic:s3cret@127.0.0.1:{free_port()}/?namespace=x&timeout=2")
    assert store.uri == f"http://elastic:***@127.0.0.1:{store.url.rsplit(':', 1)[1]}/?namespace=x&timeout=2"
    assert "s3cret" not in store.url
    with pytest.raises(StoreUnavailable) as exc:
        store.status()
    assert "s3cret" not in str(exc.value)
    assert store.es._headers["authorization"].startswith("Basic ")
