"""Crafted traffic for policy tests: scapy-built TCP sessions (TLS, SSH, HTTP, FTP, telnet) written to a pcap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.layers.tls.all import (
    TLS,
    ServerName,
    TLS_Ext_ServerName,
    TLS_Ext_SupportedVersion_CH,
    TLS_Ext_SupportedVersion_SH,
    TLSClientHello,
    TLSServerHello,
)
from scapy.utils import wrpcap

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC).timestamp()  # after EXC-2025-031 expired, before EXC-2026-007 does


def tls_hellos(version: str, sni: str | None) -> tuple[bytes, bytes]:
    """A ClientHello and the ServerHello choosing `version` ('1.0', '1.2' or '1.3')."""
    ext = [TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())])] if sni else []
    if version == "1.3":
        versions = TLS_Ext_SupportedVersion_CH(versions=[0x0304])
        ch = TLSClientHello(version=0x0303, ciphers=[0x1301], ext=[*ext, versions])
        sh = TLSServerHello(version=0x0303, cipher=0x1301, ext=[TLS_Ext_SupportedVersion_SH(version=0x0304)])
    else:
        wire = {"1.0": 0x0301, "1.2": 0x0303}[version]
        ch = TLSClientHello(version=wire, ciphers=[0xC02F, 0x002F], ext=ext or None)
        sh = TLSServerHello(version=wire, cipher=0x002F)
    return bytes(TLS(msg=[ch])), bytes(TLS(msg=[sh]))


def session(client: str, server: str, dport: int, start: float, talk: list[tuple[int, bytes]],
            sport: int = 40000) -> list:
    """A complete TCP conversation: handshake, `talk` (direction 0 = client->server, payload), FIN exchange."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    seq = [1000, 5000]
    t = start
    out = []

    def pkt(d: int, flags: str, payload: bytes = b"") -> None:
        nonlocal t
        src, dst = (client, server) if d == 0 else (server, client)
        sp, dp = (sport, dport) if d == 0 else (dport, sport)
        p = eth / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq[d], ack=seq[1 - d]) / payload
        p.time = t
        t += 0.001
        out.append(p)
        seq[d] += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)

    pkt(0, "S")
    pkt(1, "SA")
    pkt(0, "A")
    for d, payload in talk:
        pkt(d, "PA", payload)
    pkt(0, "FA")
    pkt(1, "FA")
    pkt(0, "A")
    return out


def tls_session(client: str, server: str, port: int, version: str, sni: str | None, start: float) -> list:
    ch, sh = tls_hellos(version, sni)
    return session(client, server, port, start, [(0, ch), (1, sh)])


def http_session(client: str, server: str, port: int, host: str, start: float) -> list:
    req = f"GET /records?id=7 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n".encode()
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    return session(client, server, port, start, [(0, req), (1, resp)])


def ssh_session(client: str, server: str, port: int, start: float) -> list:
    return session(client, server, port, start, [(1, b"SSH-2.0-OpenSSH_9.6\r\n"), (0, b"SSH-2.0-OpenSSH_9.6\r\n")])


def cleartext_session(client: str, server: str, port: int, banner: bytes, command: bytes, start: float) -> list:
    """FTP/telnet-like: a server banner and a client line the sensor does not decode."""
    return session(client, server, port, start, [(1, banner), (0, command)])


def write(path: Path, packets: list) -> Path:
    wrpcap(str(path), sorted(packets, key=lambda p: p.time))
    return path


def rejected(client: str, server: str, port: int, start: float, sport: int = 45000) -> list:
    """A SYN answered by RST: a scan probe, no data exchanged."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    syn = eth / IP(src=client, dst=server) / TCP(sport=sport, dport=port, flags="S", seq=7)
    rst = eth / IP(src=server, dst=client) / TCP(sport=port, dport=sport, flags="RA", seq=0, ack=8)
    syn.time, rst.time = start, start + 0.001
    return [syn, rst]


def dns_exchange(client: str, resolver: str, name: str, start: float, sport: int = 53535) -> list:
    """A UDP DNS query and its answer (the answer's source is the resolver)."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import UDP

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    q = eth / IP(src=client, dst=resolver) / UDP(sport=sport, dport=53) / DNS(id=9, rd=1, qd=DNSQR(qname=name))
    a = eth / IP(src=resolver, dst=client) / UDP(sport=53, dport=sport) / DNS(
        id=9, qr=1, aa=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="172.16.10.10"))
    q.time, a.time = start, start + 0.002
    return [q, a]
