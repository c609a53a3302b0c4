"""Per-flow TCP application decoding: in-order byte streams per direction, protocol detection from the first
payload bytes (any port), and the DNS/HTTP/TLS/SSH parsers fed with those streams.

`TcpApp.feed()` returns `(direction, dataset, fields, ts)` tuples; direction 0 means the event reads
originator → responder.
"""

from __future__ import annotations

from struct import error as StructError

from .protocols import dns, http, ssh, tls

MAX_BUFFER = 1 << 20
MAX_HELD = 64  # out-of-order segments held per direction
MAX_PENDING = 64  # HTTP requests waiting for their responses
Out = list[tuple[int, str, dict, float]]


class TcpApp:
    """Application state of one TCP flow."""

    __slots__ = ("proto", "bufs", "next_seq", "skip", "mode", "pending", "tls_readers", "client_hello", "banners",
                 "done", "gaps", "held", "handler")

    def __init__(self, isn: list[int | None]) -> None:
        self.proto: str | None = None
        self.bufs = [bytearray(), bytearray()]
        self.next_seq: list[int | None] = [None if s is None else (s + 1) & 0xFFFFFFFF for s in isn]
        self.skip = [0, 0]                # HTTP body bytes still to pass over
        self.mode = ["head", "head"]      # HTTP: head | chunked | off
        self.pending: list[tuple[dict, float]] = []   # HTTP requests waiting for their response
        self.tls_readers: list[tls.HandshakeReader] | None = None
        self.client_hello: tuple[dict, float, int] | None = None
        self.banners: list[str | None] = [None, None]
        self.done = False
        self.gaps = 0
        self.held: list[dict[int, bytes]] = [{}, {}]

    def feed(self, direction: int, seq: int, payload: bytes, ts: float, sport: int, dport: int) -> Out:
        """Add one segment's payload: in-order data is parsed, retransmitted bytes are trimmed, segments ahead of a
        hole are held (up to MAX_HELD) until it fills, else the stream restarts after the hole."""
        nxt = self.next_seq[direction]
        if nxt is not None:
            ahead = (seq - nxt) & 0xFFFFFFFF
            if ahead >= 0x80000000:  # starts before what we have: retransmission or overlap
                behind = 0x100000000 - ahead
                if behind >= len(payload):
                    return []
                payload, seq = payload[behind:], nxt
            elif ahead:
                held = self.held[direction]
                if len(held) < MAX_HELD:
                    held.setdefault(seq, payload)
                    return []
                self.gaps += 1  # too much missing: restart the stream after the hole
                held.clear()
                self.bufs[direction].clear()
                self.skip[direction] = 0
                if self.proto == "http":
                    self.mode[direction] = "head"
        out = self._deliver(direction, payload, ts, sport, dport)
        nxt = self.next_seq[direction] = (seq + len(payload)) & 0xFFFFFFFF
        held = self.held[direction]
        while held and not self.done:
            more = held.pop(nxt, None)
            if more is None:
                break
            out += self._deliver(direction, more, ts, sport, dport)
            nxt = self.next_seq[direction] = (nxt + len(more)) & 0xFFFFFFFF
        return out

    def _deliver(self, direction: int, payload: bytes, ts: float, sport: int, dport: int) -> Out:
        if self.done:
            return []
        if self.proto is None:
            self.proto = _detect(payload, sport, dport)
            if self.proto is None:
                self.done = True
                return []
            if self.proto == "tls":
                self.tls_readers = [tls.HandshakeReader(), tls.HandshakeReader()]
            self.handler = getattr(self, "_" + self.proto)
        try:
            return self.handler(direction, payload, ts)
        except (ValueError, IndexError, UnicodeDecodeError, StructError):
            if self.proto == "http":  # one bad message ends parsing of that direction only
                self.mode[direction] = "off"
                self.done = self.mode[0] == self.mode[1] == "off"
            else:
                self.done = True
            return []

    # --- protocols ---------------------------------------------------------------------------------------
    def _dns(self, direction: int, payload: bytes, ts: float) -> Out:
        buf = self.bufs[direction]
        buf += payload
        out: Out = []
        while len(buf) >= 2:
            mlen = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + mlen:
                break
            out.append((direction, "dns", dns.parse(bytes(buf[2:2 + mlen])), ts))
            del buf[:2 + mlen]
        if len(buf) > MAX_BUFFER:
            raise ValueError("DNS message too long")
        return out

    def _ssh(self, direction: int, payload: bytes, ts: float) -> Out:
        buf = self.bufs[direction]
        buf += payload
        line = ssh.banner(bytes(buf))
        if line is None:
            return []
        if not line.startswith("SSH-"):
            raise ValueError("not an SSH identification line")
        self.banners[direction] = line
        buf.clear()
        if self.banners[0] and self.banners[1]:
            self.done = True
            return [(0, "ssh", ssh.fields(*self.banners), ts)]
        return []

    def _tls(self, direction: int, payload: bytes, ts: float) -> Out:
        out: Out = []
        for mtype, body in self.tls_readers[direction].feed(payload):
            if mtype == 1:
                if self.client_hello is not None:
                    out.append(self._tls_event(None, ts))
                self.client_hello = (tls.client_hello(body), ts, direction)
            elif mtype == 2:
                out.append(self._tls_event(tls.server_hello(body), ts, direction))
                self.tls_readers[direction].done = True  # certificates etc. are not needed
        if all(r.done for r in self.tls_readers):
            self.done = True
        return out

    def _tls_event(self, server: dict | None, ts: float, server_dir: int = 1) -> tuple[int, str, dict, float]:
        fields: dict = {}
        direction = 1 - server_dir
        if self.client_hello is not None:
            fields, ts, direction = dict(self.client_hello[0]), self.client_hello[1], self.client_hello[2]
            self.client_hello = None
        if server:
            fields.update(server)
            fields["tls.established"] = True
        return direction, "tls", fields, ts

    def _http(self, direction: int, payload: bytes, ts: float) -> Out:
        if self.mode[direction] == "off":
            return []
        skip = self.skip[direction]
        if skip:
            if skip >= len(payload):
                self.skip[direction] = skip - len(payload)
                return []
            payload = payload[skip:]
            self.skip[direction] = 0
        buf = self.bufs[direction]
        buf += payload
        out: Out = []
        while buf:
            if self.mode[direction] == "chunked":
                used = http.skip_chunked(bytes(buf))
                if used is None:
                    if len(buf) > MAX_BUFFER:
                        raise ValueError("chunked body too long to follow")
                    break
                del buf[:used]
                self.mode[direction] = "head"
                continue
            head = bytes(buf[:8])
            if head.startswith(b"HTTP/"):
                parsed = http.parse_response(bytes(buf))
                if parsed is None:
                    break
                fields, used, body = parsed
                req, rts = self.pending.pop(0) if self.pending else ({}, ts)
                if req.get("http.request.method") == "HEAD":
                    body = 0
                req.update(fields)
                out.append((1 - direction, "http", req, rts))
            elif http.looks_like_request(bytes(buf[:32])):
                parsed = http.parse_request(bytes(buf))
                if parsed is None:
                    break
                fields, used, body = parsed
                if len(self.pending) >= MAX_PENDING:  # a peer that never answers: report the oldest unanswered
                    old_fields, old_ts = self.pending.pop(0)
                    out.append((direction, "http", old_fields, old_ts))
                self.pending.append((fields, ts))
            else:  # not HTTP (or a body we could not delimit): stop following this direction
                self.mode[direction] = "off"
                buf.clear()
                break
            del buf[:used]
            if body == http.CHUNKED:
                self.mode[direction] = "chunked"
            elif body == http.UNTIL_CLOSE:
                self.mode[direction] = "off"
                buf.clear()
                break
            elif body:
                if body >= len(buf):
                    self.skip[direction] = body - len(buf)
                    buf.clear()
                else:
                    del buf[:body]
        return out

    def finish(self) -> Out:
        """Events still held at the end of the flow (requests without response, a lone ClientHello, one banner)."""
        self.gaps += sum(1 for held in self.held if held)  # holes that never filled
        out: Out = []
        if self.proto == "http":
            out = [(0, "http", fields, ts) for fields, ts in self.pending]
            self.pending = []
        elif self.proto == "tls" and self.client_hello is not None:
            out = [self._tls_event(None, 0.0)]
        elif self.proto == "ssh" and not self.done and any(self.banners):
            out = [(0, "ssh", ssh.fields(*self.banners), 0.0)]
        return out


def _detect(payload: bytes, sport: int, dport: int) -> str | None:
    if tls.looks_like_tls(payload):
        return "tls"
    if payload.startswith(b"SSH-"):
        return "ssh"
    if http.is_http(payload, sport, dport):
        return "http"
    if sport == 53 or dport == 53:
        return "dns"
    return None
