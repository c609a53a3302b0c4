"""Sensor fidelity on crafted traffic (issue 17), each case held to tshark's dissection of the same packets:
TCP Fast Open, every DNS opcode, protocols that start late (SSLv2-compatible hello, STARTTLS-style upgrades),
urgent data, overlapping retransmissions, DNS over TCP framing, HTTP pipelining and 100 Continue, TLS records
split and packed."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT

from .crafted import (
    client_hello,
    sensor_events,
    server_hello,
    soc_http,
    soc_tls,
    tcp_session,
    tshark,
    tshark_http,
    tshark_rows,
    tshark_tls,
    udp_packets,
    write,
)

REQ = b"GET /tfo HTTP/1.1\r\nHost: h.example\r\nUser-Agent: t\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _same(tmp_path: Path, packets: list, kind: str = "http", *options: str) -> tuple:
    """soc's and tshark's view of the packets; asserts they agree and returns soc's."""
    pcap = write(tmp_path, packets)
    events, stats = sensor_events(pcap)
    ours, theirs = (soc_http(events), tshark_http(pcap, *options)) if kind == "http" else (
        soc_tls(events), tshark_tls(pcap, *options))
    assert ours == theirs
    return ours, events, stats


# --- 1. TCP Fast Open: data on the SYN starts at ISN + 1 ----------------------------------------------------
def test_tfo_http_request_on_the_syn(tmp_path: Path) -> None:
    later = b"GET /second HTTP/1.1\r\nHost: h.example\r\n\r\n"
    (reqs, codes), _, stats = _same(tmp_path, tcp_session([(0, later), (1, RESP), (1, RESP)], syn_data=REQ))
    assert reqs == [("GET", "/tfo", "h.example"), ("GET", "/second", "h.example")] and codes == ["200", "200"]
    assert stats["tcp_stream_gaps"] == 0


def test_tfo_tls_client_hello_on_the_syn(tmp_path: Path) -> None:
    (hellos, ja3s), _, _ = _same(tmp_path, tcp_session([(1, server_hello())], syn_data=client_hello("tfo.example"),
                                                       dport=443), "tls")
    assert [sni for sni, _ in hellos] == ["tfo.example"] and len(ja3s) == 1


def test_tfo_syn_retransmitted_with_its_data(tmp_path: Path) -> None:
    """A retransmitted TFO SYN repeats the data: it is a retransmission, not a second request."""
    packets = tcp_session([(1, RESP)], syn_data=REQ)
    packets.insert(1, packets[0].copy())
    (reqs, _), _, _ = _same(tmp_path, packets)
    assert reqs == [("GET", "/tfo", "h.example")]


# --- 2. DNS: every opcode parsed, op_code and header_flags as ECS has them ----------------------------------
DNS_FIELDS = ("dns.resp.name", "dns.a")
ECS_BITS = ((0x0400, "AA"), (0x0200, "TC"), (0x0100, "RD"), (0x0080, "RA"), (0x0020, "AD"), (0x0010, "CD"))
OPCODE_NAMES = {"0": "QUERY", "4": "NOTIFY", "5": "UPDATE", "6": "DSO"}


def _find(tree: object, key: str) -> list:
    """Every value of key anywhere in a tshark JSON tree."""
    if isinstance(tree, dict):
        return [v for k, sub in tree.items() for v in ([sub] if k == key else _find(sub, key))]
    if isinstance(tree, list):
        return [v for sub in tree for v in _find(sub, key)]
    return []


def _tshark_dns(pcap: Path) -> list[tuple]:
    """Each DNS message tshark dissects: (opcode, query|answer, first name, ECS header flags from its header bits
    and the OPT record's DO bit)."""
    proc = subprocess.run([tshark(), "-n", "-2", "-r", str(pcap), "-Y", "dns", "-T", "json", "-J", "dns",
                           "--no-duplicate-keys"],
                          capture_output=True, text=True, timeout=120, check=True)
    out = []
    for packet in json.loads(proc.stdout):
        messages = packet["_source"]["layers"]["dns"]
        for msg in messages if isinstance(messages, list) else [messages]:
            tree, bits = msg["dns.flags_tree"], int(msg["dns.flags"], 16)
            flags = [name for bit, name in ECS_BITS if bits & bit]
            flags += ["DO"] if "1" in _find(msg, "dns.resp.z.do") else []
            out.append((OPCODE_NAMES.get(tree["dns.flags.opcode"], tree["dns.flags.opcode"]),
                        "answer" if tree["dns.flags.response"] == "1" else "query", _find(msg, "dns.qry.name")[0],
                        sorted(flags)))
    return out


