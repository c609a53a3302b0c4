"""Crafted traffic for sensor tests: TCP sessions built with scapy, written to a pcap, read by soc's sensor and by
tshark (the independent view). tshark is found on PATH or installed with apt-get when running as root; when it
cannot be had, CI fails loudly and a user's machine skips with the reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from sensors.capture import read_file
from sensors.engine import Sensor
from tests.debian import require

CLIENT, SERVER = "192.0.2.10", "198.51.100.20"
T0 = 1_700_000_000.0
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")
# one segment of a session: (direction 0 = client → server | 1, payload, optional stream offset of its first byte)
Segment = tuple[int, bytes] | tuple[int, bytes, int]


def tshark() -> str:
    """Path of tshark; fails in CI and skips elsewhere (loudly) when it is absent and cannot be installed."""
    return require("tshark", why="crafted traffic was not checked against tshark")


def tshark_rows(pcap: Path, display_filter: str, fields: Sequence[str], *options: str) -> list[dict[str, list[str]]]:
    """tshark's two-pass dissection of pcap: for each packet matching the filter, {field: [values]}."""
    cmd = [tshark(), "-n", "-2", "-r", str(pcap), "-Y", display_filter, "-T", "json", *options]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [p["_source"]["layers"] for p in json.loads(proc.stdout or "[]")]


def tcp_session(segments: Sequence[Segment], sport: int = 40000, dport: int = 80, syn_data: bytes = b"",
                isn: tuple[int, int] = (1000, 5000), flags: dict[int, str] | None = None,
                urgent: dict[int, int] | None = None) -> list[Packet]:
    """A whole TCP session: handshake (the client's SYN carries `syn_data` with a TCP Fast Open cookie when
    given), the segments in order (a segment with an explicit stream offset is a retransmission or out of order),
    acknowledgements, FIN both ways. `flags`/`urgent` give segment i extra flags or an urgent pointer."""
    ends = [(CLIENT, SERVER, sport, dport), (SERVER, CLIENT, dport, sport)]
    nxt = [len(syn_data), 0]  # stream offsets (0 = the byte after the SYN)
    ts = [T0]

    def pkt(d: int, tcp_flags: str, seq: int, payload: bytes = b"", **kw: object) -> Packet:
        src, dst, sp, dp = ends[d]
        ack = (isn[1 - d] + 1 + nxt[1 - d]) & 0xFFFFFFFF
        p = Ether(src=MACS[d], dst=MACS[1 - d]) / IP(src=src, dst=dst) / TCP(
            sport=sp, dport=dp, flags=tcp_flags, seq=seq & 0xFFFFFFFF, ack=ack, window=65535, **kw)
        if payload:
            p = p / Raw(payload)
        ts[0] += 0.001
        p.time = ts[0]
        return p

    syn_options = [("MSS", 1460)] + ([("TFO", b"\x11\x22\x33\x44\x55\x66\x77\x88")] if syn_data else [])
    out = [pkt(0, "S", isn[0], syn_data, options=syn_options)]
    out[0][TCP].ack = 0
    out.append(pkt(1, "SA", isn[1]))
    out.append(pkt(0, "A", isn[0] + 1 + nxt[0]))
    for i, seg in enumerate(segments):
        d, data = seg[0], seg[1]
        off = seg[2] if len(seg) > 2 else nxt[d]
        extra = (flags or {}).get(i, "")
        kw = {"urgptr": urgent[i]} if urgent and i in urgent else {}
        out.append(pkt(d, "PA" + extra, isn[d] + 1 + off, data, **kw))
        nxt[d] = max(nxt[d], off + len(data))
        out.append(pkt(1 - d, "A", isn[1 - d] + 1 + nxt[1 - d]))
    out.append(pkt(0, "FA", isn[0] + 1 + nxt[0]))
    nxt[0] += 1
    out.append(pkt(1, "FA", isn[1] + 1 + nxt[1]))
    nxt[1] += 1
    out.append(pkt(0, "A", isn[0] + 1 + nxt[0]))
    return out


