"""Capture files: pcap and pcapng records, read past damage.

scapy opens the file (magic, byte order, gzip, the pcap header and pcapng's Section Header, Interface Description and
other blocks' contents); the record/block framing is walked here so that damage is found where it is, reported as
`FILE: byte offset N: reason`, and reading resumes past it:

- pcap: a record whose caplen exceeds what the file can hold (> max(snaplen, 262144), libpcap's limit) is damage; the
  reader scans forward for the next plausible record header (caplen <= snaplen, caplen <= wirelen, sub-second field
  in range, timestamp within a day of the last good record) whose following header is plausible too (or which ends
  exactly at the end of the file).
- pcapng: a block whose length is not a multiple of 4, runs past the end of the file, or whose trailing length
  differs from its leading one is damage; the reader scans for the next block of a known type whose trailing length
  equals its leading length. A well-framed block whose contents are bad (or a packet naming an interface never
  described) is skipped as damage, reading goes on at the next block.

A file cut inside its last record keeps that record's bytes (a shorter frame). `stats` gets `file_truncated` (records
cut at the end), `damaged_regions`, `damaged_bytes` (bytes skipped, never delivered as frames) and `damage` (the
located messages). For a pcap, 24 + sum(16 + len(data)) + damaged_bytes is the file's size.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapNgReader, RawPcapReader

Record = tuple[float, bytes, int, int]
SNAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN: a larger caplen is damage unless the file declares a larger snaplen
MAX_SNAPLEN = 1 << 27  # a declared snaplen above this (128 MiB) is not believed
MAX_BLOCK = 1 << 24  # pcapng blocks longer than 16 MiB are damage
CHUNK = 1 << 20
TIME_WINDOW = 86400  # a resynchronised record's timestamp is within a day of the last good one
SHB = 0x0A0D0D0A
PACKET_BLOCKS = {2: "packet", 3: "simple packet", 6: "enhanced packet"}
KNOWN_BLOCKS = (SHB, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xBAD, 0x40000BAD, 0x80000001)


def quiet_scapy() -> None:
    """Silence scapy's per-record warnings: damage is reported here, located."""
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)


class CaptureError(Exception):
    """A capture file that cannot be opened or read; the message names the file and the place."""


def read_file(path: str, stats: dict | None = None) -> Iterator[Record]:
    """Stream the records `(ts, data, wirelen, linktype)` of a pcap or pcapng file without loading it whole.

    Damage is reported in `stats` (see the module doc) and read past; CaptureError when the file is not a capture at
    all or cannot be read (I/O error), after the records before the failure were yielded.
    """
    quiet_scapy()
    try:
        reader = RawPcapReader(path)  # dispatches to RawPcapNgReader on the pcapng magic
    except (Scapy_Exception, OSError, EOFError, zlib.error, MemoryError) as exc:
        raise CaptureError(f"{path}: not a readable pcap/pcapng file ({exc})") from exc
    stats = stats if stats is not None else {}
    for key in ("file_truncated", "damaged_regions", "damaged_bytes"):
        stats.setdefault(key, 0)
    stats.setdefault("damage", [])
    size = None if isinstance(reader.f, gzip.GzipFile) else os.path.getsize(path)
    walk = _Walk(path, reader.f, stats)
    try:
        if isinstance(reader, RawPcapNgReader):
            yield from _pcapng(reader, walk, size)
        else:
            yield from _pcap(reader, walk)
    except (OSError, EOFError, zlib.error) as exc:  # I/O errors, a gzip stream cut short
        raise CaptureError(f"{path}: byte offset {walk.pos}: unreadable ({exc})") from exc
    finally:
        reader.close()


class _Walk:
    """The position in the file and the damage found so far."""

    def __init__(self, path: str, f: BinaryIO, stats: dict) -> None:
        self.path, self.f, self.stats, self.pos = path, f, stats, 0

    def damage(self, offset: int, reason: str, resume: int | None, end: int = 0) -> None:
        """Record damage at `offset`; reading resumes at `resume` (None: nothing readable up to `end`)."""
        skipped = (resume if resume is not None else end) - offset
        tail = (f"skipped {skipped} bytes, resumed at byte offset {resume}" if resume is not None
                else f"nothing readable after it ({skipped} bytes skipped)")
        s = self.stats
        s["damaged_regions"] += 1
        s["damaged_bytes"] += skipped
        s["damage"].append(f"{self.path}: byte offset {offset}: {reason}; {tail}")

    def scan(self, start: int, candidates: re.Pattern[bytes] | None,
             check: Callable[[bytes, int, bool], bool | None]) -> tuple[int | None, int]:
        """First offset >= start where `check(window, i, at_eof)` is true (None: need more bytes), and the end of
        the file. `candidates` (a zero-width pattern) skips positions that cannot match."""
        f = self.f
        f.seek(start)
        win, base, i, eof = b"", start, 0, False
        while True:
            if not eof:
                more = f.read(CHUNK)
                eof = not more
                win, base, i = win[i:] + more, base + i, 0
            n = len(win)
            while i < n:
                if candidates is not None:
                    m = candidates.search(win, i)
                    if m is None:
                        i = max(i, n - 16)
                        break
                    i = m.start()
                verdict = check(win, i, eof)
                if verdict is None:
                    break
                if verdict:
                    return base + i, base + n
                i += 1
            if eof:  # at the end of the file `check` never asks for more: no candidate left
                return None, base + n


