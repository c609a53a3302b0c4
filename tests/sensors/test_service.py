"""`soc sensor live` as a service, for real: in a network namespace pair (tests/sensors/test_live.py's fixture) a
SIGTERM in the middle of the traffic stores every flow of every packet read and exits 0 with its summary; the
Prometheus endpoint, scraped while it runs, agrees with that summary; kernel drops are the socket's own count (a
reader stopped with SIGSTOP while a flood arrives: read + dropped = sent); the deploy/ systemd units pass
`systemd-analyze verify`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.debian import require
from tests.sensors import test_live

ROOT = Path(__file__).resolve().parents[2]
SOC = str(Path(sys.executable).with_name("soc"))
netns = test_live.netns_pair  # the fixture: two namespaces joined by veth-a (10.199.0.1) and veth-b (.2)
BPF = "udp and dst host 10.199.0.2"  # the sender's datagrams only, not the receiver's ICMP port unreachables

# one UDP datagram per flow, source port BASE + i, in order; DNS queries (an event each, as they arrive) every 50th
SENDER = r"""
import sys, time
from scapy.all import DNS, DNSQR, IP, UDP, Ether, Raw, sendp
n, inter, base = int(sys.argv[1]), float(sys.argv[2]), 20000
eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
ip = IP(src="10.199.0.1", dst="10.199.0.2")
pkts = [eth / ip / UDP(sport=base + i, dport=53) / DNS(id=i, rd=1, qd=DNSQR(qname=f"q{i}.service-test.example"))
        if i % 50 == 0 else eth / ip / UDP(sport=base + i, dport=9999) / Raw(b"x" * 40) for i in range(n)]
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
sendp(pkts, iface="veth-a", verbose=False, inter=inter)
"""
BASE = 20000


def _start(ns: str, tmp_path: Path, *extra: str, bpf: str = BPF) -> subprocess.Popen:
    cap = subprocess.Popen(["ip", "netns", "exec", ns, SOC, "sensor", "live", "--iface", "veth-b", "--json",
                            "--no-ring", *(["--bpf", bpf] if bpf else []),
                            "--store", f"sqlite:///{tmp_path / 'live.db'}",
                            "--sensor-name", "svc", "--metrics-port", "0", *extra],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    url = None
    line = ""
    while "capturing on veth-b" not in line:
        line = cap.stderr.readline()
        if m := re.search(r"metrics on (http://\S+)", line):
            url = m.group(1)
        assert line or cap.poll() is None, f"soc sensor live exited before capturing: {cap.stderr.read()}"
        assert time.monotonic() < deadline, "capture did not start"
    assert url and url.startswith("http://127.0.0.1:"), "metrics are served on 127.0.0.1 by default"
    cap.metrics_url = url  # type: ignore[attr-defined]
    return cap


def _sender(ns: str, n: int, inter: float) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(n), str(inter)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def scrape(ns: str, url: str) -> dict[str, float]:
    """The samples of the sensor's /metrics (read inside its namespace), by name with labels."""
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    text = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                          capture_output=True, text=True, check=True).stdout
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def _wait_for(ns: str, cap: subprocess.Popen, ok, what: str, timeout: float = 120) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(ns, cap.metrics_url)
        if ok(m):
            return m
        assert cap.poll() is None, "the sensor exited"
        assert time.monotonic() < deadline, f"{what}: last scrape {m}"
        time.sleep(0.3)


