"""TLS handshake parsing: ClientHello/ServerHello fields, JA3, JA3S and JA4 (JA4 is BSD-licensed; JA4S/H/X are not
shipped). Cipher suite names come from scapy's TLS registry (a generated copy: `tls_suites`)."""

from __future__ import annotations

from hashlib import md5, sha256
from struct import unpack_from

from sensors.protocols.tls_suites import CIPHER_SUITES

GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))
VERSIONS = {0x0300: "3.0", 0x0301: "1.0", 0x0302: "1.1", 0x0303: "1.2", 0x0304: "1.3"}
JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}
SSL2_CLIENT_HELLO = 0x101  # pseudo handshake type: an SSLv2-format CLIENT-HELLO (body from its message type on)
EXT_SNI, EXT_GROUPS, EXT_POINTS, EXT_SIGALGS, EXT_ALPN, EXT_VERSIONS = 0, 10, 11, 13, 16, 43


def looks_like_tls(buf: bytes) -> bool:
    """A handshake record with a TLS/SSL3 record version."""
    return len(buf) >= 3 and buf[0] == 0x16 and buf[1] == 3 and buf[2] <= 4


def looks_like_sslv2_hello(buf: bytes) -> bool:
    """An SSLv2-format record holding a CLIENT-HELLO that offers SSL 2.0 up to TLS 1.3 (RFC 5246 E.2): how old
    clients open a TLS session."""
    if len(buf) < 5 or not buf[0] & 0x80 or buf[2] != 1 or ((buf[0] & 0x7F) << 8 | buf[1]) < 9:
        return False
    return buf[3:5] == b"\x00\x02" or (buf[3] == 3 and buf[4] <= 4)


def starts_session(buf: bytes) -> bool:
    """A ClientHello record (or SSLv2-compatible hello) at the start of buf: TLS starting here, e.g. after STARTTLS."""
    return (looks_like_tls(buf) and len(buf) >= 6 and buf[5] == 1) or looks_like_sslv2_hello(buf)


