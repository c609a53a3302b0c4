#!/usr/bin/env python3
"""Flood benchmark (issue 13 §5): `soc sensor pcap` on the spoofed SYN flood replicated to >= 1,000,000 packets (a new
source address per packet: one flow per packet, the flow table's worst case) against tshark's flow accounting
(`-q -z conv,tcp`) on the same file, in one run. Prints events/s, CPU, peak RSS, flow-table evictions, alerts written
and the ratio, with the load average.

    python benchmarks/bench_flood.py [--copies 27] [--pcap bench-data/synflood-1m.pcap]

The capture is built from ../shared/data/ddos/pkt.TCP.synflood.spoofed.pcap into bench-data/ (git-ignored) when
missing: copy k is shifted by k x 24 s (the capture's length) and packet i of it gets source 100.64.0.0 + n (n the
packet's ordinal), with the IPv4 header checksum recomputed.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(os.environ.get("SOC_CORPUS", ROOT.parent / "shared" / "data")) / "ddos" / "pkt.TCP.synflood.spoofed.pcap"
BASE = 0x64400000  # 100.64.0.0: shared address space, never a real source of the original capture


def _checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def build(src: Path, dst: Path, copies: int, shift: float = 24.0) -> int:
    """Write ``copies`` shifted copies of ``src`` (classic pcap, Ethernet, IPv4) to ``dst``; return packets written."""
    raw = src.read_bytes()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    records, off = [], 24
    while off + 16 <= len(raw):
        sec, frac, caplen, wirelen = struct.unpack_from(endian + "IIII", raw, off)
        records.append((sec, frac, wirelen, raw[off + 16: off + 16 + caplen]))
        off += 16 + caplen
    n = 0
    tmp = dst.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write(raw[:24])
        for k in range(copies):
            add = int(shift * k)
            for sec, frac, wirelen, data in records:
                frame = bytearray(data)
                if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
                    ihl = (frame[14] & 15) * 4
                    frame[26:30] = struct.pack("!I", BASE + n)
                    frame[24:26] = b"\x00\x00"
                    frame[24:26] = struct.pack("!H", _checksum(bytes(frame[14:14 + ihl])))
                out.write(struct.pack(endian + "IIII", sec + add, frac, len(frame), wirelen))
                out.write(frame)
                n += 1
    tmp.replace(dst)
    return n


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, float, str]:
    """Wall s, CPU s (user + system, children included) and peak RSS (MB) of a command (wait4), and its stdout."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd[0]} exited {os.waitstatus_to_exitcode(status)}")
        out.seek(0)
        text = out.read()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=27, help="27 copies of 37,841 packets = 1,021,707")
    ap.add_argument("--pcap", type=Path, default=ROOT / "bench-data" / "synflood-1m.pcap")
    args = ap.parse_args()
    if not SOURCE.is_file():
        raise SystemExit(f"{SOURCE}: the DDoS corpus is missing (set SOC_CORPUS)")
    if not args.pcap.exists():
        args.pcap.parent.mkdir(parents=True, exist_ok=True)
        build(SOURCE, args.pcap, args.copies)
    sys.path.insert(0, str(ROOT))
    from tests.debian import require

    tshark = require("tshark", "tshark", "the peer of the flood benchmark")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        uri = f"sqlite:///{d}/flood.db"
        env = os.environ | {"SOC_STORE": uri, "XDG_CACHE_HOME": d}
        soc_wall, soc_cpu, soc_rss, out = measure(
            [str(ROOT / ".venv" / "bin" / "soc"), "sensor", "pcap", str(args.pcap), "--json"], env)
        ts_wall, ts_cpu, ts_rss, _ = measure([tshark, "-n", "-r", str(args.pcap), "-q", "-z", "conv,tcp"])
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        stats = next(x for x in lines if x.get("type") == "file")
        summary = next(x for x in lines if x.get("type") == "summary")
        from correlator.query import Query, Term
        from correlator.store import open_store

        st = open_store(uri)
        floods = st.search_alerts(Query([Term("soc.flood.kind", "syn")]), limit=10)
        total_alerts = len(st.search_alerts(Query(), limit=100_000))
        st.close()
    packets, events = stats["packets_read"], summary["events_in"]
    print(f"pcap: {args.pcap} ({args.pcap.stat().st_size / 1e6:.0f} MB, {packets:,} packets, "
          f"{stats['flows_emitted']:,} flows); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores)")
    print(f"{'contender':40} {'pkt/s (CPU)':>12} {'pkt/s (wall)':>13} {'CPU s':>8} {'peak RSS MB':>12}")
    for name, cpu, wall, rss in (("soc sensor pcap (sensor+pipeline+SQLite)", soc_cpu, soc_wall, soc_rss),
                                 ("tshark -q -z conv,tcp", ts_cpu, ts_wall, ts_rss)):
        print(f"{name:40} {packets / cpu:12,.0f} {packets / wall:13,.0f} {cpu:8.1f} {rss:12.0f}")
    print(f"soc: {events / soc_cpu:,.0f} events/s (CPU), {events:,} events stored, flows evicted "
          f"{stats['flows_evicted']:,} (table bound 200,000), alerts written {total_alerts} "
          f"(SYN flood alerts: {len(floods)})")
    if floods:
        print(f"flood alert: {floods[0]['soc.alert.reason']}"[:300])
    print(f"soc / tshark (CPU packets/s): {ts_cpu / soc_cpu:.2f}x; peak RSS soc {soc_rss:.0f} MB vs tshark "
          f"{ts_rss:.0f} MB")


if __name__ == "__main__":
    main()
