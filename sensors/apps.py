"""Per-flow TCP application decoding: in-order byte streams per direction, protocol detection (any port) from
either direction's first bytes or, later in the flow, at a segment start (TLS after STARTTLS, LDAP StartTLS,
PostgreSQL's SSLRequest; HTTP CONNECT tunnels), and the DNS/HTTP/TLS/SSH parsers fed with those streams.
Retransmitted bytes that differ from the ones already delivered are counted (`conflicts`, Suricata's
`stream.reassembly_overlap_different_data`); the first copy is the one parsed.

`TcpApp.feed()` returns `(direction, dataset, fields, ts)` tuples; direction 0 means the event reads
originator → responder.
"""

from __future__ import annotations

from struct import error as StructError

from .protocols import dns, http, ssh, tls

MAX_BUFFER = 1 << 20
MAX_HELD = 64  # out-of-order segments held per direction
MAX_PENDING = 64  # HTTP requests waiting for their responses
MAX_PROBES = 32  # segment starts searched for a protocol before an unknown flow is given up
RECENT = 4  # delivered segments kept per direction to compare retransmitted bytes with
MASK, HALF = 0xFFFFFFFF, 0x80000000
Out = list[tuple[int, str, dict, float]]


class TcpApp:
    """Application state of one TCP flow."""

    __slots__ = ("proto", "bufs", "next_seq", "skip", "mode", "pending", "tls_readers", "client_hello", "banners",
                 "done", "gaps", "held", "handler", "first", "probes", "tls_wait", "recent", "conflicts")

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
        self.first = [True, True]         # no payload delivered yet in this direction
        self.probes = 0                   # later segment starts searched for a protocol
        self.tls_wait = [True, True]      # TLS: skip bytes until this direction's first record
        self.recent: list[list[tuple[int, bytes]]] = [[], []]  # (seq, payload) of the last delivered segments
        self.conflicts = 0                # retransmitted bytes that differ from the delivered ones

    def feed(self, direction: int, seq: int, payload: bytes, ts: float, sport: int, dport: int) -> Out:
        """Add one segment's payload: in-order data is parsed, retransmitted bytes are trimmed (and compared with
        the delivered ones), segments ahead of a hole are held (up to MAX_HELD) until it fills, else the stream
        restarts after the hole."""
        nxt = self.next_seq[direction]
        if nxt is not None:
            ahead = (seq - nxt) & MASK
            if ahead >= HALF:  # starts before what we have: retransmission or overlap
                behind = 0x100000000 - ahead
                self._compare(direction, seq, payload[:behind])
                if behind >= len(payload):
                    return []
                payload, seq = payload[behind:], nxt
            elif ahead:
                held = self.held[direction]
                old = held.get(seq)
                if old is not None:  # the same out-of-order segment again
                    n = min(len(old), len(payload))
                    if old[:n] != payload[:n]:
                        self.conflicts += 1
                    if len(payload) > len(old):
                        held[seq] = old + payload[len(old):]
                    return []
                if len(held) < MAX_HELD:
                    held[seq] = payload
                    return []
                self.gaps += 1  # too much missing: restart the stream after the hole
                held.clear()
                self.bufs[direction].clear()
                self.skip[direction] = 0
                if self.proto == "http":
                    self.mode[direction] = "head"
        out = self._deliver(direction, payload, ts, sport, dport)
        recent = self.recent[direction]  # kept to compare retransmissions with (inline: the hot path)
        recent.append((seq, payload))
        if len(recent) > RECENT:
            del recent[0]
        nxt = self.next_seq[direction] = (seq + len(payload)) & MASK
        held = self.held[direction]
        while held and not self.done:
            more = held.pop(nxt, None)
            if more is None:
                more = self._overlapping(direction, nxt)
                if more is None:
                    break
            out += self._deliver(direction, more, ts, sport, dport)
            recent.append((nxt, more))
            if len(recent) > RECENT:
                del recent[0]
            nxt = self.next_seq[direction] = (nxt + len(more)) & MASK
        return out

    def _overlapping(self, direction: int, nxt: int) -> bytes | None:
        """The new bytes of a held segment that starts before nxt (its old ones compared); None when none does."""
        held = self.held[direction]
        for start in list(held):
            before = (nxt - start) & MASK
            if before < HALF:  # starts before nxt (0 was looked up already)
                data = held.pop(start)
                self._compare(direction, start, data[:before])
                if before < len(data):
                    return data[before:]
        return None

    def _compare(self, direction: int, seq: int, data: bytes) -> None:
        """Count a conflict when bytes already delivered (from seq on) differ from data."""
        for start, old in self.recent[direction]:
            off = (seq - start) & MASK
            if off < HALF:  # data starts inside (or after) this segment
                a, b, n = off, 0, min(len(old) - off, len(data))
            else:  # data starts before it
                a, b = 0, 0x100000000 - off
                n = min(len(old), len(data) - b)
            if n > 0 and old[a:a + n] != data[b:b + n]:
                self.conflicts += 1
                return

    def _deliver(self, direction: int, payload: bytes, ts: float, sport: int, dport: int) -> Out:
        if self.done:
            return []
        if self.proto is None:
            first, self.first[direction] = self.first[direction], False
            proto = _detect(payload, sport, dport, first)
            if proto is None:
                self.probes += 1
                self.done = self.probes >= MAX_PROBES
                return []
            self._start(proto)
        try:
            return self.handler(direction, payload, ts)
        except (ValueError, IndexError, UnicodeDecodeError, StructError):
            if self.proto == "http":  # one bad message ends parsing of that direction only
                self.mode[direction] = "off"
                self.done = self.mode[0] == self.mode[1] == "off"
            else:
                self.done = True
            return []

    def _start(self, proto: str) -> None:
        self.proto = proto
        if proto == "tls":
            self.tls_readers = [tls.HandshakeReader(), tls.HandshakeReader()]
            self.tls_wait = [True, True]
        self.handler = getattr(self, "_" + proto)

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
        if self.tls_wait[direction]:  # cleartext before the upgrade, or the middle of a record after a hole
            if not (tls.looks_like_tls(payload) or tls.looks_like_sslv2_hello(payload)):
                return []
            self.tls_wait[direction] = False
        out: Out = []
        for mtype, body in self.tls_readers[direction].feed(payload):
            if mtype == 1 or (mtype == tls.SSL2_CLIENT_HELLO and body[:1] == b"\x01"):
                if self.client_hello is not None:
                    out.append(self._tls_event(None, ts))
                fields = tls.client_hello(body) if mtype == 1 else tls.client_hello_v2(body)
                self.client_hello = (fields, ts, direction)
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
                status = fields["http.response.status_code"]
                if 100 <= status < 200 and status != 101:  # interim (100 Continue): the final response follows
                    del buf[:used]
                    continue
                req, rts = self.pending.pop(0) if self.pending else ({}, ts)
                if req.get("http.request.method") == "HEAD":
                    body = 0
                req.update(fields)
                out.append((1 - direction, "http", req, rts))
                if status == 101 or (req.get("http.request.method") == "CONNECT" and 200 <= status < 300):
                    return out + self._tunnel(direction, bytes(buf[used:]), ts, status)
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

    def _tunnel(self, direction: int, rest: bytes, ts: float, status: int) -> Out:
        """After `101 Switching Protocols` HTTP ends; after a CONNECT's 2xx the tunnel is followed as TLS."""
        self.bufs[0].clear()
        self.bufs[1].clear()
        out, self.pending = [(0, "http", fields, rts) for fields, rts in self.pending], []
        if status == 101:
            self.done = True
            return out
        self._start("tls")
        return out + (self._tls(direction, rest, ts) if rest else [])

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


def _detect(payload: bytes, sport: int, dport: int, first: bool) -> str | None:
    """The protocol starting with payload: any TLS handshake record, SSH, HTTP or DNS on a direction's first
    bytes; later in the flow (an upgrade) only a ClientHello, an SSH banner or an HTTP/1.x line."""
    if tls.looks_like_tls(payload) if first else tls.starts_session(payload):
        return "tls"
    if first and tls.looks_like_sslv2_hello(payload):
        return "tls"
    if payload.startswith(b"SSH-"):
        return "ssh"
    if http.is_http(payload, sport, dport) if first else http.starts_message(payload):
        return "http"
    if first and (sport == 53 or dport == 53):
        return "dns"
    return None
