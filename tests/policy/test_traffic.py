"""Crafted traffic through the real sensor and pipeline: one case per violation type and per allowed flow."""

from __future__ import annotations

import pytest

from correlator.query import Query, Term
from tests.policy import traffic as t
from tests.policy.conftest import run_pcap

INTERNET = "185.220.101.7"
# name -> (packets builder, expected violation rules on the flow's events (set), expected decision)
CASES = {
    # allowed flows
    "citizen-reads-portal": (lambda s: t.tls_session(INTERNET, "172.16.10.10", 443, "1.3", "www.portal.gov.example", s),
                             set(), "allow"),
    "moi-reads-registry": (lambda s: t.tls_session("10.20.3.3", "10.1.0.10", 443, "1.3", None, s), set(), "allow"),
    "mof-internal-treasury": (lambda s: t.tls_session("10.10.3.3", "10.10.5.10", 443, "1.2", None, s), set(),
                              "allow"),
    "moi-admin-ssh": (lambda s: t.ssh_session("10.20.3.3", "10.20.5.20", 22, s), set(), "allow"),
    "moi-to-mofa-agreed": (lambda s: t.tls_session("10.20.3.3", "10.40.1.10", 443, "1.3", None, s), set(), "allow"),
    "mof-backup-ftp-excepted": (lambda s: t.cleartext_session("10.10.7.5", "10.1.250.30", 21, b"220 vault FTP\r\n",
                                                              b"USER backup\r\n", s), set(), "excepted"),
    "mof-dns-national-resolver": (lambda s: t.dns_exchange("10.10.3.9", "10.1.0.53", "portal.gov.example", s), set(),
                                  "allow"),
    "scan-rejected-no-data": (lambda s: t.rejected(INTERNET, "10.20.5.21", 8080, s), set(), "no-data"),
    # violations
    "write-down-to-internet": (lambda s: t.tls_session(INTERNET, "10.20.5.20", 443, "1.3", None, s),
                               {"write-down"}, "deny"),
    "secret-host-uploads": (lambda s: t.tls_session("10.1.0.80", INTERNET, 443, "1.3", "files.drop.example", s),
                            {"write-down"}, "deny"),
    "cross-org-no-agreement": (lambda s: t.tls_session("10.20.3.3", "10.10.5.10", 443, "1.2", None, s),
                               {"cross-organization"}, "deny"),
    "cleartext-http-restricted": (lambda s: t.http_session("10.30.3.3", "10.30.2.10", 80, "records.moh", s),
                                  {"protection"}, "deny"),
    "old-tls-restricted": (lambda s: t.tls_session("10.10.3.4", "10.10.5.10", 443, "1.0", None, s),
                           {"protection"}, "deny"),
    "telnet-restricted": (lambda s: t.cleartext_session("10.30.3.3", "10.30.4.4", 23, b"login: ", b"admin\r\n", s),
                          {"protection"}, "deny"),
    "caveat-outside-org": (lambda s: t.tls_session("10.40.3.3", "10.1.0.10", 443, "1.3", None, s),
                           {"caveat"}, "deny"),
    "expired-exception-telnet": (lambda s: t.cleartext_session("10.1.250.9", "10.1.250.2", 23, b"login: ",
                                                               b"admin\r\n", s), {"expired-exception"}, "deny"),
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory, policy):
    """All cases in one pcap (each in its own minute), run once through sensor and pipeline."""
    from correlator.policy import PolicyEngine
    from correlator.store import open_store

    tmp = tmp_path_factory.mktemp("policy-traffic")
    packets = []
    for i, (build, _, _) in enumerate(CASES.values()):
        packets += build(t.T0 + 60 * i)
    pcap = t.write(tmp / "crafted.pcap", packets)
    store = open_store(f"sqlite:///{tmp / 'soc.db'}")
    store.init()
    stats = run_pcap(pcap, store, PolicyEngine(policy))
    store.pcap = pcap
    yield store, stats
    store.close()


