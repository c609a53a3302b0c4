"""Protocol edge cases on a single TCP stream: pipelining, chunked bodies, HEAD, unanswered floods, DNS over TCP
split across segments, SSH banners on odd ports, non-protocols left alone."""

from __future__ import annotations

import struct

from scapy.layers.dns import DNS, DNSQR, DNSRR

from sensors.apps import MAX_PENDING, MAX_PROBES, TcpApp
from sensors.protocols import dns, http


def _feed(app: TcpApp, segments: list[tuple[int, bytes]], sport: int = 40000, dport: int = 80) -> list:
    seq = [1000, 5000]
    out = []
    for direction, data in segments:
        out += app.feed(direction, seq[direction], data, 1.0, sport if direction == 0 else dport,
                        dport if direction == 0 else sport)
        seq[direction] += len(data)
    return out + app.finish()


def test_pipelined_requests_chunked_and_head_responses() -> None:
    reqs = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 999\r\n\r\n"  # HEAD: no body despite the length
    last = b"HTTP/1.1 302 Found\r\nContent-Length: 3\r\n\r\nabc"
    data = chunked + head + last
    out = _feed(TcpApp([None, None]), [(0, reqs), (1, data[:20]), (1, data[20:61]), (1, data[61:])])
    assert [(f["url.original"], f["http.response.status_code"]) for _, _, f, _ in out] == [
        ("/a", 200), ("/b", 404), ("/c", 302)]


def test_unanswered_request_flood_is_bounded() -> None:
    app = TcpApp([None, None])
    out = _feed(app, [(0, b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i) for i in range(MAX_PENDING + 6)])
    assert len(out) == MAX_PENDING + 6 and [f["url.original"] for _, _, f, _ in out][:2] == ["/0", "/1"]


def test_retransmission_and_out_of_order_segments() -> None:
    req = b"GET /ordered HTTP/1.1\r\nHost: h\r\nUser-Agent: x\r\n\r\n"
    app = TcpApp([999, None])  # SYN seen: stream starts at 1000
    out = app.feed(0, 1010, req[10:], 1.0, 40000, 80)  # arrives first, held
    out += app.feed(0, 1000, req[:10], 1.0, 40000, 80)
    out += app.feed(0, 1000, req[:10], 1.0, 40000, 80)  # retransmission: ignored
    out += app.finish()
    assert [f["url.original"] for _, _, f, _ in out] == ["/ordered"]


def test_dns_over_tcp_split_and_two_messages_in_one_segment() -> None:
    q = bytes(DNS(id=1, qd=DNSQR(qname="a.example")))
    r = bytes(DNS(id=1, qr=1, qd=DNSQR(qname="a.example"), an=DNSRR(rrname="a.example", rdata="192.0.2.9")))
    stream = struct.pack(">H", len(q)) + q
    both = struct.pack(">H", len(r)) + r + struct.pack(">H", len(r)) + r
    out = _feed(TcpApp([None, None]), [(0, stream[:5]), (0, stream[5:]), (1, both)], dport=53)
    assert [(d, f["dns.type"]) for d, _, f, _ in out] == [(0, "query"), (1, "answer"), (1, "answer")]
    assert out[1][2]["dns.resolved_ip"] == ["192.0.2.9"]


def test_ssh_banner_on_any_port_and_unknown_protocols_ignored() -> None:
    out = _feed(TcpApp([None, None]), [(1, b"SSH-2.0-OpenSSH_9.6\r\n"), (0, b"SSH-2.0-PuTTY_0.80\r\n")], dport=2222)
    assert out[0][2]["soc.ssh.client.software"] == "PuTTY_0.80"
    assert out[0][2]["soc.ssh.server.software"] == "OpenSSH_9.6"
    app = TcpApp([None, None])  # a protocol may start later (STARTTLS): an unknown one is searched MAX_PROBES times
    seq = [1000, 5000]
    for i in range(MAX_PROBES):
        assert not app.done
        line = b"331 ok\r\n" if i % 2 else b"USER anonymous\r\n"
        assert app.feed(i % 2, seq[i % 2], line, 1.0, 40000, 21) == []
        seq[i % 2] += len(line)
    assert app.done and app.finish() == []


def test_dns_name_compression_loop_is_rejected() -> None:
    msg = struct.pack(">HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    try:
        dns.parse(msg)
    except ValueError as exc:
        assert "loop" in str(exc)
    else:
        raise AssertionError("a self-pointing name must be rejected")


def test_http_host_forms() -> None:
    for host, domain, port in (("example.gov:8080", "example.gov", 8080), ("[2001:db8::1]:443", "[2001:db8::1]", 443),
                               ("2001:db8::1", "2001:db8::1", None), ("plain", "plain", None)):
        ev = http.parse_request(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")[0]
        assert (ev["url.domain"], ev.get("url.port")) == (domain, port)


def test_cipher_suite_table_is_scapys_registry() -> None:
    """The generated name table (imported without scapy's TLS stack) is scapy's registry, entry for entry."""
    from scapy.layers.tls.crypto.suites import _tls_cipher_suites

    from sensors.protocols.tls_suites import CIPHER_SUITES

    assert _tls_cipher_suites == CIPHER_SUITES
