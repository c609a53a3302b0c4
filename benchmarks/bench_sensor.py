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
t = time.perf_counter()
with open("/dev/null", "w") as out:
    for ev in sensor.run(read_file(sys.argv[1])):
        if ndjson:
            out.write(dumps(ev) + "\\n")
        n += 1
dt = time.perf_counter() - t
print(json.dumps({"packets": sensor.stats()["packets_read"], "seconds": dt, "events": n, "stats": sensor.stats()}))
"""

SCAPY = """
import json, sys, time
from scapy.main import load_layer
from scapy.utils import PcapReader
load_layer("tls")
load_layer("http")
limit, n = int(sys.argv[2]), 0
t = time.perf_counter()
for pkt in PcapReader(sys.argv[1]):
    pkt.summary()  # forces full dissection of every layer
    n += 1
    if n >= limit:
        break
print(json.dumps({"packets": n, "seconds": time.perf_counter() - t}))
"""

STRUCT = """
import json, struct, sys, time
t = time.perf_counter()
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
print(json.dumps({"packets": n, "seconds": time.perf_counter() - t}))
"""


def run_child(code: str, *args: str) -> tuple[dict, float]:
    """Run a contender in a fresh interpreter; return its JSON result and its peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(proc.stdout.strip().splitlines()[-1]), max(rss, before) / 1024


def rss_of(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of an external command, measured with /usr/bin/time-like wait4."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed with {status}")
    return time.perf_counter() - t, usage.ru_maxrss / 1024


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
    soc_rate = soc["packets"] / soc["seconds"]
    packets = soc["packets"]
    soc_json, _ = _soc(args.pcap, "ndjson")
    json_rate = packets / soc_json["seconds"]

    cmd = [tshark, "-n", "-r", str(args.pcap), "-T", "ek"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    ts_sec, ts_rss = rss_of(cmd)
    ts_rate = packets / ts_sec

    scapy, _ = run_child(SCAPY, str(args.pcap), str(args.scapy_packets))
    scapy_rate = scapy["packets"] / scapy["seconds"]
    struct_res, _ = run_child(STRUCT, str(args.pcap))
    struct_rate = struct_res["packets"] / struct_res["seconds"]

    print(f"pcap: {args.pcap} ({size_mb:.0f} MB, {packets} packets); soc events: {soc['events']}")
    print(f"{'contender':34} {'packets/s':>12} {'soc ratio':>10} {'peak RSS MB':>12}")
    print(f"{'soc sensor (flat ECS event dicts)':34} {soc_rate:12,.0f} {'1.00':>10} {soc_rss:12.0f}")
    print(f"{'soc sensor + json.dumps per event':34} {json_rate:12,.0f} {json_rate / soc_rate:9.2f}x {'':>12}")
    print(f"{'tshark -T ek, 18 -e fields':34} {ts_rate:12,.0f} {soc_rate / ts_rate:9.2f}x {ts_rss:12.0f}")
    label = f"scapy PcapReader (first {scapy['packets']})"
    print(f"{label:34} {scapy_rate:12,.0f} {soc_rate / scapy_rate:9.2f}x {'':>12}")
    print(f"{'struct header loop':34} {struct_rate:12,.0f} {soc_rate / struct_rate:9.2%} {'':>12}")
    print(f"goals: >= 5x tshark: {soc_rate / ts_rate >= 5}; >= 30x scapy: {soc_rate / scapy_rate >= 30}; "
          f">= 40% of struct loop: {soc_rate / struct_rate >= 0.4}; RSS <= 200 MB: {soc_rss <= 200}")
    print(f"(ratios use the dict figure; with json.dumps: {json_rate / ts_rate:.2f}x tshark)")
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