def _pcap(reader: RawPcapReader, walk: _Walk) -> Iterator[Record]:
    f, linktype, endian = reader.f, reader.linktype, reader.endian
    unpack = struct.Struct(endian + "IIII").unpack_from
    scale = 1e-9 if reader.nano else 1e-6
    snaplen = reader.snaplen if 0 < reader.snaplen <= MAX_SNAPLEN else SNAPLEN
    limit = max(snaplen, SNAPLEN)
    frac_max = 1_000_000_000 if reader.nano else 1_000_000
    last: int | None = None  # the last good record's seconds
    buf, off, base, need = b"", 0, 24, CHUNK  # base: the file offset of buf[0]
    while True:
        walk.pos = base + off
        more = f.read(need)
        buf, base, off = buf[off:] + more, base + off, 0
        n, need, eof = len(buf), CHUNK, not more
        while True:
            while off + 16 <= n:  # the hot loop: whole records with caplen <= snaplen
                sec, usec, caplen, wirelen = unpack(buf, off)
                end = off + 16 + caplen
                if end > n or caplen > snaplen:
                    break
                last = sec
                yield sec + usec * scale, buf[off + 16:end], wirelen, linktype
                off = end
            if off + 16 > n:
                break
            if caplen <= snaplen:  # the record's data is not all in the buffer
                need = max(CHUNK, end - n)
                break
            # caplen > snaplen: believed (up to the limit) only when the following header is plausible too
            verdict = False if caplen > limit else _pcap_check(unpack, limit, frac_max, last)(buf, off, eof)
            if verdict is None:
                need = max(CHUNK, end + 16 - n)
                break
            if verdict:
                last = sec
                yield sec + usec * scale, buf[off + 16:end], wirelen, linktype
                off = end
                continue
            bad = walk.pos = base + off
            resume, size = walk.scan(bad + 1, _time_pattern(last, endian), _pcap_check(unpack, snaplen, frac_max, last))
            walk.damage(bad, f"record claims caplen {caplen} (snaplen {snaplen})", resume, size)
            if resume is None:
                return
            f.seek(resume)
            buf, off, base, eof = b"", 0, resume, False
            break
        if not eof:
            continue
        left, bad = n - off, base + off
        if left >= 16:  # caplen <= snaplen: the file ends inside the record
            sec, usec, caplen, wirelen = unpack(buf, off)
            walk.stats["file_truncated"] += 1
            walk.stats["damage"].append(f"{walk.path}: byte offset {bad}: record cut short by the end of the file "
                                        f"(caplen {caplen}, {left - 16} bytes present); kept as a shorter frame")
            yield sec + usec * scale, buf[off + 16:], wirelen, linktype
        elif left:
            walk.damage(bad, f"record header cut short by the end of the file ({left} of 16 bytes)", None, bad + left)
        return


def _pcap_check(unpack: Callable, snaplen: int, frac_max: int,
                last: int | None) -> Callable[[bytes, int, bool], bool | None]:
    """A plausible pcap record header at i whose following header is plausible too (or which ends the file)."""

    def plausible(win: bytes, i: int, ref: int | None) -> tuple[int, int] | None:
        sec, usec, caplen, wirelen = unpack(win, i)
        if caplen > snaplen or wirelen < caplen or wirelen > MAX_SNAPLEN or usec >= frac_max:
            return None
        if ref is not None and abs(sec - ref) > TIME_WINDOW:
            return None
        return sec, caplen

    def check(win: bytes, i: int, eof: bool) -> bool | None:
        n = len(win)
        if i + 16 > n:
            return False if eof else None
        first = plausible(win, i, last)
        if first is None:
            return False
        nxt = i + 16 + first[1]
        if nxt == n and eof:
            return True
        if nxt + 16 > n:
            return False if eof else None
        return plausible(win, nxt, first[0]) is not None

    return check


def _time_pattern(last: int | None, endian: str) -> re.Pattern[bytes] | None:
    """Positions whose seconds field can be within TIME_WINDOW of `last` (by its upper 16 bits)."""
    if last is None:
        return None
    lo, hi = max(last - TIME_WINDOW, 0) >> 16, min(last + TIME_WINDOW, 0xFFFFFFFF) >> 16
    order = "little" if endian == "<" else "big"
    alts = b"|".join(re.escape(v.to_bytes(2, order)) for v in range(lo, hi + 1))
    return re.compile((b"(?=..(?:" if order == "little" else b"(?=(?:") + alts + b"))", re.S)


