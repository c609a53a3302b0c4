"""`--bpf` with the libpcap that the cypcap wheel ships (no system libpcap): file filtering per link type, the program
attached to a live packet socket in the kernel, and errors that name the expression and libpcap's reason."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw
from scapy.utils import PcapWriter
from typer.testing import CliRunner

from sensors.capture import BpfFilter, read_file
from soc_cli.main import app

runner = CliRunner()
A, B = "10.9.0.1", "10.9.0.2"
# (packet, matches "tcp port 80") — the truth is how the packets were built.
PACKETS = [
    (IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="S"), True),
    (IP(src=B, dst=A) / TCP(sport=80, dport=40000, flags="SA"), True),
    (IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET / HTTP/1.1\r\n\r\n"), True),
    (IP(src=A, dst=B) / TCP(sport=40001, dport=443, flags="S"), False),
    (IP(src=A, dst=B) / UDP(sport=5353, dport=80) / Raw(b"udp, not tcp"), False),
    (IP(src=A, dst=B) / ICMP(), False),
]


def _text(output: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(output.split())


def _write(path: Path, linktype: int) -> None:
    """A capture of PACKETS with the given link type: 1 Ethernet, 101 LINKTYPE_RAW (IP with no link header)."""
    with PcapWriter(str(path), linktype=linktype, sync=True) as out:
        for pkt, _ in PACKETS:
            out.write(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt if linktype == 1 else pkt))


@pytest.mark.parametrize("linktype", [1, 101], ids=["ethernet", "raw-ip"])
def test_bpf_keeps_exactly_the_matching_packets_per_link_type(tmp_path: Path, soc_env: Path, linktype: int) -> None:
    pcap = tmp_path / f"lt{linktype}.pcap"
    _write(pcap, linktype)
    kept = [rec[1] for rec in BpfFilter("tcp port 80").apply(read_file(str(pcap)))]
    expected = [bytes(p) for p, match in PACKETS if match]
    assert [k[-len(e):] for k, e in zip(kept, expected, strict=True)] == expected
    res = runner.invoke(app, ["sensor", "pcap", str(pcap), "--bpf", "tcp port 80", "--json",
                              "--store", f"sqlite:///{tmp_path / 'b.db'}"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["packets_read"] == len(expected)


def test_bad_bpf_names_the_expression_and_libpcap_reason(tmp_path: Path, soc_env: Path) -> None:
    pcap = tmp_path / "e.pcap"
    _write(pcap, 1)
    db = f"sqlite:///{tmp_path / 'e.db'}"
    for cmd in (["sensor", "pcap", str(pcap)], ["sensor", "live", "--iface", "lo", "--count", "1"]):
        res = runner.invoke(app, [*cmd, "--bpf", "tcp port", "--store", db])
        assert res.exit_code == 2, res.output
        assert "--bpf: BPF filter 'tcp port' (link type 1): can't parse filter expression: syntax error" in _text(
            res.stderr), res.stderr
    res = runner.invoke(app, ["sensor", "pcap", str(pcap), "--bpf", "tcp\x00port 22", "--store", db])
    assert res.exit_code == 2 and "NUL character at position 3" in _text(res.stderr), res.stderr


def test_bpf_that_does_not_fit_a_files_link_type_is_a_located_error(tmp_path: Path, soc_env: Path) -> None:
    eth, raw = tmp_path / "eth.pcap", tmp_path / "raw.pcap"
    _write(eth, 1)
    _write(raw, 101)
    res = runner.invoke(app, ["sensor", "pcap", str(eth), str(raw), "--bpf", "ether src 02:00:00:00:00:01", "--json",
                              "--store", f"sqlite:///{tmp_path / 'l.db'}"])
    assert res.exit_code == 1, res.output  # the Ethernet file is read, the raw-IP one cannot be filtered
    assert json.loads(res.stdout.splitlines()[0])["packets_read"] == len(PACKETS)
    assert f"{raw}: --bpf: BPF filter 'ether src 02:00:00:00:00:01' (link type 101): ethernet addresses" in _text(
        res.stderr)


def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("THIS TEST NEEDS ROOT and iproute2: it opens packet sockets / creates a network namespace")


@pytest.mark.netns
def test_attach_puts_the_program_in_the_kernel_and_drops_what_was_queued_before(soc_env: Path) -> None:
    _need_root()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flt = BpfFilter(f"udp and dst port {port}")
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    sniff.bind(("lo", 0))
    with sniff, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"before-attach", ("127.0.0.1", port))  # queued unfiltered: attach must drop it
        flt.attach(sniff, 1)
        tx.sendto(b"after-other-port", ("127.0.0.1", port + 1 if port < 65535 else port - 1))
        tx.sendto(b"after-match", ("127.0.0.1", port))
        sniff.settimeout(1.0)
        seen = []
        try:
            while True:
                seen.append(sniff.recv(65535))
        except TimeoutError:
            pass
    assert seen and all(frame.endswith(b"after-match") for frame in seen), seen  # lo shows it out and in


@pytest.mark.netns
def test_live_bpf_that_does_not_fit_the_interface_is_a_usage_error(tmp_path: Path, soc_env: Path) -> None:
    _need_root()
    ns = f"soc-t-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        for args in (["tuntap", "add", "dev", "tun0", "mode", "tun"], ["link", "set", "tun0", "up"]):
            subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)
        soc = str(Path(sys.executable).with_name("soc"))
        res = subprocess.run(["ip", "netns", "exec", ns, soc, "sensor", "live", "--iface", "tun0", "--count", "1",
                              "--bpf", "ether host 02:00:00:00:00:01", "--store", f"sqlite:///{tmp_path / 't.db'}"],
                             capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert res.returncode == 2, res.stderr  # a tun device carries raw IP (DLT_RAW 12): no Ethernet addresses
    assert "--bpf: tun0: BPF filter 'ether host 02:00:00:00:00:01' (link type 12): ethernet addresses" in _text(
        res.stderr)
