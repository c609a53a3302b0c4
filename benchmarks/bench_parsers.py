#!/usr/bin/env python3
"""Parsers: soc's hand-written DNS and HTTP parsers (sensors/protocols) vs dnspython and httptools (Node's llhttp),
on every DNS message and HTTP head the sensor parses in the corpus captures, in one run.

For each message both parse the same bytes; the library's result is mapped to the same ECS fields and compared
with soc's (soc's are held to tshark's truth by tests/sensors/test_truth.py). Speed: CPU per message, and what
that difference is of the sensor's whole time on the same captures (the end-to-end cost of adopting the library).

    python benchmarks/bench_parsers.py [--repeat 5]        (pip install -e '.[bench]' for the two libraries)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.rdatatype  # noqa: E402
import httptools  # noqa: E402

from sensors.capture import read_file  # noqa: E402
from sensors.engine import Sensor  # noqa: E402
from sensors.protocols import dns as soc_dns  # noqa: E402
from sensors.protocols import http as soc_http  # noqa: E402

CORPUS = Path(os.environ.get("SOC_CORPUS") or ROOT.parent / "shared" / "data")
CLOCK = time.process_time


def collect() -> tuple[list[bytes], list[bytes], list[bytes], float]:
    """The DNS messages, HTTP request heads and response heads the sensor parses in the corpus, and the sensor's
    CPU time over those captures."""
    dns_in: list[bytes] = []
    req_in: list[bytes] = []
    resp_in: list[bytes] = []
    orig = soc_dns.parse, soc_http.parse_request, soc_http.parse_response

    def rec(store: list[bytes], f):  # noqa: ANN001, ANN202 - a recording wrapper, this benchmark only
        def wrapped(buf: bytes):  # noqa: ANN202
            store.append(bytes(buf))
            return f(buf)
        return wrapped

    soc_dns.parse = rec(dns_in, orig[0])
    soc_http.parse_request = rec(req_in, orig[1])
    soc_http.parse_response = rec(resp_in, orig[2])
    pcaps = sorted((CORPUS / "pcaps").glob("*.pcap*"))
    try:
        for p in pcaps:
            for _ in Sensor("bench", source=p.name).run(read_file(str(p))):
                pass
    finally:
        soc_dns.parse, soc_http.parse_request, soc_http.parse_response = orig
    t = CLOCK()
    for p in pcaps:
        for _ in Sensor("bench", source=p.name).run(read_file(str(p))):
            pass
    return dns_in, req_in, resp_in, CLOCK() - t


# --- dnspython mapped to soc's ECS fields ---------------------------------------------------------------------------

def dnspython_fields(buf: bytes) -> dict:
    """The core fields soc's DNS parser gives, from dnspython (question, type, rcode, answers, resolved IPs)."""
    m = dns.message.from_wire(buf, ignore_trailing=True, one_rr_per_rrset=True, continue_on_error=True)
    ev: dict = {"dns.id": str(m.id), "dns.type": "answer" if m.flags & 0x8000 else "query"}
    if m.question:
        q = m.question[0]
        ev["dns.question.name"] = q.name.to_text(omit_final_dot=True) if len(q.name) > 1 else ""
        ev["dns.question.type"] = soc_dns.TYPES.get(q.rdtype, str(q.rdtype))
    if m.flags & 0x8000:
        ev["dns.response_code"] = soc_dns.RCODES.get(m.rcode(), str(m.rcode()))
    resolved = []
    for rrset in m.answer:
        for rd in rrset:
            if rd.rdtype == dns.rdatatype.A:
                resolved.append(socket.inet_ntop(socket.AF_INET, rd.to_digestable()))
            elif rd.rdtype == dns.rdatatype.AAAA:
                resolved.append(socket.inet_ntop(socket.AF_INET6, rd.to_digestable()))
    if resolved:
        ev["dns.resolved_ip"] = resolved
    return ev


DNS_KEYS = ("dns.id", "dns.type", "dns.question.name", "dns.question.type", "dns.response_code", "dns.resolved_ip")


def soc_dns_fields(buf: bytes) -> dict:
    ev = soc_dns.parse(buf)
    return {k: ev[k] for k in DNS_KEYS if k in ev}


# --- httptools mapped to soc's ECS fields ---------------------------------------------------------------------------

# llhttp's most lenient reading (bare-LF line ends, as tshark and soc accept them); methods it does not know are
# refused whatever the settings
LENIENT = {"lenient_optional_cr_before_lf": True, "lenient_optional_lf_after_cr": True, "lenient_headers": True}