def _pcapng(reader: RawPcapNgReader, walk: _Walk, size: int | None) -> Iterator[Record]:
    f, handlers = reader.f, reader.blocktypes
    pos = f.tell()  # after the first Section Header Block, which scapy read
    endian = reader.endian
    head, u32 = struct.Struct(endian + "II"), struct.Struct(endian + "I")
    last_ts = 0.0
    while True:
        walk.pos = pos
        raw = f.read(8)
        if len(raw) < 8:
            if raw:
                walk.damage(pos, f"block header cut short by the end of the file ({len(raw)} of 8 bytes)", None,
                            pos + len(raw))
            return
        btype, blen = head.unpack(raw)
        reason = None
        if btype == SHB:  # a new section: scapy reads it (byte order, options) once its length is sane
            reason = _shb_length_problem(raw + f.read(4), pos, size)
            if reason is None:
                f.seek(pos + 4)
                try:
                    reader._read_block_shb()
                    pos = f.tell()
                    endian = reader.endian
                    head, u32 = struct.Struct(endian + "II"), struct.Struct(endian + "I")
                    continue
                except (EOFError, Scapy_Exception, struct.error) as exc:
                    reason = f"bad section header block ({exc or 'malformed'})"
        elif blen < 12 or blen % 4 or blen > MAX_BLOCK:
            reason = f"bad block length {blen}"
        elif size is not None and pos + blen > size:
            reason = f"block length {blen} runs past the end of the file ({size - pos} bytes left)"
        else:
            rest = f.read(blen - 8)
            if len(rest) < blen - 8:
                reason = f"block length {blen} runs past the end of the file ({len(rest) + 8} bytes left)"
            elif (trail := u32.unpack_from(rest, blen - 12)[0]) != blen:
                reason = f"block trailing length {trail} differs from its leading length {blen}"
            else:
                handler = handlers.get(btype)
                res = None
                if handler is not None:
                    try:
                        res = handler(rest[:-4], SNAPLEN)
                    except (EOFError, Scapy_Exception, struct.error, ValueError, IndexError) as exc:
                        walk.damage(pos, f"bad block of type {btype:#x} ({exc or 'malformed'})", pos + blen)
                        pos += blen
                        continue
                if res is not None:
                    data, meta = res
                    if meta.tshigh is not None:  # a simple packet block has no time: the previous packet's
                        last_ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
                    yield last_ts, data, meta.wirelen, meta.linktype
                elif btype in PACKET_BLOCKS:
                    walk.damage(pos, f"{PACKET_BLOCKS[btype]} block names an interface never described "
                                     f"({len(reader.interfaces)} described)", pos + blen)
                pos += blen
                continue
        resume, eof = walk.scan(pos + 1, _block_pattern(endian), _pcapng_check(endian, reader))
        walk.damage(pos, reason, resume, eof)
        if resume is None:
            return
        f.seek(resume)
        pos = resume


def _shb_length_problem(head: bytes, pos: int, size: int | None) -> str | None:
    """Why a section header block's length (in the byte order its magic gives) cannot be right, else None."""
    order = {b"\x1a\x2b\x3c\x4d": ">I", b"\x4d\x3c\x2b\x1a": "<I"}.get(head[8:12])
    if order is None:
        return "bad section header block (byte-order magic)"
    blen = struct.unpack_from(order, head, 4)[0]
    if blen < 28 or blen % 4 or blen > MAX_BLOCK or (size is not None and pos + blen > size):
        return f"bad section header block length {blen}"
    return None


_BLOCK_PATTERNS: dict[str, re.Pattern[bytes]] = {}


def _block_pattern(endian: str) -> re.Pattern[bytes]:
    """Positions holding a known pcapng block type in this byte order."""
    pat = _BLOCK_PATTERNS.get(endian)
    if pat is None:
        alts = b"|".join(re.escape(struct.pack(endian + "I", t)) for t in KNOWN_BLOCKS)
        pat = _BLOCK_PATTERNS[endian] = re.compile(b"(?=" + alts + b")", re.S)
    return pat


def _pcapng_check(endian: str, reader: RawPcapNgReader) -> Callable[[bytes, int, bool], bool | None]:
    """A known block type at i whose trailing length equals its leading length (a section header: its byte-order
    magic; an enhanced packet: a described interface and a caplen that fits)."""
    u32 = struct.Struct(endian + "I").unpack_from

    def check(win: bytes, i: int, eof: bool) -> bool | None:
        n = len(win)
        if i + 12 > n:
            return False if eof else None
        btype = u32(win, i)[0]
        if btype == SHB:
            magic = win[i + 8:i + 12]
            if magic not in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"):
                return False
            blen = struct.unpack_from(">I" if magic == b"\x1a\x2b\x3c\x4d" else "<I", win, i + 4)[0]
            tail = ">I" if magic == b"\x1a\x2b\x3c\x4d" else "<I"
        else:
            blen, tail = u32(win, i + 4)[0], endian + "I"
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            return False
        if i + blen > n:
            return False if eof else None
        if struct.unpack_from(tail, win, i + blen - 4)[0] != blen:
            return False
        if btype == 6:  # enhanced packet: interface id, caplen
            if blen < 32:
                return False
            intid, caplen = u32(win, i + 8)[0], u32(win, i + 20)[0]
            return intid < len(reader.interfaces) and 32 + caplen <= blen
        return True

    return check