def _soc_dns(events: list[dict]) -> list[tuple]:
    return [(e["dns.op_code"], e["dns.type"], e["dns.question.name"], sorted(e["dns.header_flags"]))
            for e in events if e["event.dataset"] == "soc.dns"]


UPDATE = DNS(id=7, opcode=5, rd=0, qd=DNSQR(qname="corp.example", qtype="SOA"), ns=[
    DNSRR(rrname="www.corp.example", type="A", ttl=300, rdata="203.0.113.66"),
    DNSRR(rrname="old.corp.example", type=255, rclass=255, ttl=0, rdlen=0, rdata=b"")])
DNS_MESSAGES = [UPDATE, DNS(id=7, qr=1, opcode=5, aa=1, rd=0, qd=DNSQR(qname="corp.example", qtype="SOA")),
                DNS(id=8, opcode=4, aa=1, rd=0, qd=DNSQR(qname="corp.example", qtype="SOA")),
                DNS(id=9, opcode=9, rd=1, cd=1, qd=DNSQR(qname="odd.example"), ar=DNSRROPT(z=0x8000)),
                DNS(id=10, opcode=6, rd=0, qd=DNSQR(qname="dso.example")),
                DNS(id=11, qr=1, ra=1, ad=1, qd=DNSQR(qname="a.example"),
                    an=DNSRR(rrname="a.example", rdata="192.0.2.1"))]


def test_dns_every_opcode_over_udp(tmp_path: Path) -> None:
    pcap = write(tmp_path, udp_packets([(int(bool(m.qr)), bytes(m)) for m in DNS_MESSAGES]))
    events, stats = sensor_events(pcap)
    assert _soc_dns(events) == _tshark_dns(pcap)
    assert [e["dns.op_code"] for e in events if e["event.dataset"] == "soc.dns"] == [
        "UPDATE", "UPDATE", "NOTIFY", "9", "DSO", "QUERY"] and stats["dns_malformed"] == 0
    update = next(e for e in events if e.get("soc.dns.updates"))
    rows = tshark_rows(pcap, "dns.count.updates > 0", DNS_FIELDS)[0]
    assert [u["name"] for u in update["soc.dns.updates"]] == rows["dns.resp.name"]
    assert [(u["type"], u["class"], u["data"]) for u in update["soc.dns.updates"]] == [
        ("A", "IN", rows["dns.a"][0]), ("ANY", "ANY", "")]  # class ANY: delete the RRset (RFC 2136 2.5.2)


def test_dns_over_tcp_several_messages_per_segment_and_one_across_segments(tmp_path: Path) -> None:
    framed = b"".join(struct.pack(">H", len(bytes(m))) + bytes(m) for m in DNS_MESSAGES)
    queries = b"".join(struct.pack(">H", len(bytes(m))) + bytes(m) for m in DNS_MESSAGES if not m.qr)
    answers = b"".join(struct.pack(">H", len(bytes(m))) + bytes(m) for m in DNS_MESSAGES if m.qr)
    assert len(framed) == len(queries) + len(answers)
    cut = len(queries) // 2 + 1  # mid-message, and the first segment holds a whole message before it
    pcap = write(tmp_path, tcp_session([(0, queries[:1]), (0, queries[1:cut]), (0, queries[cut:]), (1, answers)],
                                       dport=53))
    events, _ = sensor_events(pcap)
    theirs = _tshark_dns(pcap)
    assert len(theirs) == len(DNS_MESSAGES)
    assert sorted(_soc_dns(events)) == sorted(theirs)


# --- 3. protocols detected later in the flow: SSLv2-compatible hello, STARTTLS-style upgrades, CONNECT ---------
def test_tls_opened_with_an_sslv2_compatible_client_hello(tmp_path: Path) -> None:
    from scapy.layers.tls.handshake_sslv2 import SSLv2ClientHello
    from scapy.layers.tls.record_sslv2 import SSLv2

    hello = bytes(SSLv2(msg=[SSLv2ClientHello(version=0x0301, ciphers=[0x010080, 0x00002F, 0x000035],
                                              challenge=b"A" * 16)]))
    pcap = write(tmp_path, tcp_session([(0, hello), (1, server_hello(0x002F))], dport=443))
    events, _ = sensor_events(pcap, "soc.tls")
    rows = tshark_rows(pcap, "tls.handshake.type == 1 || tls.handshake.type == 2",
                       ("tls.handshake.type", "tls.handshake.version", "tls.handshake.cipherspec",
                        "tls.handshake.ja3s"))
    assert [r["tls.handshake.type"][0] for r in rows] == ["1", "2"] and len(events) == 1
    ev = events[0]
    assert ev["soc.tls.client.versions"] == ["1.0"] and rows[0]["tls.handshake.version"] == ["0x0301"]
    assert len(ev["tls.client.supported_ciphers"]) == len(rows[0]["tls.handshake.cipherspec"]) == 3
    assert ev["tls.client.supported_ciphers"][1:] == ["TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA"]
    assert ev["tls.server.ja3s"] == rows[1]["tls.handshake.ja3s"][0] and "tls.client.ja3" not in ev  # nor tshark's


