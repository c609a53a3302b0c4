"""Live capture for real: two network namespaces joined by a veth pair; `soc sensor live` captures in one while
scapy sends crafted DNS, HTTP, a TLS ClientHello and a SYN sweep from the other; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns import veth_pair

SENDER = r"""
from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether, Raw, sendp
from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName
from scapy.layers.tls.handshake import TLSClientHello
from scapy.layers.tls.record import TLS

iface, a, b = "veth-a", "10.199.0.1", "10.199.0.2"
eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
pkts = [eth / IP(src=a, dst=b) / UDP(sport=40000, dport=53) / DNS(id=7, rd=1, qd=DNSQR(qname="live-test.example.gov"))]
def tcp_session(sport, dport, payload):
    return [eth / IP(src=a, dst=b) / TCP(sport=sport, dport=dport, flags="S", seq=1000),
            eth / IP(src=a, dst=b) / TCP(sport=sport, dport=dport, flags="PA", seq=1001, ack=1) / Raw(payload)]
http = b"GET /secret/report.pdf HTTP/1.1\r\nHost: intranet.example.gov\r\nUser-Agent: live-test\r\n\r\n"
pkts += tcp_session(40001, 80, http[:20]) + [eth / IP(src=a, dst=b) / TCP(sport=40001, dport=80, flags="PA",
                                                                           seq=1021, ack=1) / Raw(http[20:])]
sni = TLS_Ext_ServerName(servernames=[ServerName(servername=b"tls.example.gov")])
hello = bytes(TLS(msg=[TLSClientHello(ext=[sni])]))
pkts += tcp_session(40002, 8443, hello)
pkts += [eth / IP(src=a, dst=b) / TCP(sport=41000 + p, dport=p, flags="S", seq=5000) for p in range(20, 30)]
sendp(pkts, iface=iface, verbose=False, inter=0.01)
"""


@pytest.fixture
def netns_pair():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("LIVE CAPTURE TEST NEEDS ROOT and iproute2 (`ip netns`): it creates network namespaces")
    with veth_pair("10.199.0.1", "10.199.0.2", prefix="soc-", devs=("veth-a", "veth-b"),
                   macs=("02:00:00:00:00:01", "02:00:00:00:00:02")) as pair:
        yield pair


@pytest.mark.netns
def test_live_capture_in_namespaces(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    ns_a, ns_b = netns_pair
    db = tmp_path / "live.db"
    soc = [str(Path(sys.executable).with_name("soc"))]  # the installed entry point, as a user runs it
    cap = subprocess.Popen(["ip", "netns", "exec", ns_b, *soc, "sensor", "live", "--iface", "veth-b", "--json",
                            "--store", f"sqlite:///{db}", "--home-net", "10.199.0.2/32", "--sensor-name", "ns-b"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=os.environ | {"SOC_HOME": str(tmp_path / "home")})  # its rolling capture goes there
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "capturing on veth-b" not in line:
            line = cap.stderr.readline()
            assert line or cap.poll() is None, "soc sensor live exited before capturing"
            assert time.monotonic() < deadline, "capture did not start"
        subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-c", SENDER], check=True, timeout=120)
        time.sleep(1.0)
        cap.send_signal(signal.SIGTERM)
        out, err = cap.communicate(timeout=60)
    finally:
        if cap.poll() is None:
            cap.kill()
    assert cap.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["stopped_by"] == "SIGTERM" and report["kernel_drops"] == 0
    assert report["packets_read"] >= 16  # 1 DNS + 3 HTTP + 2 TLS + 10 SYN, plus the kernel's RSTs

    rows = [json.loads(r[0]) for r in sqlite3.connect(db).execute("SELECT doc FROM events")]
    by = {}
    for ev in rows:
        by.setdefault(ev["event.dataset"], []).append(ev)
    assert [e["dns.question.name"] for e in by["soc.dns"]] == ["live-test.example.gov"]
    http = by["soc.http"][0]
    assert (http["url.domain"], http["url.original"], http["user_agent.original"]) == (
        "intranet.example.gov", "/secret/report.pdf", "live-test")
    assert [e.get("tls.client.server_name") for e in by["soc.tls"]] == ["tls.example.gov"]
    assert by["soc.tls"][0]["destination.port"] == 8443
    sweep = [e for e in by["soc.flow"] if e.get("destination.port") in range(20, 30)]
    assert len(sweep) == 10
    assert all(e["soc.flow.state"] == "rejected" and e["network.direction"] == "inbound" for e in sweep)
    assert all(e["observer.name"] == "ns-b" for e in rows)
    assert all(e["soc.flow.end_reason"] == "end_of_input" for e in by["soc.flow"])  # flushed on SIGTERM
    # the rolling capture under $SOC_HOME/capture/veth-b/ holds every packet read; each flow's packets come back
    from scapy.utils import RawPcapReader

    from correlator.evidence import FlowRef, packets_of

    runs = list((tmp_path / "home" / "capture" / "veth-b").iterdir())
    assert len(runs) == 1 and all(e["soc.capture.ring"] == str(runs[0]) for e in rows)
    kept = [data for f in sorted(runs[0].glob("*.pcap")) for data, _ in RawPcapReader(str(f))]
    assert len(kept) == report["packets_read"]
    for flow in by["soc.flow"]:
        got = list(packets_of([FlowRef(str(runs[0]), flow["soc.flow.first_frame"], flow["network.packets"],
                                       ring=True)]))
        assert len(got) == flow["network.packets"] and all(r[1] in kept for r in got)


SWEEP = r"""
import sys
from scapy.all import IP, TCP, Ether, sendp
sys.stdin.readline()  # imported and waiting: the send itself fits the capture's duration even on a loaded machine
eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
sendp([eth / IP(src="10.199.0.1", dst="10.199.0.2") / TCP(sport=42000 + p, dport=p, flags="S") for p in range(1, 9)],
      iface="veth-a", verbose=False, inter=0.05)
"""


@pytest.mark.netns
@pytest.mark.parametrize("stop", [["--count", "5"], ["--duration", "4"]], ids=["count", "duration"])
def test_live_stops_on_count_or_duration(netns_pair: tuple[str, str], tmp_path: Path, stop: list[str]) -> None:
    ns_a, ns_b = netns_pair
    soc = str(Path(sys.executable).with_name("soc"))
    sender = subprocess.Popen(["ip", "netns", "exec", ns_a, sys.executable, "-c", SWEEP], stdin=subprocess.PIPE,
                              text=True)
    cap = subprocess.Popen(["ip", "netns", "exec", ns_b, soc, "sensor", "live", "--iface", "veth-b", "--json",
                            "--bpf", "tcp[tcpflags] & tcp-syn != 0 and not tcp[tcpflags] & tcp-ack != 0",
                            "--store", f"sqlite:///{tmp_path / 'c.db'}", *stop],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=os.environ | {"SOC_HOME": str(tmp_path / "home")})  # its rolling capture goes there
    try:
        while "capturing on veth-b" not in cap.stderr.readline():
            assert cap.poll() is None, "soc sensor live exited before capturing"
        sender.communicate("go\n", timeout=120)
        assert sender.returncode == 0
        out, err = cap.communicate(timeout=60)
    finally:
        for proc in (cap, sender):
            if proc.poll() is None:
                proc.kill()
    assert cap.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    if stop[0] == "--count":
        assert report["stopped_by"] == "count" and report["packets_read"] == 5
    else:  # the kernel filter kept only the 8 SYNs, not the peer's RSTs
        assert report["stopped_by"] == "duration" and report["packets_read"] == 8
        assert report["events"] == {"soc.flow": 8}
