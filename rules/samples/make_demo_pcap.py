"""Craft `demo-ministry.pcap`: a small government backbone with normal traffic and a few attacks (scapy).

    python rules/samples/make_demo_pcap.py [OUT]

Addressing (matches rules/policy/ example policy where zones coincide):
  10.10.0.0/16 Ministry of Finance, 10.20.0.0/16 Ministry of Interior, 10.1.0.0/16 central data center
  (10.1.0.53 resolver, 10.1.0.80 HR records, secret), 172.16.10.0/24 citizen-portal DMZ, everything else internet.
Attacks: a port scan of the portal from the internet, SSH brute force on a data-center host, DNS tunnelling, cleartext
HTTP Basic credentials to the secret HR system, a large upload of HR data to the internet, DNS to an outside resolver,
and an ICMP tunnel. Deterministic: the same file every run.
"""

from __future__ import annotations

import sys
from base64 import b32encode, b64encode
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter

T0 = 1_732_180_000.0  # 2024-11-21T09:06:40Z
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


class Capture:
    """Accumulates packets with increasing timestamps."""

    def __init__(self) -> None:
        self.packets: list = []
        self.t = T0

    def add(self, pkt, gap: float = 0.001) -> None:
        self.t += gap
        pkt = Ether(src=MAC_A, dst=MAC_B) / pkt
        pkt.time = self.t
        self.packets.append(pkt)

    def tcp_session(self, src, sport, dst, dport, request: bytes = b"", response: bytes = b"", gap=0.001) -> None:
        """A full TCP exchange: handshake, one request, one response, FIN both ways."""
        c, s = 1000, 5000
        self.add(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=c), gap)
        self.add(IP(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="SA", seq=s, ack=c + 1))
        self.add(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="A", seq=c + 1, ack=s + 1))
        c, s = c + 1, s + 1
        if request:
            self.add(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA", seq=c, ack=s) / Raw(request))
            c += len(request)
        if response:
            self.add(IP(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="PA", seq=s, ack=c) / Raw(response))
            s += len(response)
        self.add(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="FA", seq=c, ack=s))
        self.add(IP(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="FA", seq=s, ack=c + 1))
        self.add(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="A", seq=c + 1, ack=s + 1))

    def dns(self, src, resolver, name: str, answer: str = "192.0.2.1", qtype: str = "A", sport: int = 40000,
            gap: float = 0.001) -> None:
        q = DNS(id=sport & 0xFFFF, rd=1, qd=DNSQR(qname=name, qtype=qtype))
        self.add(IP(src=src, dst=resolver) / UDP(sport=sport, dport=53) / q, gap)
        rr = DNSRR(rrname=name, type=qtype, rdata=answer if qtype != "TXT" else [answer], ttl=60)
        answer_pkt = DNS(id=q.id, qr=1, rd=1, ra=1, qd=q.qd, an=rr)
        self.add(IP(src=resolver, dst=src) / UDP(sport=53, dport=sport) / answer_pkt)


