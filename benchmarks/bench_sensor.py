#!/usr/bin/env python3
"""Sensor benchmark: soc vs tshark -T ek (same fields), scapy PcapReader (full dissection) and a header-only struct
loop, in one run on the same pcap. Prints packets/s, the ratios and peak RSS (each contender in its own process).

    python benchmarks/bench_sensor.py [--rounds 29] [--pcap bench-data/bench.pcap] [--scapy-packets 30000]

The pcap is built with ../shared/tools/build_bench_pcap.py into bench-data/ (git-ignored) when missing.
tshark is installed with apt-get when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT.parent / "shared" / "tools" / "build_bench_pcap.py"
TSHARK_FIELDS = ["frame.time_epoch", "frame.len", "vlan.id", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.proto",
                 "tcp.srcport", "tcp.dstport", "tcp.flags", "udp.srcport", "udp.dstport", "icmp.type",
                 "dns.qry.name", "http.host", "http.request.uri", "tls.handshake.extensions_server_name"]

SOC = """
import json, sys, time
from sensors.capture import read_file
from sensors.engine import Sensor
ndjson = sys.argv[2] == "ndjson"
sensor = Sensor(sensor_name="bench", source=sys.argv[1])
dumps, n = json.dumps, 0
t, c = time.perf_counter(), time.process_time()
with open("/dev/null", "w") as out:
    for ev in sensor.run(read_file(sys.argv[1])):
        if ndjson:
            out.write(dumps(ev) + "\\n")
        n += 1
dt, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"packets": sensor.stats()["packets_read"], "seconds": dt, "cpu": cpu, "events": n,
                  "stats": sensor.stats()}))
"""

SCAPY = """
import json, sys, time
from scapy.main import load_layer
from scapy.utils import PcapReader
load_layer("tls")
load_layer("http")
limit, n = int(sys.argv[2]), 0
t, c = time.perf_counter(), time.process_time()
for pkt in PcapReader(sys.argv[1]):
    pkt.summary()  # forces full dissection of every layer
    n += 1
    if n >= limit:
        break
