"""Packet sources: pcap/pcapng files through scapy's raw readers (bytes + metadata, no dissection), live interfaces
through scapy's L2 listen socket, and BPF filtering compiled by libpcap (via scapy) and applied with
`pcap_offline_filter`.

Every source yields records `(ts: float, data: bytes, wirelen: int, linktype: int)`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable, Iterator

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapNgReader, RawPcapReader

Record = tuple[float, bytes, int, int]
SNAPLEN = 262144
SOL_PACKET, PACKET_STATISTICS = 263, 6  # linux/if_packet.h


class CaptureError(Exception):
    """A capture file that cannot be opened or read; the message names the file and the place."""


def _quiet_scapy() -> None:
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)


def read_file(path: str, stats: dict | None = None) -> Iterator[Record]:
    """Stream the records of a pcap or pcapng file without loading it whole.

    A truncated last record ends the stream; `stats["file_truncated"]` counts records whose data is shorter than
    their caplen. Raises CaptureError when the file is not a capture at all.
    """
    _quiet_scapy()
    try:
        reader = RawPcapReader(path)  # dispatches to RawPcapNgReader on the pcapng magic
    except (Scapy_Exception, OSError, EOFError) as exc:
        raise CaptureError(f"{path}: not a readable pcap/pcapng file ({exc})") from exc
    stats = stats if stats is not None else {}
    stats.setdefault("file_truncated", 0)
    try:
        if isinstance(reader, RawPcapNgReader):
            read = reader._read_packet  # the reader's own per-record API (read_packet() refuses raw use)
            while True:
                try:
                    data, meta = read(size=SNAPLEN)
                except EOFError:
                    return
                ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
                yield ts, data, meta.wirelen, meta.linktype
        else:
            read, linktype = reader._read_packet, reader.linktype
            scale = 1e-9 if reader.nano else 1e-6
            while True:
                try:
                    data, meta = read(size=SNAPLEN)
                except EOFError:
                    return
                if len(data) < meta.caplen:
                    stats["file_truncated"] += 1
                yield meta.sec + meta.usec * scale, data, meta.wirelen, linktype
    except (Scapy_Exception, ValueError, OverflowError, MemoryError) as exc:
        pos = reader.f.tell() if hasattr(reader, "f") else "?"
        raise CaptureError(f"{path}: unreadable at byte offset {pos} ({exc})") from exc
    finally:
        reader.close()


class _PcapPkthdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long), ("caplen", ctypes.c_uint32),
                ("len", ctypes.c_uint32)]


class BpfFilter:
    """A tcpdump-syntax filter compiled by libpcap (scapy's `compile_filter`) and matched per link type with
    libpcap's `pcap_offline_filter`."""

    def __init__(self, expression: str) -> None:
        from scapy.arch.common import compile_filter
        from scapy.libs.winpcapy import _lib

        self.expression = expression
        self._compile = compile_filter
        self._match = _lib.pcap_offline_filter
        self._match.argtypes = [ctypes.c_void_p, ctypes.POINTER(_PcapPkthdr), ctypes.c_char_p]
        self._match.restype = ctypes.c_int
        self._programs: dict[int, object] = {}
        self._hdr = _PcapPkthdr()
        self.program(1)  # fail early on a syntax error

    def program(self, linktype: int) -> object:
        prog = self._programs.get(linktype)
        if prog is None:
            try:
                prog = self._programs[linktype] = self._compile(self.expression, linktype=linktype)
            except Exception as exc:  # scapy raises Scapy_Exception/OSError with libpcap's message
                raise ValueError(f"BPF filter {self.expression!r}: {exc}") from exc
        return prog

    def __call__(self, data: bytes, wirelen: int, linktype: int) -> bool:
        hdr = self._hdr
        hdr.caplen, hdr.len = len(data), wirelen
        return self._match(ctypes.byref(self.program(linktype)), ctypes.byref(hdr), data) != 0

    def apply(self, records: Iterator[Record]) -> Iterator[Record]:
        """Keep only the records that match."""
        for rec in records:
            if self(rec[1], rec[2], rec[3]):
                yield rec


def live(iface: str, bpf: str | None = None, stop: Callable[[], bool] = lambda: False,
         stats: dict | None = None, on_ready: Callable[[], None] | None = None) -> Iterator[Record]:
    """Capture on an interface with scapy's Linux L2 listen socket (filter attached in the kernel), yielding raw
    records until `stop()` is true (checked at least every 0.2 s). `stats["kernel_drops"]` gets the socket's drop
    count at the end."""
    import select

    import scapy.arch  # noqa: F401 - picks this platform's sockets (conf.L2listen)
    from scapy.config import conf
    from scapy.data import ARPHRD_TO_DLT

    _quiet_scapy()
    sock = conf.L2listen(iface=iface, filter=bpf)
    arphrd = sock.ins.getsockname()[3]
    linktype = ARPHRD_TO_DLT.get(arphrd, 1)  # e.g. Ethernet and loopback → 1, tun (ARPHRD_NONE) → raw IP
    stats = stats if stats is not None else {}
    _kernel_drops(sock)  # reading the statistics resets them: drops while scapy set the socket up do not count
    if on_ready:
        on_ready()
    try:
        while not stop():
            if not select.select([sock.ins], [], [], 0.2)[0]:
                continue
            try:
                _cls, data, ts = sock.recv_raw(SNAPLEN)
            except (OSError, InterruptedError):
                continue
            if data is not None:
                yield (ts or time.time()), data, len(data), linktype
    finally:
        stats["kernel_drops"] = _kernel_drops(sock)
        sock.close()


def _kernel_drops(sock: object) -> int:
    """PACKET_STATISTICS drops for a Linux packet socket (0 when unavailable)."""
    try:
        raw = sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # struct tpacket_stats: packets, drops
    except OSError:
        return 0
    return int.from_bytes(raw[4:8], "little")


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