LDAP_STARTTLS = (bytes.fromhex("301d02010177188016") + b"1.3.6.1.4.1.1466.20037",  # ExtendedRequest, StartTLS OID
                 bytes.fromhex("300c02010178070a010004000400"))                     # ExtendedResponse: success
UPGRADES = {  # port: the cleartext exchange before the ClientHello
    389: [(0, LDAP_STARTTLS[0]), (1, LDAP_STARTTLS[1])],
    5432: [(0, bytes.fromhex("0000000804d2162f")), (1, b"S")],  # PostgreSQL SSLRequest, accepted
    25: [(1, b"220 mx.example ESMTP\r\n"), (0, b"EHLO c.example\r\n"), (1, b"250-mx.example\r\n250 STARTTLS\r\n"),
         (0, b"STARTTLS\r\n"), (1, b"220 2.0.0 Ready to start TLS\r\n")],
    143: [(1, b"* OK IMAP4rev1 ready\r\n"), (0, b"a1 STARTTLS\r\n"), (1, b"a1 OK Begin TLS negotiation now\r\n")],
    110: [(1, b"+OK POP3 ready\r\n"), (0, b"STLS\r\n"), (1, b"+OK Begin TLS negotiation\r\n")],
    21: [(1, b"220 FTP ready\r\n"), (0, b"AUTH TLS\r\n"), (1, b"234 AUTH TLS successful\r\n")],
    3128: [(0, b"CONNECT tls.example:443 HTTP/1.1\r\nHost: tls.example:443\r\n\r\n"),
           (1, b"HTTP/1.1 200 Connection established\r\n\r\n")],
}


@pytest.mark.parametrize("port", sorted(UPGRADES))
def test_tls_after_an_upgrade_is_followed(tmp_path: Path, port: int) -> None:
    packets = tcp_session([*UPGRADES[port], (0, client_hello(f"up{port}.example")), (1, server_hello())], dport=port)
    (hellos, ja3s), events, _ = _same(tmp_path, packets, "tls")
    assert [sni for sni, _ in hellos] == [f"up{port}.example"] and len(ja3s) == 1
    if port == 3128:
        assert [(e["http.request.method"], e["http.response.status_code"]) for e in events
                if e["event.dataset"] == "soc.http"] == [("CONNECT", 200)]