def udp_packets(payloads: Sequence[tuple[int, bytes]], sport: int = 40000, dport: int = 53) -> list[Packet]:
    """UDP datagrams between the client and the server (direction, payload)."""
    out = []
    for i, (d, data) in enumerate(payloads):
        src, dst, sp, dp = (CLIENT, SERVER, sport, dport) if d == 0 else (SERVER, CLIENT, dport, sport)
        p = Ether(src=MACS[d], dst=MACS[1 - d]) / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / Raw(data)
        p.time = T0 + i * 0.001
        out.append(p)
    return out


def write(tmp_path: Path, packets: Sequence[Packet], name: str = "crafted.pcap") -> Path:
    """The packets as a pcap file."""
    path = tmp_path / name
    wrpcap(str(path), list(packets))
    return path


def sensor_events(pcap: Path, dataset: str | None = None) -> tuple[list[dict], dict]:
    """soc's events (of one dataset, e.g. "soc.http") and counters for pcap."""
    sensor = Sensor(sensor_name="test", source=str(pcap))
    events = list(sensor.run(read_file(str(pcap))))
    if dataset:
        events = [e for e in events if e["event.dataset"] == dataset]
    return events, sensor.stats()


def client_hello(sni: str, ciphers: Sequence[int] = (0x1301, 0xC02F, 0x002F)) -> bytes:
    """A TLS 1.2 record holding a ClientHello with SNI and supported groups (scapy's TLS layer)."""
    from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName, TLS_Ext_SupportedGroups
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS

    return bytes(TLS(msg=[TLSClientHello(ciphers=list(ciphers), ext=[
        TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())]),
        TLS_Ext_SupportedGroups(groups=[29, 23])])]))


def server_hello(cipher: int = 0xC02F) -> bytes:
    """A TLS record holding ServerHello and ServerHelloDone: two handshake messages in one record."""
    from scapy.layers.tls.handshake import TLSServerHello, TLSServerHelloDone
    from scapy.layers.tls.record import TLS

    return bytes(TLS(msg=[TLSServerHello(cipher=cipher), TLSServerHelloDone()]))


TLS_FIELDS = ("tls.handshake.type", "tls.handshake.extensions_server_name", "tls.handshake.ja3",
              "tls.handshake.ja3s", "tls.record.version", "tls.handshake.version")


def tshark_tls(pcap: Path, *options: str) -> tuple[list[tuple], list[str]]:
    """tshark's ClientHellos as (SNI, JA3) and ServerHellos' JA3S, in capture order."""
    hellos, ja3s = [], []
    for row in tshark_rows(pcap, "tls.handshake.type == 1 || tls.handshake.type == 2", TLS_FIELDS, *options):
        if "1" in row.get("tls.handshake.type", []):
            hellos.append((row.get("tls.handshake.extensions_server_name", [None])[0], row["tls.handshake.ja3"][0]))
        if "2" in row.get("tls.handshake.type", []):
            ja3s.append(row["tls.handshake.ja3s"][0])
    return hellos, ja3s


def soc_tls(events: list[dict]) -> tuple[list[tuple], list[str]]:
    """soc's TLS events in the shape of `tshark_tls`."""
    tls = [e for e in events if e["event.dataset"] == "soc.tls"]
    return ([(e.get("tls.client.server_name"), e["tls.client.ja3"]) for e in tls if "tls.client.ja3" in e],
            [e["tls.server.ja3s"] for e in tls if "tls.server.ja3s" in e])


def tshark_http(pcap: Path, *options: str) -> tuple[list[tuple], list[str]]:
    """tshark's HTTP requests (method, URI, Host) and response status codes, in capture order."""
    reqs, codes = [], []
    fields = ("http.request.method", "http.request.uri", "http.host", "http.response.code")
    for row in tshark_rows(pcap, "http.request || http.response", fields, *options):
        for i, method in enumerate(row.get("http.request.method", [])):
            reqs.append((method, row["http.request.uri"][i], (row.get("http.host") or [None])[i]))
        codes += row.get("http.response.code", [])
    return reqs, codes


def soc_http(events: list[dict]) -> tuple[list[tuple], list[str]]:
    """soc's HTTP events in the shape of `tshark_http`."""
    http = [e for e in events if e["event.dataset"] == "soc.http"]
    return ([(e["http.request.method"], e["url.original"], e.get("soc.http.host")) for e in http
             if "http.request.method" in e],
            [str(e["http.response.status_code"]) for e in http if "http.response.status_code" in e])