class _Head:
    """httptools callbacks collecting a message head."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.done = True


def httptools_request(buf: bytes) -> dict | None:
    """Method, URL, version, host, user agent and body length of a request head, from llhttp."""
    head = _Head()
    p = httptools.HttpRequestParser(head)
    p.set_dangerous_leniencies(**LENIENT)
    with contextlib.suppress(httptools.HttpParserUpgrade):
        p.feed_data(buf[:buf.find(b"\r\n\r\n") + 4] if b"\r\n\r\n" in buf else buf)
    if not head.done:
        return None
    ev: dict = {"http.request.method": p.get_method().decode("latin-1"), "url.original": head.url.decode("latin-1"),
                "http.version": p.get_http_version()}
    if "host" in head.headers:
        ev["soc.http.host"] = head.headers["host"]
    if "user-agent" in head.headers:
        ev["user_agent.original"] = head.headers["user-agent"]
    return ev


def httptools_response(buf: bytes) -> dict | None:
    head = _Head()
    p = httptools.HttpResponseParser(head)
    p.set_dangerous_leniencies(**LENIENT)
    with contextlib.suppress(httptools.HttpParserUpgrade):
        p.feed_data(buf[:buf.find(b"\r\n\r\n") + 4] if b"\r\n\r\n" in buf else buf)
    if not head.done:
        return None
    ev: dict = {"http.response.status_code": p.get_status_code()}
    if "content-type" in head.headers:
        ev["http.response.mime_type"] = head.headers["content-type"].partition(";")[0]
    return ev


REQ_KEYS = ("http.request.method", "url.original", "http.version", "soc.http.host", "user_agent.original")
RESP_KEYS = ("http.response.status_code", "http.response.mime_type")


def soc_request(buf: bytes) -> dict | None:
    r = soc_http.parse_request(buf)
    return None if r is None else {k: r[0][k] for k in REQ_KEYS if k in r[0]}


def soc_response(buf: bytes) -> dict | None:
    r = soc_http.parse_response(buf)
    return None if r is None else {k: r[0][k] for k in RESP_KEYS if k in r[0]}


def compare(name: str, inputs: list[bytes], ours, theirs, repeat: int) -> dict:  # noqa: ANN001
    """Agreement per message (equal fields; both refusing counts as agreement) and CPU per message."""
    agree, differ, examples = 0, Counter(), []
    for buf in inputs:
        try:
            a = ours(buf)
        except (ValueError, IndexError):
            a = "error"
        try:
            b = theirs(buf)
        except (dns.exception.DNSException, httptools.HttpParserError, ValueError, IndexError):
            b = "error"
        if a == b:
            agree += 1
        else:
            keys = ("refused",) if "error" in (a, b) else tuple(
                k for k in sorted(set(a or {}) | set(b or {})) if (a or {}).get(k) != (b or {}).get(k))
            differ[keys] += 1
            if len(examples) < 3:
                examples.append((buf[:80], a, b))
    times = {}
    for label, f in (("soc", ours), ("library", theirs)):
        best = float("inf")
        for _ in range(repeat):
            t = CLOCK()
            for buf in inputs:
                with contextlib.suppress(Exception):  # refusals are counted above; here only time
                    f(buf)
            best = min(best, CLOCK() - t)
        times[label] = best
    return {"name": name, "messages": len(inputs), "agree": agree, "differ": dict(differ), "examples": examples,
            **times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    dns_in, req_in, resp_in, sensor_cpu = collect()
    print(f"corpus {CORPUS / 'pcaps'}: sensor CPU {sensor_cpu:.2f} s; load average {os.getloadavg()[0]:.2f}; "
          f"dnspython {dns.version.version}, httptools {httptools.__version__}")
    rows = [compare("DNS (dnspython)", dns_in, soc_dns_fields, dnspython_fields, args.repeat),
            compare("HTTP requests (httptools)", req_in, soc_request, httptools_request, args.repeat),
            compare("HTTP responses (httptools)", resp_in, soc_response, httptools_response, args.repeat)]
    for r in rows:
        n = max(r["messages"], 1)
        delta = r["library"] - r["soc"]
        print(f"\n{r['name']}: {r['messages']} messages, {r['agree']} agree, differing fields {r['differ']}")
        print(f"  soc      {r['soc'] * 1e6 / n:7.1f} us/message")
        print(f"  library  {r['library'] * 1e6 / n:7.1f} us/message  ({r['library'] / max(r['soc'], 1e-9):.2f}x;"
              f" {delta * 1e3:+.1f} ms = {delta / sensor_cpu * 100:+.1f} % of the sensor's time on the corpus)")
        for buf, a, b in r["examples"]:
            print(f"    e.g. {buf!r}\n      soc     {a}\n      library {b}")


if __name__ == "__main__":
    main()
