"""Packet sources: pcap/pcapng files (`sensors.pcapfile`, read past damage), live interfaces
through scapy's L2 listen socket, and BPF filtering compiled by the libpcap that the `cypcap` wheel ships (applied
with `pcap_offline_filter` to files, attached to the socket in the kernel for live capture).

Every source yields records `(ts: float, data: bytes, wirelen: int, linktype: int)`.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator

import cypcap
from scapy.data import DLT_RAW, DLT_RAW_ALT, SO_ATTACH_FILTER
from scapy.libs.structures import bpf_insn, sock_fprog

from .pcapfile import SNAPLEN, CaptureError, Record, read_file
from .pcapfile import quiet_scapy as _quiet_scapy

__all__ = ["SNAPLEN", "BpfFilter", "CaptureError", "Record", "file_size", "live", "read_file"]
SOL_PACKET, PACKET_STATISTICS = 263, 6  # linux/if_packet.h
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h


class BpfFilter:
    """A tcpdump-syntax filter compiled by libpcap (the copy that the `cypcap` wheel ships, no system libpcap needed),
    one program per link type, matched with libpcap's `pcap_offline_filter`."""

    def __init__(self, expression: str) -> None:
        if "\0" in expression:  # libpcap takes a C string: the rest would be silently ignored
            raise ValueError(f"BPF filter {expression!r}: NUL character at position {expression.index(chr(0))}")
        self.expression = expression
        self._programs: dict[int, cypcap.BpfProgram] = {}
        self._hdr = cypcap.Pkthdr()
        self.program(1)  # fail early on a syntax error

    def program(self, linktype: int) -> cypcap.BpfProgram:
        """The compiled program for a capture link type; ValueError names the expression and libpcap's reason."""
        prog = self._programs.get(linktype)
        if prog is None:
            dlt = DLT_RAW if linktype == DLT_RAW_ALT else linktype  # pcap's LINKTYPE_RAW is DLT_RAW for libpcap
            try:
                prog = cypcap.compile(dlt, SNAPLEN, self.expression, True, cypcap.NETMASK_UNKNOWN)
            except (cypcap.Error, UnicodeEncodeError) as exc:  # cypcap.Error args: (ErrorCode, libpcap's message)
                reason = exc.args[-1] if isinstance(exc, cypcap.Error) else str(exc)
                raise ValueError(f"BPF filter {self.expression!r} (link type {linktype}): {reason}") from exc
            self._programs[linktype] = prog
        return prog

    def __call__(self, data: bytes, wirelen: int, linktype: int) -> bool:
        hdr = self._hdr
        hdr.caplen, hdr.len = len(data), wirelen
        return self.program(linktype).offline_filter(hdr, data)

    def apply(self, records: Iterator[Record]) -> Iterator[Record]:
        """Keep only the records that match."""
        for rec in records:
            if self(rec[1], rec[2], rec[3]):
                yield rec

    def attach(self, sock: socket.socket, linktype: int) -> None:
        """Attach the program for `linktype` to a bound Linux packet socket (SO_ATTACH_FILTER), then drop what the
        socket queued before it, as libpcap does: a reject-all program first, drain, then the real one."""
        insns = list(self.program(linktype))
        _attach(sock, [(0x06, 0, 0, 0)])  # BPF_RET|BPF_K 0: accept nothing
        try:
            while True:
                sock.recv(1, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        _attach(sock, insns)


def _attach(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER with classic BPF instructions `(code, jt, jf, k)` (struct sock_fprog of struct sock_filter)."""
    prog = (bpf_insn * len(insns))(*insns)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog(len(insns), prog))


def live(iface: str, bpf: BpfFilter | None = None, stop: Callable[[], bool] = lambda: False,
         stats: dict | None = None, on_ready: Callable[[], None] | None = None,
         idle: Callable[[], None] | None = None, buffer_bytes: int | None = None) -> Iterator[Record]:
    """Capture on an interface with scapy's Linux L2 listen socket, `bpf` compiled for the interface's link type and
    attached in the kernel, yielding raw records until `stop()` is true (checked at least every 0.2 s); `idle()` is
    called after each 0.2 s without a packet. `buffer_bytes` sizes the socket's receive queue (what absorbs a burst
    while the reader is busy; scapy's own is 64 KiB): SO_RCVBUFFORCE with CAP_NET_ADMIN, else SO_RCVBUF up to
    net.core.rmem_max; `stats["buffer_bytes"]` is what the kernel granted. `stats["kernel_drops"]` is the socket's
    drop count so far, kept current (every 1024 packets, when idle, at the end). ValueError when libpcap cannot
    compile the filter for this link type."""
    import select

    import scapy.arch  # noqa: F401 - picks this platform's sockets (conf.L2listen)
    from scapy.config import conf
    from scapy.data import ARPHRD_TO_DLT

    _quiet_scapy()
    sock = conf.L2listen(iface=iface)
    arphrd = sock.ins.getsockname()[3]
    linktype = ARPHRD_TO_DLT.get(arphrd, 1)  # e.g. Ethernet and loopback → 1, tun (ARPHRD_NONE) → raw IP
    if bpf is not None:
        try:
            bpf.attach(sock.ins, linktype)
        except BaseException:
            sock.close()
            raise
    stats = stats if stats is not None else {}
    if buffer_bytes:
        try:
            sock.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
        except OSError:  # no CAP_NET_ADMIN: the unprivileged call, capped by net.core.rmem_max
            sock.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    stats["buffer_bytes"] = sock.ins.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    _kernel_drops(sock)  # reading the statistics resets them: drops while the socket was set up do not count
    stats["kernel_drops"] = 0
    if on_ready:
        on_ready()
    n = 0
    try:
        while not stop():
            if not select.select([sock.ins], [], [], 0.2)[0]:
                stats["kernel_drops"] += _kernel_drops(sock)
                if idle is not None:
                    idle()
                continue
            try:
                _cls, data, ts = sock.recv_raw(SNAPLEN)
            except (OSError, InterruptedError):
                continue
            if data is not None:
                n += 1
                if not n & 1023:
                    stats["kernel_drops"] += _kernel_drops(sock)
                yield (ts or time.time()), data, len(data), linktype
    finally:
        stats["kernel_drops"] += _kernel_drops(sock)
        sock.close()


def _kernel_drops(sock: object) -> int:
    """PACKET_STATISTICS drops for a Linux packet socket since the last call (the kernel resets them on each read;
    0 when unavailable)."""
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
