"""Link types the corpus lacks (SLL, SLL2, raw IPv4/IPv6, BSD loopback, pcapng with two interfaces, IPv6 with
extension headers, QinQ), crafted with scapy and written with scapy's writers, then read by the sensor."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Raw
from scapy.utils import PcapWriter

from sensors.capture import read_file
from sensors.engine import Sensor

HTTP = b"GET /x HTTP/1.1\r\nHost: lt.example\r\n\r\n"


def _session(l3) -> list:
    return [l3 / TCP(sport=4321, dport=80, flags="S", seq=10),
            l3 / TCP(sport=4321, dport=80, flags="PA", seq=11) / Raw(HTTP)]


def _events(path: Path) -> tuple[list[dict], dict]:
    sensor = Sensor(sensor_name="t")
    events = list(sensor.run(read_file(str(path))))
    return events, sensor.stats()


V4 = IP(src="192.0.2.1", dst="198.51.100.2")
V6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
CASES = {
    "sll": (113, lambda l3: CookedLinux(proto=0x0800 if l3.version == 4 else 0x86DD) / l3),
    "sll2": (276, lambda l3: CookedLinuxV2(proto=0x0800 if l3.version == 4 else 0x86DD) / l3),
    "raw": (101, lambda l3: l3),
    "null": (0, lambda l3: Loopback(type=2 if l3.version == 4 else 24) / l3),
    "qinq": (1, lambda l3: Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=7) / l3),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("l3", [V4, V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()], ids=["ipv4", "ipv6-ext"])
def test_link_type(tmp_path: Path, name: str, l3) -> None:
    linktype, frame = CASES[name]
    path = tmp_path / f"{name}.pcap"
    with PcapWriter(str(path), linktype=linktype) as w:
        for pkt in _session(l3):
            w.write(frame(pkt))
    events, stats = _events(path)
    assert stats["packets_decoded"] == 2 and stats["unknown_link_type"] == 0
    flow = next(e for e in events if e["event.dataset"] == "soc.flow")
    src = "192.0.2.1" if l3.version == 4 else "2001:db8::1"
    assert (flow["source.ip"], flow["source.port"], flow["destination.port"], flow["source.packets"]) == (
        src, 4321, 80, 2)
    assert flow["source.bytes"] == sum(len(frame(p)) for p in _session(l3))  # whole frames, link header included
    assert next(e for e in events if e["event.dataset"] == "soc.http")["url.domain"] == "lt.example"
    if name == "qinq":
        assert flow["soc.vlan.ids"] == ["100", "7"] and flow["network.vlan.id"] == "100"


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def test_pcapng_with_two_interfaces_and_link_types(tmp_path: Path) -> None:
    """scapy's PcapNgWriter writes one interface, so the blocks are laid out here (SHB, 2 IDB, 2 EPB, nanosecond
    timestamps on the second interface via if_tsresol)."""
    eth = bytes(Ether() / V4 / UDP(sport=5000, dport=53) / DNS(id=9, qd=DNSQR(qname="ng.example")))
    raw6 = bytes(V6 / UDP(sport=5001, dport=53) / DNS(id=10, qd=DNSQR(qname="ng6.example")))
    tsresol = struct.pack("<HHB", 9, 1, 9) + b"\x00" * 3 + b"\x00" * 4  # if_tsresol = 10^-9, opt_endofopt
    blocks = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
              _block(1, struct.pack("<HHI", 1, 0, 65535)),
              _block(1, struct.pack("<HHI", 101, 0, 65535) + tsresol),
              _block(6, struct.pack("<IIIII", 0, 0x5A0, 0x12345678, len(eth), len(eth)) + eth),
              _block(6, struct.pack("<IIIII", 1, 0x16E36B0, 0x12345678, len(raw6), len(raw6)) + raw6)]
    path = tmp_path / "two.pcapng"
    path.write_bytes(b"".join(blocks))
    records = list(read_file(str(path)))
    assert [r[3] for r in records] == [1, 101]
    assert records[0][0] == pytest.approx(((0x5A0 << 32) | 0x12345678) / 1e6)  # default µs resolution
    assert records[1][0] == pytest.approx(((0x16E36B0 << 32) | 0x12345678) / 1e9)  # if_tsresol 9
    events, stats = _events(path)
    assert stats["packets_read"] == 2 and stats["packets_decoded"] == 2
    assert sorted(e["dns.question.name"] for e in events if e["event.dataset"] == "soc.dns") == [
        "ng.example", "ng6.example"]


def test_unknown_link_type_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "wifi.pcap"
    with PcapWriter(str(path), linktype=105) as w:  # 802.11 frames: not decoded, counted
        w.write(Raw(b"\x08\x00" + b"\x00" * 40))
    events, stats = _events(path)
    assert events == [] and stats["unknown_link_type"] == 1 and stats["packets_read"] == 1