def client_hello(sni: str) -> bytes:
    """A minimal TLS 1.2 ClientHello record carrying SNI (the sensor's TLS decoder reads it)."""
    name = sni.encode()
    sni_ext = b"\x00\x00" + (len(name) + 5).to_bytes(2, "big") + (len(name) + 3).to_bytes(2, "big") + b"\x00" \
        + len(name).to_bytes(2, "big") + name
    ciphers = b"\xc0\x2f\xc0\x30\x00\x9c"
    body = b"\x03\x03" + bytes(32) + b"\x00" + len(ciphers).to_bytes(2, "big") + ciphers + b"\x01\x00" \
        + len(sni_ext).to_bytes(2, "big") + sni_ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def build() -> list:
    cap = Capture()
    # Normal business: DNS on the national resolver, HTTPS to the citizen portal, finance <-> data center.
    for i in range(20):
        cap.dns(f"10.10.1.{10 + i}", "10.1.0.53", f"portal{i % 3}.gov.example", sport=41000 + i, gap=0.5)
        cap.tcp_session(f"10.10.1.{10 + i}", 50000 + i, "172.16.10.10", 443, client_hello("portal.gov.example"),
                        b"\x16\x03\x03\x00\x04\x0e\x00\x00\x00", gap=0.3)
        cap.tcp_session(f"10.20.2.{20 + i}", 51000 + i, "10.1.0.25", 443, client_hello("records.dc.gov.example"),
                        b"\x16\x03\x03\x00\x04\x0e\x00\x00\x00", gap=0.3)
    # 1. Port scan of the portal from the internet: SYNs to 120 ports, RST from closed ones.
    for port in range(1, 121):
        cap.add(IP(src="203.0.113.66", dst="172.16.10.10") / TCP(sport=61000, dport=port, flags="S", seq=7), 0.01)
        if port not in (80, 443):
            cap.add(IP(src="172.16.10.10", dst="203.0.113.66") / TCP(sport=port, dport=61000, flags="RA", ack=8))
    # 2. SSH brute force on a data-center host: 30 short sessions, banner exchange, then close.
    for i in range(30):
        cap.tcp_session("203.0.113.77", 40000 + i, "10.1.0.22", 22, b"SSH-2.0-libssh_0.9.6\r\n",
                        b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n", gap=0.4)
    # 3. DNS tunnelling from a finance workstation: long base32 labels under one domain.
    secret = b"payroll-2024;iban=XX00TEST0000;amount=125000;" * 4
    for i in range(40):
        chunk = b32encode(secret[i % 50:i % 50 + 35]).decode().strip("=").lower()
        cap.dns("10.10.5.23", "10.1.0.53", f"{chunk}.{i}.t.exfil-tunnel.example", "TXT-ACK", "TXT", 42000 + i, 0.2)
    # 4. Cleartext HTTP with Basic credentials to the secret HR system.
    auth = b64encode(b"hr-admin:Spring2024!").decode()
    for i in range(3):
        req = (f"GET /hr/salaries?page={i} HTTP/1.1\r\nHost: hr.dc.gov.example\r\nAuthorization: Basic {auth}\r\n"
               "User-Agent: curl/8.5.0\r\n\r\n").encode()
        resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: 20\r\n\r\nname,salary\r\nx,1\r\n"
        cap.tcp_session("10.20.3.4", 52000 + i, "10.1.0.80", 80, req, resp, gap=1.0)
    # 5. Write-down: the HR server uploads 60 kB to an internet host.
    cap.tcp_session("10.1.0.80", 53000, "198.51.100.23", 443, client_hello("files.drop-box.example") + bytes(1400),
                    b"\x16\x03\x03\x00\x04\x0e\x00\x00\x00", gap=2.0)
    for k in range(40):
        cap.add(IP(src="10.1.0.80", dst="198.51.100.23") / TCP(sport=53001, dport=443, flags="PA", seq=1 + 1400 * k)
                / Raw(bytes(1400)), 0.01)
    # 6. DNS to an outside resolver, bypassing the national one.
    for i in range(5):
        cap.dns("10.10.7.7", "8.8.8.8", f"mail{i}.example.org", sport=43000 + i, gap=0.3)
    # 7. ICMP tunnel: echo requests with 1000-byte payloads.
    for i in range(12):
        cap.add(IP(src="10.20.9.9", dst="198.51.100.99") / ICMP(type=8, id=77, seq=i) / Raw(bytes([i]) * 1000), 0.5)
        cap.add(IP(src="198.51.100.99", dst="10.20.9.9") / ICMP(type=0, id=77, seq=i) / Raw(bytes([i]) * 1000))
    return cap.packets


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("demo-ministry.pcap")
    with PcapWriter(str(out), linktype=1, sync=False) as w:
        for p in build():
            w.write(p)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