def _stop(cap: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[dict, str]:
    cap.send_signal(sig)
    out, err = cap.communicate(timeout=120)
    assert cap.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def _stored(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT doc FROM events")]


@pytest.mark.netns
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_traffic_stores_every_flow(netns: tuple[str, str], tmp_path: Path, sig: int) -> None:
    """Stopped while datagrams still arrive: every packet read made its flow, each flow is stored once, flushed."""
    ns_a, ns_b = netns
    cap = _start(ns_b, tmp_path)
    sender = _sender(ns_a, 3000, 0.002)
    try:
        sender.stdin.write("go\n")
        sender.stdin.flush()
        _wait_for(ns_b, cap, lambda m: m["soc_sensor_packets_total"] >= 300, "300 packets read")
        assert sender.poll() is None, "the traffic ended before the signal: not mid-capture"
        report, err = _stop(cap, sig)
    finally:
        for proc in (cap, sender):
            if proc.poll() is None:
                proc.kill()
        sender.wait()
    assert report["stopped_by"] == signal.Signals(sig).name and report["kernel_drops"] == 0
    read = report["packets_read"]
    assert 300 <= read < 3000
    rows = _stored(tmp_path / "live.db")
    flows = [e for e in rows if e["event.dataset"] == "soc.flow"]
    # the truth is the sender's: packet i is the only packet of the flow from port BASE + i, sent in order
    assert sorted(e["source.port"] for e in flows) == list(range(BASE, BASE + read))
    assert all(e["network.packets"] == 1 and e["soc.flow.end_reason"] == "end_of_input" for e in flows)
    dns = sorted(e["source.port"] for e in rows if e["event.dataset"] == "soc.dns")
    assert dns == list(range(BASE, BASE + read, 50))
    assert report["events"] == {"soc.flow": read, "soc.dns": len(dns)}
    assert report["store"]["written"] == len(rows) == read + len(dns)


@pytest.mark.netns
def test_metrics_scraped_while_running_match_the_summary(netns: tuple[str, str], tmp_path: Path) -> None:
    ns_a, ns_b = netns
    cap = _start(ns_b, tmp_path)
    sender = _sender(ns_a, 201, 0.001)  # 196 datagrams to 9999, DNS queries from BASE, BASE + 50, … BASE + 200
    try:
        before = scrape(ns_b, cap.metrics_url)
        assert before["soc_sensor_packets_total"] == 0 and before["soc_sensor_kernel_drops_total"] == 0
        sender.communicate("go\n", timeout=120)
        # the DNS events are stored within a second of arriving (not when a 2000-event batch has gathered)
        m = _wait_for(ns_b, cap, lambda m: m["soc_sensor_packets_total"] == 201
                      and m["soc_sensor_events_stored_total"] == 5, "201 packets read and 5 DNS events stored")
        assert _stored(tmp_path / "live.db") != []
        report, _ = _stop(cap)
    finally:
        for proc in (cap, sender):
            if proc.poll() is None:
                proc.kill()
    assert m["soc_sensor_packets_total"] == report["packets_read"] == 201
    assert report["capture_buffer_bytes"] == 64 << 20  # --buffer-size 32 (MB) by default, doubled by the kernel
    assert m["soc_sensor_kernel_drops_total"] == report["kernel_drops"] == 0
    assert m["soc_sensor_events_total{dataset=soc.dns}"] == report["events"]["soc.dns"] == 5
    assert "soc_sensor_events_total{dataset=soc.flow}" not in m  # open flows are emitted on stop
    assert report["events"]["soc.flow"] == report["flows_emitted"] == 201
    assert m["soc_sensor_alerts_total"] == report["store"]["alerts"]
    assert m["soc_sensor_store_errors_total"] == report["store"]["store_errors"] == 0
    assert m["soc_sensor_spool_depth"] == report["store"]["spooled_events"] == 0
    assert report["store"]["written"] == 206


def _reader_of(pid: int) -> int:
    """The capture's reader process (`--processes 2`): its only child."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.netns
@pytest.mark.parametrize("processes", ["1", "2"])
def test_kernel_drops_are_the_sockets_count(netns: tuple[str, str], tmp_path: Path, processes: str) -> None:
    """The socket's reader is stopped (SIGSTOP) while 5000 datagrams arrive: its 1 MB queue holds some, the kernel
    drops the rest; every datagram sent is either read or counted as dropped, in the summary and in the metrics.
    With `--processes 2` the reader is the second process."""
    ns_a, ns_b = netns
    cap = _start(ns_b, tmp_path, "--buffer-size", "1", "--processes", processes)
    reader = cap.pid if processes == "1" else _reader_of(cap.pid)
    sender = _sender(ns_a, 5000, 0)
    try:
        os.kill(reader, signal.SIGSTOP)
        sender.communicate("go\n", timeout=300)
        assert sender.returncode == 0
        os.kill(reader, signal.SIGCONT)
        # the queue is read, and the drops are read from the socket when it goes idle
        m = _wait_for(ns_b, cap, lambda m: m["soc_sensor_packets_total"] + m["soc_sensor_kernel_drops_total"] == 5000,
                      "read + dropped = 5000 sent")
        report, err = _stop(cap)
    finally:
        for proc in (cap, sender):
            if proc.poll() is None:
                proc.kill()
    assert report["kernel_drops"] > 0 and report["packets_read"] + report["kernel_drops"] == 5000
    assert report["capture_buffer_bytes"] == 2 << 20  # the kernel doubles what is asked for its bookkeeping
    assert m["soc_sensor_kernel_drops_total"] == report["kernel_drops"]
    assert report["events"]["soc.flow"] == report["packets_read"]


@pytest.mark.netns
def test_reader_process_keeps_reading_while_the_pipeline_is_stopped(netns: tuple[str, str], tmp_path: Path) -> None:
    """`--processes 2`: the decoding, detecting and storing process is stopped (SIGSTOP) while 5000 datagrams flood
    the same 1 MB queue; the reader process drains it meanwhile, so nothing is dropped and every flow is stored."""
    ns_a, ns_b = netns
    cap = _start(ns_b, tmp_path, "--buffer-size", "1", "--processes", "2")
    reader = _reader_of(cap.pid)
    sender = _sender(ns_a, 5000, 0)
    try:
        cap.send_signal(signal.SIGSTOP)
        sender.communicate("go\n", timeout=300)
        assert sender.returncode == 0
        assert Path(f"/proc/{reader}/stat").read_text().split()[2] != "T"  # the reader runs on
        cap.send_signal(signal.SIGCONT)
        _wait_for(ns_b, cap, lambda m: m["soc_sensor_packets_total"] == 5000, "5000 read")
        report, err = _stop(cap)
    finally:
        for proc in (cap, sender):
            if proc.poll() is None:
                proc.kill()
    assert report["kernel_drops"] == 0 and report["packets_read"] == 5000
    flows = [e for e in _stored(tmp_path / "live.db") if e["event.dataset"] == "soc.flow"]
    assert sorted(e["source.port"] for e in flows) == list(range(BASE, BASE + 5000))


@pytest.mark.netns
def test_reader_process_ends_with_its_sensor(netns: tuple[str, str], tmp_path: Path) -> None:
    """A sensor killed outright (SIGKILL: no flush possible) leaves no reader process behind."""
    _ns_a, ns_b = netns
    cap = _start(ns_b, tmp_path, "--processes", "2")
    reader = _reader_of(cap.pid)
    cap.kill()
    cap.wait(timeout=60)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{reader}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{reader}").exists(), "the reader process outlived its sensor"


@pytest.mark.parametrize("processes", ["1", "2"])
def test_no_such_interface_is_bad_input(tmp_path: Path, processes: str) -> None:
    proc = subprocess.run([SOC, "sensor", "live", "--iface", "nosuch0", "--processes", processes, "--no-ring",
                           "--store", f"sqlite:///{tmp_path / 'x.db'}", "--duration", "1"],
                          capture_output=True, text=True, env=os.environ | {"SOC_HOME": str(tmp_path)})
    assert proc.returncode == 2 and "--iface nosuch0: no such network interface" in proc.stderr


VLAN_SENDER = r"""
import sys
from scapy.all import IP, UDP, Dot1Q, Ether, Raw, sendp
sys.stdin.readline()
eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
ip = IP(src="10.42.0.1", dst="10.42.0.2")
sendp([eth / Dot1Q(vlan=42, prio=5) / ip / UDP(sport=30000 + i, dport=7777) / Raw(b"v") for i in range(20)],
      iface="veth-a", verbose=False, inter=0.01)
"""


@pytest.mark.netns
@pytest.mark.parametrize("processes", ["1", "2"])
def test_vlan_tags_survive_the_capture(netns: tuple[str, str], tmp_path: Path, processes: str) -> None:
    """The kernel hands a tagged frame over untagged, the tag in the packet's auxiliary data; both readers put it
    back, so the flows carry their VLAN."""
    ns_a, ns_b = netns
    cap = _start(ns_b, tmp_path, "--processes", processes, bpf="")
    sender = subprocess.Popen(["ip", "netns", "exec", ns_a, sys.executable, "-c", VLAN_SENDER], stdin=subprocess.PIPE,
                              text=True)
    try:
        sender.communicate("go\n", timeout=120)
        assert sender.returncode == 0
        _wait_for(ns_b, cap, lambda m: m["soc_sensor_packets_total"] >= 20, "20 frames read")
        report, _ = _stop(cap)
    finally:
        for proc in (cap, sender):
            if proc.poll() is None:
                proc.kill()
    flows = [e for e in _stored(tmp_path / "live.db") if e.get("destination.port") == 7777]
    assert sorted(e["source.port"] for e in flows) == list(range(30000, 30020))
    assert {e.get("network.vlan.id") for e in flows} == {"42"}


UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_units_verify(unit: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the shipped unit (its ExecStart pointed at this checkout's soc)."""
    analyze = require("systemd", "systemd-analyze", "checks the deploy/ systemd units")
    text = unit.read_text()
    assert "/usr/local/bin/soc " in text
    copy = tmp_path / unit.name
    copy.write_text(text.replace("/usr/local/bin/soc ", f"{SOC} "))
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True,
                          env=os.environ | {"SYSTEMD_LOG_LEVEL": "notice"})
    problems = [line for line in proc.stderr.splitlines() if unit.name.split("@")[0] in line or "Unknown" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_units_hold_the_service_contract() -> None:
    """The sensor runs as `soc` with only CAP_NET_RAW/CAP_NET_ADMIN, no new privileges, a read-only system but
    its state folder, restarted on failure, logging to journald; the log follower holds no capability."""
    sensor = (ROOT / "deploy" / "systemd" / "soc-sensor@.service").read_text()
    logs = (ROOT / "deploy" / "systemd" / "soc-logs@.service").read_text()
    for text in (sensor, logs):
        keys = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
        assert keys["User"] == "soc" and keys["NoNewPrivileges"] == "yes" and keys["ProtectSystem"] == "strict"
        assert keys["Restart"] == "on-failure" and keys["StandardError"] == "journal"
        assert keys["StateDirectory"] == "soc" and "SOC_HOME=/var/lib/soc" in keys["Environment"]
    caps = dict(re.findall(r"^(\w+)=(.*)$", sensor, re.M))
    assert caps["AmbientCapabilities"] == caps["CapabilityBoundingSet"] == "CAP_NET_RAW CAP_NET_ADMIN"
    assert re.search(r"^CapabilityBoundingSet=$", logs, re.M)


@pytest.mark.netns
def test_sensor_captures_with_only_the_units_capabilities(netns: tuple[str, str],
                                                         tmp_path: Path) -> None:
    """What the unit grants is enough: `soc sensor live` with only CAP_NET_RAW and CAP_NET_ADMIN (bounding and
    ambient sets, as the unit's CapabilityBoundingSet/AmbientCapabilities set them; no new privileges) captures and
    stores. (The uid stays 0 here: this machine's interpreter lives under /root, out of another user's reach; without
    CAP_DAC_OVERRIDE uid 0 only reaches what it owns.)"""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is missing")
    ns_a, ns_b = netns
    env = {"PATH": os.environ["PATH"], "SOC_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    cmd = ["ip", "netns", "exec", ns_b, setpriv, "--inh-caps=-all,+net_raw,+net_admin",
           "--ambient-caps=-all,+net_raw,+net_admin", "--bounding-set=-all,+net_raw,+net_admin", "--no-new-privs",
           SOC, "sensor", "live", "--iface", "veth-b", "--json", "--no-ring", "--bpf", BPF,
           "--store", f"sqlite:///{tmp_path / 'live.db'}", "--count", "10"]
    cap = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sender = _sender(ns_a, 10, 0.01)
    try:
        deadline = time.monotonic() + 90
        while "capturing on veth-b" not in (line := cap.stderr.readline()):
            assert line or cap.poll() is None, f"exited before capturing: {cap.stderr.read()}"
            assert time.monotonic() < deadline
        sender.communicate("go\n", timeout=120)
        out, err = cap.communicate(timeout=120)
    finally:
        for proc in (cap, sender):
            if proc.poll() is None:
                proc.kill()
    assert cap.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["packets_read"] == 10
    assert len(_stored(tmp_path / "live.db")) == 11  # 10 flows, 1 DNS query
