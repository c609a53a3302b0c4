"""Fast header decoding with `struct`: link layer, VLAN tags, IPv4/IPv6 (+ fragment reassembly), TCP/UDP/ICMP.

`PacketDecoder.decode(data, linktype, ts)` returns a `Decoded` tuple for packets that carry IP, or None (and counts
why). Nothing here allocates more than one small tuple per packet on the common path.
"""

from __future__ import annotations

from collections import OrderedDict
from struct import Struct, unpack_from
from struct import error as StructError
from typing import NamedTuple

# Link types (https://www.tcpdump.org/linktypes.html)
LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_RAW_OLD, LINK_RAW_OLD2 = 0, 1, 101, 12, 14
LINK_LOOP, LINK_SLL, LINK_SLL2, LINK_IPV4, LINK_IPV6 = 108, 113, 276, 228, 229
SUPPORTED_LINKTYPES = frozenset(
    {LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_RAW_OLD, LINK_RAW_OLD2, LINK_LOOP, LINK_SLL, LINK_SLL2, LINK_IPV4,
     LINK_IPV6})

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
IPV6_EXT = frozenset({0, 43, 60, 51})  # hop-by-hop, routing, destination options, AH (fragment handled apart)
NULL_FAMILY_V6 = frozenset({24, 28, 30})  # BSD AF_INET6 values differ by OS


class Decoded(NamedTuple):
    """One IP packet with its transport header decoded (payload is the transport payload)."""
    version: int          # 4 or 6
    src: bytes            # packed address
    dst: bytes
    proto: int            # IP protocol number
    sport: int            # ports; ICMP: type, code
    dport: int
    vlans: tuple          # VLAN ids outer→inner, () when untagged
    flags: int            # TCP flags (0 otherwise)
    seq: int              # TCP sequence number (0 otherwise)
    payload: bytes        # transport payload as captured (may be shorter than on the wire)
    l4len: int            # transport segment length the IP header declares (header included)
    truncated: bool       # header complete but caplen cut the packet / IP length beyond the frame


_new = tuple.__new__  # builds a Decoded without NamedTuple's Python-level __new__ (hot path)
# IPv4 header without options + the first 8 bytes of TCP/UDP: total length, flags/offset, protocol, addresses,
# ports, TCP sequence number (for UDP: length << 16 | checksum)
_V4_L4 = Struct(">2xH2xH1xB2x4s4sHHI").unpack_from


class Counters(dict):
    """Packet counters (a dict so it serialises as-is)."""

    def __missing__(self, key: str) -> int:
        return 0


class Defragmenter:
    """IPv4/IPv6 fragment reassembly with bounded memory (first-come data wins on overlaps).

    A datagram counts as one packet of the frame that completes it (tshark's convention); the other fragment
    frames are counted as `fragments`. Datagrams never completed are dropped after `timeout` s and counted.
    """

    def __init__(self, counters: Counters, timeout: float = 30.0, max_datagrams: int = 4096) -> None:
        self.counters, self.timeout, self.max_datagrams = counters, timeout, max_datagrams
        self.pending: OrderedDict[tuple, list] = OrderedDict()  # key -> [first_ts, total or -1, {offset: bytes}]

    def add(self, key: tuple, ts: float, offset: int, more: bool, data: bytes) -> bytes | None:
        """Add one fragment; return the reassembled payload when the datagram is complete."""
        self.counters["fragments"] += 1
        entry = self.pending.get(key)
        if entry is None:
            self._expire(ts)
            if len(self.pending) >= self.max_datagrams:
                self.pending.popitem(last=False)
                self.counters["fragments_dropped"] += 1
            entry = self.pending[key] = [ts, -1, {}]
        parts = entry[2]
        parts.setdefault(offset, data)
        if not more:
            entry[1] = offset + len(data)
        total = entry[1]
        if total < 0:
            return None
        buf, pos = bytearray(), 0
        for off in sorted(parts):
            chunk = parts[off]
            if off > pos:
                return None  # hole
            if off + len(chunk) > pos:
                buf += chunk[pos - off:]
                pos = off + len(chunk)
        if pos < total:
            return None
        del self.pending[key]
        self.counters["fragments"] -= 1  # the completing frame counts as the datagram's packet
        self.counters["reassembled"] += 1
        return bytes(buf[:total])

    def _expire(self, ts: float) -> None:
        pending = self.pending
        while pending:
            key, entry = next(iter(pending.items()))
            if ts - entry[0] <= self.timeout:
                break
            del pending[key]
            self.counters["fragments_incomplete"] += 1

    def flush(self) -> None:
        """Count the datagrams still incomplete at end of input."""
        self.counters["fragments_incomplete"] += len(self.pending)
        self.pending.clear()