class HandshakeReader:
    """Collects handshake messages from one direction's TCP byte stream (records may split messages and
    messages may split across records and segments). The stream's first record may be an SSLv2-compatible
    CLIENT-HELLO, returned as type SSL2_CLIENT_HELLO."""

    __slots__ = ("records", "hs", "done", "started")

    def __init__(self) -> None:
        self.records = bytearray()
        self.hs = bytearray()
        self.done = False
        self.started = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add stream bytes; return the complete handshake messages (type, body) found so far."""
        if self.done:
            return []
        self.records += data
        recs, out, pos = self.records, [], 0
        if not self.started and len(recs) >= 2:
            if recs[0] & 0x80:  # SSLv2 record header: 2 bytes, the length in the low 15 bits
                end = 2 + ((recs[0] & 0x7F) << 8 | recs[1])
                if len(recs) < end:
                    return []
                out.append((SSL2_CLIENT_HELLO, bytes(recs[2:end])))
                pos = end
            self.started = True
        while len(recs) - pos >= 5:
            ctype, length = recs[pos], (recs[pos + 3] << 8) | recs[pos + 4]
            if len(recs) - pos - 5 < length:
                break
            if ctype == 22:
                self.hs += recs[pos + 5:pos + 5 + length]
            elif ctype in (20, 23) or ctype not in (21, 24):  # encrypted from here on, or not TLS at all
                self.done = True
            pos += 5 + length
        del recs[:pos]
        hs, hpos = self.hs, 0
        while len(hs) - hpos >= 4:
            mlen = (hs[hpos + 1] << 16) | (hs[hpos + 2] << 8) | hs[hpos + 3]
            if len(hs) - hpos - 4 < mlen:
                break
            out.append((hs[hpos], bytes(hs[hpos + 4:hpos + 4 + mlen])))
            hpos += 4 + mlen
        del hs[:hpos]
        if len(self.records) + len(self.hs) > 1 << 18:
            self.done = True
        return out


def _extensions(body: bytes, pos: int) -> list[tuple[int, bytes]]:
    if pos + 2 > len(body):
        return []
    end = min(pos + 2 + unpack_from(">H", body, pos)[0], len(body))
    pos += 2
    exts = []
    while pos + 4 <= end:
        etype, elen = unpack_from(">HH", body, pos)
        exts.append((etype, body[pos + 4:pos + 4 + elen]))
        pos += 4 + elen
    return exts


def _u16_list(data: bytes, start: int, nbytes: int) -> list[int]:
    return [unpack_from(">H", data, start + i)[0] for i in range(0, nbytes - nbytes % 2, 2)]


def version_name(v: int) -> str:
    """1.2, 1.3 (drafts 0x7Fxx included), 3.0 for SSLv3, else hex."""
    return "1.3" if v >> 8 == 0x7F else VERSIONS.get(v, f"0x{v:04x}")


def _cipher_name(c: int) -> str:
    return CIPHER_SUITES.get(c, f"0x{c:04X}")


def _ja4_alpn(alpn: list[str]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    first, last = alpn[0][0], alpn[0][-1]
    if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
        return first + last
    raw = alpn[0].encode("latin-1")
    return f"{raw[0]:02x}"[0] + f"{raw[-1]:02x}"[-1]


def client_hello(body: bytes) -> dict:
    """ECS fields of a ClientHello handshake body (JA3, JA4, SNI, ALPN, ciphers, versions)."""
    version = unpack_from(">H", body, 0)[0]
    pos = 34
    pos += 1 + body[pos]
    clen = unpack_from(">H", body, pos)[0]
    ciphers = [c for c in _u16_list(body, pos + 2, clen) if c not in GREASE]
    pos += 2 + clen
    pos += 1 + body[pos]
    exts = _extensions(body, pos)
    ext_types = [t for t, _ in exts if t not in GREASE]
    groups: list[int] = []
    points: list[int] = []
    sigalgs: list[int] = []
    alpn: list[str] = []
    versions: list[int] = []
    sni = None
    for etype, data in exts:
        if etype == EXT_SNI and len(data) >= 5:
            sni = data[5:5 + unpack_from(">H", data, 3)[0]].decode("latin-1")
        elif etype == EXT_GROUPS and len(data) >= 2:
            groups = [g for g in _u16_list(data, 2, unpack_from(">H", data, 0)[0]) if g not in GREASE]
        elif etype == EXT_POINTS and data:
            points = list(data[1:1 + data[0]])
        elif etype == EXT_SIGALGS and len(data) >= 2:
            sigalgs = _u16_list(data, 2, unpack_from(">H", data, 0)[0])
        elif etype == EXT_ALPN and len(data) >= 2:
            p, end = 2, 2 + unpack_from(">H", data, 0)[0]
            while p < end and p < len(data):
                alpn.append(data[p + 1:p + 1 + data[p]].decode("latin-1"))
                p += 1 + data[p]
        elif etype == EXT_VERSIONS and data:
            versions = [v for v in _u16_list(data, 1, data[0]) if v not in GREASE]
    ja3 = ",".join([str(version), "-".join(map(str, ciphers)), "-".join(map(str, ext_types)),
                    "-".join(map(str, groups)), "-".join(map(str, points))])
    top = max(versions) if versions else version
    ja4_ext = sorted(f"{t:04x}" for t in ext_types if t not in (EXT_SNI, EXT_ALPN))
    ja4_c = ",".join(sorted(f"{c:04x}" for c in ciphers))
    ja4_e = ",".join(ja4_ext) + ("_" + ",".join(f"{s:04x}" for s in sigalgs) if sigalgs else "")
    ja4 = (f"t{JA4_VERSIONS.get(top, '00')}{'d' if sni else 'i'}{min(len(ciphers), 99):02d}"
           f"{min(len(ext_types), 99):02d}{_ja4_alpn(alpn)}_"
           f"{sha256(ja4_c.encode()).hexdigest()[:12] if ciphers else '000000000000'}_"
           f"{sha256(ja4_e.encode()).hexdigest()[:12] if ja4_ext else '000000000000'}")
    ev: dict = {"tls.client.ja3": md5(ja3.encode()).hexdigest(), "soc.tls.client.ja3_string": ja3,
                "tls.client.ja4": ja4, "tls.client.supported_ciphers": [_cipher_name(c) for c in ciphers],
                "tls.version_protocol": "ssl" if top <= 0x0300 else "tls", "tls.version": version_name(top),
                "soc.tls.client.versions": [version_name(v) for v in (versions or [version])]}
    if sni:
        ev["tls.client.server_name"] = sni
    if alpn:
        ev["tls.next_protocol"] = alpn[0]
        ev["soc.tls.client.alpn"] = alpn
    return ev


def client_hello_v2(body: bytes) -> dict:
    """ECS fields of an SSLv2-compatible CLIENT-HELLO (version and cipher specs; it has no extensions, so no SNI,
    and tshark and Suricata compute no JA3 for it either)."""
    version = unpack_from(">H", body, 1)[0]
    spec_len = unpack_from(">H", body, 3)[0]
    specs = body[9:9 + spec_len]
    if len(specs) < spec_len:
        raise ValueError("SSLv2 CLIENT-HELLO truncated")
    ciphers = [int.from_bytes(specs[i:i + 3], "big") for i in range(0, spec_len - spec_len % 3, 3)]
    name = "2.0" if version == 0x0002 else version_name(version)
    return {"tls.client.supported_ciphers": [_cipher_name(c) for c in ciphers if c not in GREASE],
            "tls.version_protocol": "ssl" if version <= 0x0300 else "tls", "tls.version": name,
            "soc.tls.client.versions": [name], "soc.tls.client.sslv2_hello": True}


def server_hello(body: bytes) -> dict:
    """ECS fields of a ServerHello handshake body (JA3S, chosen version and cipher)."""
    version = unpack_from(">H", body, 0)[0]
    pos = 34
    if version >> 8 != 0x7F:  # TLS 1.3 drafts (0x7Fxx) have no session id
        pos += 1 + body[pos]
    cipher = unpack_from(">H", body, pos)[0]
    exts = _extensions(body, pos + (2 if version >> 8 == 0x7F else 3))  # drafts: no compression method
    ext_types = [t for t, _ in exts]
    chosen = version
    for etype, data in exts:
        if etype == EXT_VERSIONS and len(data) >= 2:
            chosen = unpack_from(">H", data, 0)[0]
    ja3s = f"{version},{cipher},{'-'.join(map(str, ext_types))}"
    return {"tls.server.ja3s": md5(ja3s.encode()).hexdigest(), "soc.tls.server.ja3s_string": ja3s,
            "tls.cipher": _cipher_name(cipher), "tls.version": version_name(chosen),
            "tls.version_protocol": "ssl" if chosen <= 0x0300 else "tls"}