# --- the same classes elsewhere: overlaps, urgent data, HTTP pipelining / 100 Continue, TLS record layout ----
GOOD = b"GET /good/path HTTP/1.1\r\nHost: h.example\r\n\r\n"
EVIL = b"GET /evil/path HTTP/1.1\r\nHost: h.example\r\n\r\n"
EMPTY_200 = (1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
OVERLAPS = {  # segments (direction, bytes, stream offset); whether retransmitted bytes differ from the first copy
    "retransmission differs": ([(0, GOOD[:20]), (0, EVIL[:20], 0), (0, GOOD[20:])], True),
    "retransmission equal": ([(0, GOOD[:20]), (0, GOOD[:20], 0), (0, GOOD[20:])], False),
    "held twice, differs": ([(0, GOOD[10:30], 10), (0, GOOD[10:20] + b"X" * 10, 10), (0, GOOD[:10], 0),
                             (0, GOOD[30:], 30)], True),
    "held twice, equal": ([(0, GOOD[10:], 10), (0, GOOD[10:], 10), (0, GOOD[:10], 0)], False),
    "held overlaps what a later segment delivered": ([(0, EVIL[3:], 3), (0, GOOD[:10], 0)], True),
    "held segment repackaged by the retransmission": ([(0, GOOD[20:30], 20), (0, GOOD[:40], 0), (0, GOOD[40:])],
                                                      False),
}


@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_overlapping_segments_first_copy_wins_and_conflicts_are_recorded(tmp_path: Path, case: str) -> None:
    segments, differs = OVERLAPS[case]
    pcap = write(tmp_path, tcp_session([*segments, EMPTY_200]))
    ooo = ("-o", "tcp.reassemble_out_of_order:TRUE")
    events, stats = sensor_events(pcap)
    assert soc_http(events) == tshark_http(pcap, *ooo) == ([("GET", "/good/path", "h.example")], ["200"])
    conflict = tshark_rows(pcap, "tcp.segment.overlap.conflict", ("frame.number",), *ooo)
    assert bool(conflict) is differs  # tshark's "conflicting data in segment overlap"
    assert bool(stats["tcp_overlap_different_data"]) is differs and stats["tcp_stream_gaps"] == 0
    flow = next(e for e in events if e["event.dataset"] == "soc.flow")
    assert ("soc.flow.overlap_different_data" in flow) is differs


def test_urgent_data_stays_in_the_stream(tmp_path: Path) -> None:
    """As tshark and Suricata's default (`stream.reassembly.urgent.policy: inline`), urgent bytes are stream bytes."""
    req = b"GET /urgent/path HTTP/1.1\r\nHost: h.example\r\n\r\n"
    packets = tcp_session([(0, req[:10]), (0, req[10:]), EMPTY_200], flags={1: "U"}, urgent={1: 3})
    (reqs, codes), _, _ = _same(tmp_path, packets)
    assert reqs == [("GET", "/urgent/path", "h.example")] and codes == ["200"]


def test_http_pipelining_and_100_continue(tmp_path: Path) -> None:
    """Responses answer requests in order (RFC 9112 9.3.2); an interim 100 Continue is not the final response."""
    body = b"x" * 20
    reqs = (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" + b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n" + body
            + b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n")
    resp = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            + b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            + b"HTTP/1.1 404 Not Found\r\nContent-Length: 99\r\n\r\n")  # HEAD: no body
    put = b"PUT /d HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 20\r\n\r\n"
    segments = [(0, reqs[:30]), (0, reqs[30:]), (1, resp[:7]), (1, resp[7:50]), (1, resp[50:]), (0, put),
                (1, b"HTTP/1.1 100 Continue\r\n\r\n"), (0, body), (1, b"HTTP/1.1 204 No Content\r\n\r\n")]
    pcap = write(tmp_path, tcp_session(segments))
    events, _ = sensor_events(pcap, "soc.http")
    reqs_t, codes_t = tshark_http(pcap)
    final = [c for c in codes_t if not c.startswith("1")]  # HTTP-INTERIM: 1xx are not an event's status
    assert codes_t.count("100") == 1 and len(final) == len(reqs_t) == 4
    assert [(e["http.request.method"], e["url.original"], e["http.response.status_code"]) for e in events] == [
        (m, u, int(c)) for (m, u, _), c in zip(reqs_t, final, strict=True)]


def _records(handshake: bytes, cuts: list[int]) -> bytes:
    """Handshake bytes spread over several TLS records, cut at the given offsets."""
    parts = [handshake[a:b] for a, b in zip([0, *cuts], [*cuts, len(handshake)], strict=True)]
    return b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in parts)


def test_tls_handshake_split_across_records_and_segments(tmp_path: Path) -> None:
    hello = client_hello("split.example")
    fragmented = _records(hello[5:], [3, 40])  # the ClientHello in three records, one cut inside its header
    sh = server_hello()  # ServerHello and ServerHelloDone in one record
    packets = tcp_session([(0, fragmented[:4]), (0, fragmented[4:50]), (0, fragmented[50:]), (1, sh[:7]), (1, sh[7:])],
                          dport=8443)
    (hellos, ja3s), _, _ = _same(tmp_path, packets, "tls", "-d", "tcp.port==8443,tls")
    assert [sni for sni, _ in hellos] == ["split.example"] and len(ja3s) == 1


def test_ja4_without_signature_algorithms_follows_the_foxio_spec(tmp_path: Path) -> None:
    """FoxIO JA4: with no signature_algorithms extension the extension hash input has no trailing `_` part."""
    from hashlib import sha256

    pcap = write(tmp_path, tcp_session([(0, client_hello("ja4.example")), (1, server_hello())], dport=443))
    events, _ = sensor_events(pcap, "soc.tls")
    hellos, _ = tshark_tls(pcap)
    assert [sni for sni, _ in hellos] == ["ja4.example"]  # tshark 4.0 has no JA4 field: the recipe is the truth
    ciphers = ",".join(sorted(f"{c:04x}" for c in (0x1301, 0xC02F, 0x002F)))
    extensions = "000a"  # supported_groups; SNI (0000) and ALPN are left out of the hash
    assert events[0]["tls.client.ja4"] == (f"t12d030200_{sha256(ciphers.encode()).hexdigest()[:12]}_"
                                           f"{sha256(extensions.encode()).hexdigest()[:12]}")