class PacketDecoder:
    """Decodes captured frames into `Decoded` tuples. Every frame not decoded is counted exactly once: malformed,
    truncated, unknown_link, non_ip, or fragments (frames held for reassembly); `header_cut` counts decoded frames
    whose transport header was cut after the ports."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters if counters is not None else Counters()
        self.defrag = Defragmenter(self.counters)

    def decode(self, data: bytes, linktype: int, ts: float) -> Decoded | None:
        """Decode one frame; None when it carries no (complete) IP datagram."""
        c = self.counters
        n = len(data)
        vlans: tuple = ()
        try:
            if linktype == LINK_ETHERNET:
                etype = (data[12] << 8) | data[13]
                off = 14
                if etype in VLAN_TPIDS:
                    tags = []
                    while etype in VLAN_TPIDS:
                        tags.append(((data[off] << 8) | data[off + 1]) & 0x0FFF)
                        etype = (data[off + 2] << 8) | data[off + 3]
                        off += 4
                    vlans = tuple(tags)
            elif linktype in (LINK_NULL, LINK_LOOP):
                fam = unpack_from("<I" if linktype == LINK_NULL else ">I", data, 0)[0]
                if fam > 0xFFFF:  # written on the other endianness
                    fam = int.from_bytes(data[0:4], "big" if linktype == LINK_NULL else "little")
                etype = ETH_IPV4 if fam == 2 else ETH_IPV6 if fam in NULL_FAMILY_V6 else -1
                off = 4
            elif linktype == LINK_SLL:
                etype, off = (data[14] << 8) | data[15], 16
            elif linktype == LINK_SLL2:
                etype, off = (data[0] << 8) | data[1], 20
            elif linktype in (LINK_RAW, LINK_RAW_OLD, LINK_RAW_OLD2, LINK_IPV4, LINK_IPV6):
                etype, off = (ETH_IPV4 if data[0] >> 4 == 4 else ETH_IPV6 if data[0] >> 4 == 6 else -1), 0
            else:
                c["unknown_link"] += 1
                return None
        except (IndexError, StructError):
            c["truncated"] += 1
            return None
        if etype == ETH_IPV4:
            # fast path: a whole, unfragmented IPv4 datagram without options carrying TCP or UDP
            if n >= off + 40 and data[off] == 0x45:
                total, frag, proto, src, dst, sport, dport, seq = _V4_L4(data, off)
                end = off + total
                if not frag & 0x3FFF and total >= 40 and end <= n:
                    if proto == TCP:
                        hlen = (data[off + 32] >> 4) * 4
                        if 20 <= hlen <= total - 20:
                            return _new(Decoded, (4, src, dst, TCP, sport, dport, vlans, data[off + 33], seq,
                                                  data[off + 20 + hlen:end], total - 20, False))
                    elif proto == UDP:
                        ulen = seq >> 16
                        if 8 <= ulen <= total - 20:
                            return _new(Decoded, (4, src, dst, UDP, sport, dport, vlans, 0, 0,
                                                  data[off + 28:off + 20 + ulen], total - 20, False))
            return self._ipv4(data, off, n, vlans, ts)
        if etype == ETH_IPV6:
            return self._ipv6(data, off, n, vlans, ts)
        c["non_ip"] += 1
        return None

    def _ipv4(self, data: bytes, off: int, n: int, vlans: tuple, ts: float) -> Decoded | None:
        c = self.counters
        if n < off + 20:
            c["truncated"] += 1
            return None
        vihl, total, ident, frag, proto = data[off], *unpack_from(">HHH", data, off + 2), data[off + 9]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or total < ihl:
            c["malformed"] += 1
            return None
        end = off + total
        truncated = end > n
        if truncated:
            end = n
        src, dst = data[off + 12:off + 16], data[off + 16:off + 20]
        start = off + ihl
        if start > end:
            c["truncated"] += 1
            return None
        if frag & 0x3FFF:  # MF set or offset != 0
            payload = self.defrag.add((4, src, dst, ident, proto), ts, (frag & 0x1FFF) * 8, bool(frag & 0x2000),
                                      data[start:end])
            if payload is None:
                return None
            return self._l4(4, src, dst, proto, payload, 0, len(payload), len(payload), vlans, truncated)
        return self._l4(4, src, dst, proto, data, start, end, total - ihl, vlans, truncated)

    def _ipv6(self, data: bytes, off: int, n: int, vlans: tuple, ts: float) -> Decoded | None:
        c = self.counters
        if n < off + 40:
            c["truncated"] += 1
            return None
        if data[off] >> 4 != 6:
            c["malformed"] += 1
            return None
        plen, nxt = unpack_from(">HB", data, off + 4)
        src, dst = data[off + 8:off + 24], data[off + 24:off + 40]
        pos, end = off + 40, off + 40 + plen
        declared = end
        truncated = end > n
        if truncated:
            end = n
        while True:
            if nxt in IPV6_EXT:
                if pos + 2 > end:
                    c["truncated"] += 1
                    return None
                nxt, hlen = data[pos], data[pos + 1]
                pos += (hlen + 2) * 4 if nxt == 51 else (hlen + 1) * 8
                continue
            if nxt == 44:  # fragment header
                if pos + 8 > end:
                    c["truncated"] += 1
                    return None
                nxt2, offmf, ident = data[pos], *unpack_from(">HI", data, pos + 2)
                payload = self.defrag.add((6, src, dst, ident), ts, offmf & 0xFFF8, bool(offmf & 1),
                                          data[pos + 8:end])
                if payload is None:
                    return None
                data, pos, end, nxt = payload, 0, len(payload), nxt2
                declared = len(payload)
                while nxt in IPV6_EXT and pos + 2 <= end:  # headers after the fragment header
                    nxt, hlen = data[pos], data[pos + 1]
                    pos += (hlen + 2) * 4 if nxt == 51 else (hlen + 1) * 8
            break
        declared -= pos
        if pos > end:
            c["truncated"] += 1
            return None
        return self._l4(6, src, dst, nxt, data, pos, end, declared, vlans, truncated)

    def _l4(self, version: int, src: bytes, dst: bytes, proto: int, data: bytes, pos: int, end: int, l4len: int,
            vlans: tuple, truncated: bool) -> Decoded | None:
        c = self.counters
        avail = end - pos
        if proto == TCP:
            if avail < 14:
                if avail >= 4:  # ports survive a snaplen cut: keep the packet in its flow (tshark does)
                    sport, dport = unpack_from(">HH", data, pos)
                    c["header_cut"] += 1  # decoded (ports only), not a loss
                    return _new(Decoded, (version, src, dst, proto, sport, dport, vlans, 0, 0, b"", l4len, True))
                c["truncated"] += 1
                return None
            sport, dport, seq = unpack_from(">HHI", data, pos)
            hlen, flags = (data[pos + 12] >> 4) * 4, data[pos + 13]
            if hlen < 20:
                c["malformed"] += 1
                return None
            if hlen > avail:
                truncated = True
            return _new(Decoded, (version, src, dst, proto, sport, dport, vlans, flags, seq,
                           data[pos + hlen:end] if hlen < avail else b"", l4len, truncated))
        if proto == UDP:
            if avail < 8:
                if avail >= 4:
                    sport, dport = unpack_from(">HH", data, pos)
                    c["header_cut"] += 1  # decoded (ports only), not a loss
                    return _new(Decoded, (version, src, dst, proto, sport, dport, vlans, 0, 0, b"", l4len, True))
                c["truncated"] += 1
                return None
            sport, dport, ulen = unpack_from(">HHH", data, pos)
            stop = pos + ulen if 8 <= ulen <= avail else end
            return _new(Decoded, (version, src, dst, proto, sport, dport, vlans, 0, 0, data[pos + 8:stop],
                           l4len, truncated or ulen > avail))
        if proto in (ICMP, ICMPV6):
            if avail < 4:
                c["truncated"] += 1
                return None
            return _new(Decoded, (version, src, dst, proto, data[pos], data[pos + 1], vlans, 0, 0, data[pos + 4:end],
                           l4len, truncated))
        return _new(Decoded, (version, src, dst, proto, 0, 0, vlans, 0, 0, b"", l4len, truncated))
