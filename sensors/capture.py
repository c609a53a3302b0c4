"""Packet sources: pcap/pcapng files (`sensors.pcapfile`, read past damage), live interfaces
through scapy's L2 listen socket, and BPF filtering compiled by the libpcap that the `cypcap` wheel ships (applied
with `pcap_offline_filter` to files, attached to the socket in the kernel for live capture).

Every source yields records `(ts: float, data: bytes, wirelen: int, linktype: int)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator

import cypcap
from scapy.data import DLT_RAW, DLT_RAW_ALT, SO_ATTACH_FILTER
from scapy.libs.structures import bpf_insn, sock_fprog

from .pcapfile import SNAPLEN, CaptureError, Record, read_file
from .pcapfile import quiet_scapy as _quiet_scapy

__all__ = ["SNAPLEN", "BpfFilter", "CaptureError", "NoSuchInterface", "Record", "file_size", "live", "read_file"]
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


class NoSuchInterface(ValueError):
    """The interface to capture on does not exist."""


def _open(iface: str, bpf: BpfFilter | None, buffer_bytes: int | None) -> tuple[object, int, int]:
    """scapy's L2 listen socket on `iface`, the filter attached and the queue sized: (socket, link type, granted
    queue bytes); the drop counter is reset, so drops while it was set up do not count."""
    import scapy.arch  # noqa: F401 - picks this platform's sockets (conf.L2listen)
    from scapy.config import conf
    from scapy.data import ARPHRD_TO_DLT

    _quiet_scapy()
    try:
        sock = conf.L2listen(iface=iface)
    except ValueError as exc:  # scapy: "Interface 'x' not found !"
        raise NoSuchInterface(f"{iface}: no such network interface") from exc
    try:
        arphrd = sock.ins.getsockname()[3]
        linktype = ARPHRD_TO_DLT.get(arphrd, 1)  # e.g. Ethernet and loopback → 1, tun (ARPHRD_NONE) → raw IP
        if bpf is not None:
            bpf.attach(sock.ins, linktype)
        if buffer_bytes:
            try:
                sock.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
            except OSError:  # no CAP_NET_ADMIN: the unprivileged call, capped by net.core.rmem_max
                sock.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        granted = sock.ins.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except BaseException:
        sock.close()
        raise
    _kernel_drops(sock)
    return sock, linktype, granted


def live(iface: str, bpf: BpfFilter | None = None, stop: Callable[[], bool] = lambda: False,
         stats: dict | None = None, on_ready: Callable[[], None] | None = None,
         idle: Callable[[], None] | None = None, buffer_bytes: int | None = None,
         reader_process: bool = False) -> Iterator[Record]:
    """Capture on an interface with scapy's Linux L2 listen socket, `bpf` compiled for the interface's link type and
    attached in the kernel, yielding raw records until `stop()` is true (checked at least every 0.2 s); `idle()` is
    called after each 0.2 s without a packet. `buffer_bytes` sizes the socket's receive queue (what absorbs a burst
    while the reader is busy; scapy's own is 64 KiB): SO_RCVBUFFORCE with CAP_NET_ADMIN, else SO_RCVBUF up to
    net.core.rmem_max; `stats["buffer_bytes"]` is what the kernel granted. `stats["kernel_drops"]` is the socket's
    drop count so far, kept current (every 1024 packets, when idle, at the end). ValueError when libpcap cannot
    compile the filter for this link type.

    `reader_process`: a forked process of its own reads the socket and hands the records over a pipe, so the queue
    is drained while this one decodes, detects and stores (the second core; the records read are buffered in that
    process, up to 256 MB, before the kernel drops). On stop, the records it has read are still yielded."""
    if reader_process:
        yield from _live_via_process(iface, bpf, stop, stats, on_ready, idle, buffer_bytes)
        return
    import select

    sock, linktype, granted = _open(iface, bpf, buffer_bytes)
    stats = stats if stats is not None else {}
    stats["buffer_bytes"], stats["kernel_drops"] = granted, 0
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


# the reader process's stream: a header (time, wire length, captured length, link type) and the frame; link types
# at or above 0xFFFD carry a message instead: the kernel drops since the last one (in `wirelen`), ready (the queue
# granted in `wirelen`, the link type in `caplen`), or an error (kind in `wirelen`, the text as the frame)
_HEAD = struct.Struct("<dIIH")
_DROPS, _READY, _ERROR = 0xFFFF, 0xFFFE, 0xFFFD
_HELD_MAX = 256 << 20  # bytes the reader process holds for a busy consumer before it leaves packets to the kernel
F_SETPIPE_SZ = 1031
PACKET_AUXDATA, SO_TIMESTAMPNS = 8, 35  # linux/if_packet.h, asm-generic/socket.h
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 1 << 4, 1 << 6
CMSG_SPACE = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(16)  # struct tpacket_auxdata, struct timespec
_AUX = struct.Struct("=IIIHHHH").unpack_from
_TAG = struct.Struct("!HH").pack
_TIMESPEC = struct.Struct("=qq").unpack_from


def _reader(out_fd: int, ctl_fd: int, parent_ends: tuple[int, int], iface: str, bpf: BpfFilter | None,
            buffer_bytes: int | None) -> None:
    """The reader process: socket → pipe, until the control pipe closes; then the last drops and EOF."""
    import select

    for fd in parent_ends:  # inherited: the control pipe would never close while this process holds its write end
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the consumer decides when to stop (it closes the control pipe)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    head = _HEAD.pack
    held = bytearray()
    try:
        sock, linktype, granted = _open(iface, bpf, buffer_bytes)
    except ValueError as exc:
        os.write(out_fd, head(0.0, 3 if isinstance(exc, NoSuchInterface) else 1, 0, _ERROR) + str(exc).encode())
        return
    except Exception as exc:  # noqa: BLE001 - no such interface, no permission, …: the consumer raises OSError
        os.write(out_fd, head(0.0, 2, 0, _ERROR) + str(exc).encode())
        return
    held += head(0.0, granted, linktype, _READY)
    os.set_blocking(out_fd, False)
    sock.ins.setblocking(False)
    ins, n, stopping = sock.ins, 0, False
    recvmsg = ins.recvmsg  # scapy turned PACKET_AUXDATA and SO_TIMESTAMPNS on
    while not stopping:
        readable, writable, _ = select.select([ins, ctl_fd] if len(held) < _HELD_MAX else [ctl_fd],
                                              [out_fd] if held else [], [], 0.2)
        if ctl_fd in readable:
            stopping = True  # read what the socket holds once more, then finish
        if ins in readable or stopping:
            for _ in range(4096):
                try:  # scapy's recv_raw, without its per-frame overhead: the frame, the VLAN tag, the time
                    data, anc, _flags, _addr = recvmsg(SNAPLEN, CMSG_SPACE)
                except BlockingIOError:
                    break
                except (OSError, InterruptedError):
                    continue
                ts = 0.0
                for level, kind, cdata in anc:
                    if kind == PACKET_AUXDATA and level == SOL_PACKET and len(cdata) >= 20:
                        status, _len, _snap, _mac, _net, tci, tpid = _AUX(cdata)
                        if tci or status & TP_STATUS_VLAN_VALID:  # the kernel took the tag out: put it back
                            tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                            data = data[:12] + _TAG(tpid, tci) + data[12:]
                    elif kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET and len(cdata) == 16:
                        sec, nsec = _TIMESPEC(cdata)
                        ts = sec + nsec * 1e-9
                held += head(ts or time.time(), len(data), len(data), linktype)
                held += data
                n += 1
                if not n & 1023:
                    held += head(0.0, _kernel_drops(sock), 0, _DROPS)
        elif not readable and not writable:
            held += head(0.0, _kernel_drops(sock), 0, _DROPS)  # idle: keep the consumer's count current
        if writable or stopping:
            with contextlib.suppress(BlockingIOError):  # the consumer is busy: held until it reads
                del held[:os.write(out_fd, held[:1 << 20])]
    held += head(0.0, _kernel_drops(sock), 0, _DROPS)
    sock.close()
    os.set_blocking(out_fd, True)
    while held:
        del held[:os.write(out_fd, held[:1 << 20])]


def _live_via_process(iface: str, bpf: BpfFilter | None, stop: Callable[[], bool], stats: dict | None,
                      on_ready: Callable[[], None] | None, idle: Callable[[], None] | None,
                      buffer_bytes: int | None) -> Iterator[Record]:
    """`live` with the socket read by a forked reader process (see `_reader`)."""
    import multiprocessing
    import select

    stats = stats if stats is not None else {}
    stats.setdefault("kernel_drops", 0)
    data_r, data_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(data_w, F_SETPIPE_SZ, 1 << 20)  # up to /proc/sys/fs/pipe-max-size
    child = multiprocessing.get_context("fork").Process(
        target=_reader, args=(data_w, ctl_r, (data_r, ctl_w), iface, bpf, buffer_bytes), name="soc-capture",
        daemon=True)
    child.start()
    os.close(data_w)
    os.close(ctl_r)
    unpack, size = _HEAD.unpack_from, _HEAD.size
    buf, pos, eof, stopping = bytearray(), 0, False, False

    def stop_reader() -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            os.close(ctl_w)

    try:
        while not eof:
            if not stopping and stop():
                stop_reader()
            if not select.select([data_r], [], [], 0.2)[0]:
                if idle is not None:
                    idle()
                continue
            chunk = os.read(data_r, 4 << 20)
            if not chunk:
                eof = True
                break
            del buf[:pos]
            buf += chunk
            pos, end = 0, len(buf)
            while pos + size <= end:
                ts, wirelen, caplen, linktype = unpack(buf, pos)
                if linktype < _ERROR:
                    stop_at = pos + size + caplen
                    if stop_at > end:
                        break
                    data = bytes(buf[pos + size:stop_at])
                    pos = stop_at
                    yield ts, data, wirelen, linktype
                    if not stopping and stop():
                        stop_reader()
                    continue
                if linktype == _DROPS:
                    stats["kernel_drops"] += wirelen
                    pos += size
                elif linktype == _READY:
                    stats["buffer_bytes"] = wirelen
                    pos += size
                    if on_ready:
                        on_ready()
                else:  # an error: the rest of the stream is its message
                    message = bytes(buf[pos + size:]) + _read_all(data_r)
                    eof = True
                    if wirelen in (1, 3):
                        raise (ValueError if wirelen == 1 else NoSuchInterface)(message.decode(errors="replace"))
                    raise OSError(message.decode(errors="replace"))
    finally:
        stop_reader()
        if not eof:  # stopped early (count): the rest is not yielded, its drop counts still are
            rest = bytes(buf[pos:]) + _read_all(data_r)
            off = 0
            while off + size <= len(rest):
                _ts, wirelen, caplen, linktype = unpack(rest, off)
                if linktype == _DROPS:
                    stats["kernel_drops"] += wirelen
                off += size + (caplen if linktype < _ERROR else 0)
        os.close(data_r)
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


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