print(json.dumps({"packets": n, "seconds": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""

READ = """
import json, sys, time
from sensors.capture import read_file
c, n = time.process_time(), 0
for _ in read_file(sys.argv[1]):
    n += 1
print(json.dumps({"packets": n, "cpu": time.process_time() - c}))
"""

STRUCT = """
import json, struct, sys, time
t, c = time.perf_counter(), time.process_time()
n = 0
unpack_from = struct.unpack_from
with open(sys.argv[1], "rb") as f:
    f.read(24)
    read = f.read
    while True:
        hdr = read(16)
        if len(hdr) < 16:
            break
        sec, usec, caplen, wirelen = unpack_from("<IIII", hdr)
        data = read(caplen)
        etype = unpack_from(">H", data, 12)[0]
        off = 14
        while etype == 0x8100 or etype == 0x88A8:
            etype = unpack_from(">H", data, off + 2)[0]
            off += 4
        if etype == 0x0800 and len(data) >= off + 24:
            ihl = (data[off] & 15) * 4
            proto = data[off + 9]
            src, dst = data[off + 12:off + 16], data[off + 16:off + 20]
            if proto in (6, 17) and len(data) >= off + ihl + 4:
                sport, dport = unpack_from(">HH", data, off + ihl)
        n += 1
print(json.dumps({"packets": n, "seconds": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""


def run_child(code: str, *args: str) -> tuple[dict, float]:
    """Run a contender in a fresh interpreter; return its JSON result and its peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(proc.stdout.strip().splitlines()[-1]), max(rss, before) / 1024


def rss_of(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of an external command (wait4 rusage)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed with {status}")
    return time.perf_counter() - t, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def ensure_pcap(path: Path, rounds: int) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(TOOL), str(rounds), str(path)], check=True)


def ensure_tshark() -> str:
    exe = shutil.which("tshark")
    if exe is None:
        subprocess.run(["apt-get", "install", "-y", "tshark"], check=True, env=os.environ | {
            "DEBIAN_FRONTEND": "noninteractive"})
        exe = shutil.which("tshark")
    if exe is None:
        raise SystemExit("tshark is not installed and apt-get could not install it")
    return exe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=29)
    ap.add_argument("--pcap", type=Path, default=ROOT / "bench-data" / "bench.pcap")
    ap.add_argument("--scapy-packets", type=int, default=30000, help="scapy is measured on the first N packets")
    ap.add_argument("--growth", action="store_true", help="also measure soc's RSS on a 10-round pcap")
    args = ap.parse_args()
    ensure_pcap(args.pcap, args.rounds)
    tshark = ensure_tshark()
    size_mb = args.pcap.stat().st_size / 1e6

    soc, soc_rss = _soc(args.pcap)
    packets = soc["packets"]
    soc_json, _ = _soc(args.pcap, "ndjson")
    cmd = [tshark, "-n", "-r", str(args.pcap), "-T", "ek"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    ts_wall, ts_cpu, ts_rss = rss_of(cmd)
    scapy, _ = run_child(SCAPY, str(args.pcap), str(args.scapy_packets))
    struct_res, _ = run_child(STRUCT, str(args.pcap))

    # CPU time is the measure (the machine is shared: wall time depends on the neighbours); wall is shown too.
    rows = [("soc sensor (flat ECS event dicts)", packets, soc["cpu"], soc["seconds"], soc_rss),
            ("soc sensor + json.dumps per event", packets, soc_json["cpu"], soc_json["seconds"], None),
            ("tshark -T ek, 18 -e fields", packets, ts_cpu, ts_wall, ts_rss),
            (f"scapy PcapReader (first {scapy['packets']})", scapy["packets"], scapy["cpu"], scapy["seconds"], None),
            ("struct header loop", struct_res["packets"], struct_res["cpu"], struct_res["seconds"], None)]
    rate = {name: n / cpu for name, n, cpu, _, _ in rows}
    soc_rate = rate[rows[0][0]]
    print(f"pcap: {args.pcap} ({size_mb:.0f} MB, {packets} packets); soc events: {soc['events']}")
    print(f"{'contender':36} {'pkt/s (CPU)':>12} {'pkt/s (wall)':>13} {'soc is':>9} {'peak RSS MB':>12}")
    for name, n, cpu, wall, rss in rows:
        ratio = soc_rate / rate[name]
        print(f"{name:36} {n / cpu:12,.0f} {n / wall:13,.0f} {ratio:8.2f}x {'' if rss is None else f'{rss:.0f}':>12}")
    ts_ratio = soc_rate / rate[rows[2][0]]
    scapy_ratio = soc_rate / rate[rows[3][0]]
    struct_share = soc_rate / rate[rows[4][0]]
    print(f"soc = {ts_ratio:.2f}x tshark ek (goal 5x), {scapy_ratio:.1f}x scapy (goal 30x), "
          f"{struct_share:.0%} of the struct loop (goal 40%), peak RSS {soc_rss:.0f} MB (goal <= 200 MB)")
    read_cpu = run_child(READ, str(args.pcap))[0]["cpu"]
    print(f"scapy RawPcapReader alone (no decoding): {packets / read_cpu:,.0f} pkt/s = "
          f"{read_cpu / soc['cpu']:.0%} of soc's CPU time")
    if args.growth:
        small = args.pcap.with_name("bench-10.pcap")
        ensure_pcap(small, 10)
        small_res, small_rss = _soc(small)
        print(f"RSS growth: {small_res['packets']} packets -> {small_rss:.0f} MB; {packets} packets -> "
              f"{soc_rss:.0f} MB")


def _soc(pcap: Path, mode: str = "dicts") -> tuple[dict, float]:
    proc = subprocess.Popen([sys.executable, "-c", SOC, str(pcap), mode], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("soc sensor run failed")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


if __name__ == "__main__":
    main()