def _server(case: str) -> tuple[str, str]:
    pkts = CASES[case][0](t.T0)
    return pkts[0]["IP"].src, pkts[0]["IP"].dst


@pytest.mark.parametrize("case", list(CASES))
def test_flow_decision(stored, case):
    store, stats = stored
    assert not stats.errors
    src, dst = _server(case)
    events = store.search_events(Query((Term("source.ip", src), Term("destination.ip", dst))), 100)
    assert events, f"{case}: the sensor produced no events for {src} -> {dst}"
    _, want_rules, want_decision = CASES[case]
    for ev in events:  # every event carries the namespace
        for f in ("gov.source.zone", "gov.destination.zone", "gov.label.level", "gov.label.rank"):
            assert f in ev, (case, f, ev["event.dataset"])
    got = {r for ev in events for r in ev.get("gov.policy.violations", [])}
    assert got == want_rules, (case, [(e["event.dataset"], e.get("gov.policy.reasons")) for e in events])
    decisions = {ev["gov.policy.decision"] for ev in events}
    assert want_decision in decisions and (want_decision != "allow" or decisions == {"allow"})
    alerts = store.search_alerts(Query((Term("source.ip", src), Term("destination.ip", dst))), 100)
    assert {a["soc.alert.rule.uuid"].removeprefix("soc-policy-") for a in alerts} == want_rules
    for a in alerts:  # label, severity and risk come from the flow's label
        assert a["gov.label.rank"] == max(ev["gov.label.rank"] for ev in events)


def test_labels_and_zones(stored, policy):
    store, _ = stored
    # a citizen on the internet reading the public portal: public, internet -> portal-dmz
    ev = store.search_events(Query((Term("destination.ip", "172.16.10.10"), Term("event.dataset", "soc.tls"))), 1)[0]
    assert (ev["gov.source.zone"], ev["gov.destination.zone"], ev["gov.label.level"]) == ("internet", "portal-dmz",
                                                                                         "public")
    assert ev["gov.service.id"] == "portal-web" and ev["gov.destination.organization"] == "portal"
    # the moi enclave has no listed asset on the ssh host: unknown service fails closed to the zone maximum
    ev = store.search_events(Query((Term("destination.ip", "10.20.5.20"), Term("destination.port", 22))), 1)[0]
    assert ev["gov.service.known"] is False and ev["gov.label.level"] == "secret"
    assert ev["gov.label.ar"] == "سري"


def test_answers_are_classified_from_the_client_side(stored):
    """A DNS answer travels resolver -> client; the service is still the resolver (public), not the client."""
    store, _ = stored
    answer = store.search_events(Query((Term("source.ip", "10.1.0.53"), Term("dns.type", "answer"))), 1)[0]
    assert answer["gov.service.id"] == "cdc-dns" and answer["gov.label.level"] == "public"
    assert answer["gov.policy.decision"] == "allow"


def test_severity_rises_with_label(stored):
    store, _ = stored
    alerts = store.search_alerts(Query(), 1000)
    by_rank = {}
    for a in alerts:
        by_rank.setdefault(a["gov.label.rank"], set()).add((a["soc.alert.severity"], a["soc.alert.risk_score"]))
    ranks = sorted(by_rank)
    assert len(ranks) >= 2  # restricted and secret flows both alerted
    risks = [max(r for _, r in by_rank[k]) for k in ranks]
    assert risks == sorted(risks) and len(set(risks)) == len(risks)
    assert by_rank[1] == {("medium", 47)} and by_rank[2] == {("high", 73)}


def test_replay_upserts_same_alerts(stored, policy):
    """Re-running the same pcap yields the same event ids and alert uuids (no duplicates)."""
    from correlator.policy import PolicyEngine

    store, _ = stored
    before = {a["soc.alert.uuid"] for a in store.search_alerts(Query(), 1000)}
    stats = run_pcap(store.pcap, store, PolicyEngine(policy))
    assert stats.written == 0 and stats.duplicates == stats.events_in
    assert {a["soc.alert.uuid"] for a in store.search_alerts(Query(), 1000)} == before
