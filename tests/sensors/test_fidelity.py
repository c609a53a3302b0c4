"""Sensor fidelity on crafted traffic (issue 17), each case held to tshark's dissection of the same packets:
TCP Fast Open, every DNS opcode, protocols that start late (SSLv2-compatible hello, STARTTLS-style upgrades),
urgent data, overlapping retransmissions, DNS over TCP framing, HTTP pipelining and 100 Continue, TLS records
split and packed."""

from __future__ import annotations

from pathlib import Path

from .crafted import (
    client_hello,
    sensor_events,
    server_hello,
    soc_http,
    soc_tls,
    tcp_session,
    tshark_http,
    tshark_tls,
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
