"""Flow table limits: eviction under a small max_flows, idle and active timeouts — nothing lost, all counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from .truth import compare, load_truth, run_sensor


def _flows(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event.dataset"] == "soc.flow"]


@pytest.mark.corpus
def test_eviction_is_bounded_counted_and_loses_no_packet(corpus: Path) -> None:
    pcap = corpus / "pcaps" / "es_masscan-tcp-scan.pcap"
    truth = load_truth(corpus, pcap)
    events, stats = run_sensor(pcap, max_flows=10)
    flows = _flows(events)
    assert stats["flows_evicted"] == len([f for f in flows if f["soc.flow.end_reason"] == "evicted"]) > 900
    assert sum(f["network.packets"] for f in flows) == truth["packets"]
    assert compare(truth, events)["flows"][:2] == (1001, 1001)  # every flow still exact


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["zk_wikipedia.pcap", "sv_real-browsing-mix.pcap", "zk_ssh-bulk.pcap"])
def test_short_idle_timeouts_split_but_keep_every_packet(corpus: Path, name: str) -> None:
    pcap = corpus / "pcaps" / name
    truth = load_truth(corpus, pcap)
    events, stats = run_sensor(pcap, idle_tcp=1.0, idle_other=0.5, closed_tcp=0.1)
    reasons = {f["soc.flow.end_reason"] for f in _flows(events)}
    assert "idle_timeout" in reasons
    agree, total, diffs = compare(truth, events)["flows"]
    assert agree == total, diffs[:3]  # FLOW-SPLIT sums the pieces back to tshark's streams


@pytest.mark.corpus
def test_active_timeout_cuts_long_flows_into_parts(corpus: Path) -> None:
    pcap = corpus / "pcaps" / "zk_smb2-bulk.pcap"
    truth = load_truth(corpus, pcap)
    events, _ = run_sensor(pcap, active=0.1)  # the transfer lasts 0.43 s
    parts = _flows(events)
    assert len(parts) > 2
    assert parts[0]["event.type"] == ["connection", "start"]
    assert all(p["event.type"] == ["connection"] for p in parts[1:-1])
    assert parts[-1]["event.type"] == ["connection", "end"]
    assert len({p["network.community_id"] for p in parts}) == 1
    assert {(p["source.ip"], p["source.port"]) for p in parts} == {(truth["flows_exact"][0]["a_ip"],
                                                                    truth["flows_exact"][0]["a_port"])}
    assert sum(p["network.bytes"] for p in parts) == truth["flows_exact"][0]["bytes"]
