"""Live capture benchmark: the bench pcap replayed over a veth pair at rising rates, captured by `soc sensor live`
(the whole path: decoding, flows, policy, Sigma, SQLite store) and by `tshark -i` with the same 18 fields as
bench_sensor.py; prints, for each, the highest rate at which every packet was read (zero drops).

    sudo .venv/bin/python benchmarks/bench_live.py [--rounds 6] [--loops 3] [--rates 5000,10000,…,0] [--buffers 2,32]

Needs root: it creates two network namespaces (sender and capture) joined by a veth pair, IPv6 off so the only
frames are the replayed ones. tcpreplay replays (`--pps RATE`, 0 is `--topspeed`), the pcap looped 3 times so a rate
must be sustained, not absorbed by the capture buffer, measured at the same size for both: 2 MB (dumpcap's
default) and 32 MB (soc's).
tcpreplay and tshark are installed with apt-get when absent. The pcap is built by
../shared/tools/build_bench_pcap.py into bench-data/.
A rate's result is the packets each reader saw (soc: its summary's packets_read, kernel drops reported beside;
tshark: the documents it printed) against the packets tcpreplay sent, once the reader has caught up (its count
unchanged for 3 s). CPU seconds are the reader's own (wait4 rusage, tshark's dumpcap included).
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT.parent / "shared" / "tools" / "build_bench_pcap.py"
SOC = str(Path(sys.executable).with_name("soc"))
TSHARK_FIELDS = ["frame.time_epoch", "frame.len", "vlan.id", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.proto",
                 "tcp.srcport", "tcp.dstport", "tcp.flags", "udp.srcport", "udp.dstport", "icmp.type",
                 "dns.qry.name", "http.host", "http.request.uri", "tls.handshake.extensions_server_name"]
CLONE_NEWNET = 0x40000000
SETTLE = 3.0  # seconds a reader's count must stay unchanged to call it caught up


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def in_netns(name: str, fn):  # noqa: ANN001, ANN201 - any call
    """Run `fn()` with this thread in network namespace `name` (setns), then back: sockets it makes stay there."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/self/ns/net") as home, open(f"/var/run/netns/{name}") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            return fn()
        finally:
            libc.setns(home.fileno(), CLONE_NEWNET)


def ensure(package: str, binary: str) -> str:
    exe = shutil.which(binary)
    if exe is None:
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, check=True)
        exe = shutil.which(binary)
    if exe is None:
        raise SystemExit(f"{binary} is not installed and apt-get could not install {package}")
    return exe


class Namespaces:
    """Sender namespace with veth-a, capture namespace with veth-b: no addresses, IPv6 off, MTU for jumbo frames."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.tx, self.rx = f"socbench-tx-{tag}", f"socbench-rx-{tag}"

    def __enter__(self) -> Namespaces:
        ip("netns", "add", self.tx)
        ip("netns", "add", self.rx)
        ip("link", "add", "veth-a", "netns", self.tx, "type", "veth", "peer", "name", "veth-b", "netns", self.rx)
        for ns, dev in ((self.tx, "veth-a"), (self.rx, "veth-b")):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True, capture_output=True)
            ip("-n", ns, "link", "set", dev, "mtu", "65535")
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")  # soc's metrics port
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.tx, self.rx):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def replay(ns: Namespaces, tcpreplay: str, pcap: Path, rate: int, loops: int) -> tuple[int, float]:
    """Packets sent and the rate tcpreplay reports achieving (pps)."""
    speed = ["--topspeed"] if rate == 0 else ["--pps", str(rate)]
    out = subprocess.run(["ip", "netns", "exec", ns.tx, tcpreplay, "-i", "veth-a", "--loop", str(loops), *speed,
                          str(pcap)],
                         capture_output=True, text=True, check=True).stdout
    sent = int(re.search(r"Successful packets:\s+(\d+)", out).group(1))
    pps = float(re.search(r"Rated:.*?([\d.]+) pps", out).group(1))
    return sent, pps


def settle(count, target: int) -> int:
    """Poll `count()` until it reaches `target` or stays unchanged for SETTLE seconds."""
    last, since = -1, time.monotonic()
    while True:
        n = count()
        if n >= target:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= SETTLE:
            return n
        time.sleep(0.25)


def wait_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if needle in text:
            return text
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[3]} exited: {text}")
        time.sleep(0.1)
    raise SystemExit(f"{proc.args[3]} did not start: {path.read_text()}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> float:
    """Stop with `sig`, then the process's CPU seconds (user + system, children included)."""
    proc.send_signal(sig)
    _, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def run_soc(ns: Namespaces, tcpreplay: str, pcap: Path, rate: int, work: Path, buffer_mb: int, loops: int,
            processes: int) -> dict:
    tag = f"soc-{processes}-{buffer_mb}-{rate}"
    err, out = work / f"{tag}.err", work / f"{tag}.out"
    proc = subprocess.Popen(["ip", "netns", "exec", ns.rx, SOC, "sensor", "live", "--iface", "veth-b", "--json",
                             "--no-ring", "--metrics-port", "0", "--sensor-name", "bench", "--buffer-size",
                             str(buffer_mb), "--processes", str(processes), "--store", f"sqlite:///{work / tag}.db"],
                            stdout=out.open("w"), stderr=err.open("w"), env=os.environ | {"SOC_HOME": str(work)})
    try:
        return _measure_soc(ns, tcpreplay, pcap, rate, loops, proc, err, out)
    finally:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _measure_soc(ns: Namespaces, tcpreplay: str, pcap: Path, rate: int, loops: int, proc: subprocess.Popen,
                 err: Path, out: Path) -> dict:
    url = re.search(r"metrics on (\S+)", wait_line(err, "capturing on veth-b", proc)).group(1)

    port = int(url.rsplit(":", 1)[1].split("/")[0])

    def read() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        in_netns(ns.rx, conn.connect)  # the socket is made in the capture namespace, used from here
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        vals = dict(re.findall(r"^(soc_sensor_\w+) ([\d.e+]+)$", text, re.M))
        return int(float(vals["soc_sensor_packets_total"]) + float(vals["soc_sensor_kernel_drops_total"]))

    sent, pps = replay(ns, tcpreplay, pcap, rate, loops)
    settle(read, sent)
    cpu = stop(proc)
    report = json.loads(out.read_text().strip().splitlines()[-1])
    return {"sent": sent, "pps": pps, "read": report["packets_read"], "kernel_drops": report["kernel_drops"],
            "events": sum(report["events"].values()), "cpu": cpu}


def run_tshark(ns: Namespaces, tcpreplay: str, tshark: str, pcap: Path, rate: int, work: Path, buffer_mb: int,
               loops: int) -> dict:
    err, out = work / f"tshark-{buffer_mb}-{rate}.err", work / f"tshark-{buffer_mb}-{rate}.out"
    cmd = ["ip", "netns", "exec", ns.rx, tshark, "-n", "-i", "veth-b", "-B", str(buffer_mb), "-T", "ek"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    proc = subprocess.Popen(cmd, stdout=out.open("w"), stderr=err.open("w"))
    try:
        return _measure_tshark(ns, tcpreplay, rate, loops, pcap, proc, err, out)
    finally:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _measure_tshark(ns: Namespaces, tcpreplay: str, rate: int, loops: int, pcap: Path, proc: subprocess.Popen,
                    err: Path, out: Path) -> dict:
    wait_line(err, "Capturing on", proc)

    def read() -> int:  # -T ek: an index line and a document line per packet
        with out.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) // 2

    sent, pps = replay(ns, tcpreplay, pcap, rate, loops)
    settle(read, sent)
    cpu = stop(proc, signal.SIGINT)  # tshark's own way to stop: dumpcap hands over what it holds
    dropped = re.search(r"(\d+) packets? dropped", err.read_text())
    return {"sent": sent, "pps": pps, "read": read(), "kernel_drops": int(dropped.group(1)) if dropped else 0,
            "events": None, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="build_bench_pcap.py rounds (6: 62,442 packets)")
    ap.add_argument("--pcap", type=Path, default=None)
    ap.add_argument("--rates", default="5000,10000,20000,40000,0",
                    help="packets/s, rising; 0 is tcpreplay --topspeed")
    ap.add_argument("--loops", type=int, default=3, help="tcpreplay --loop: the replay outlasts the buffers")
    ap.add_argument("--buffers", default="2,32",
                    help="capture buffers (MB) to measure, each for both readers (soc --buffer-size, tshark -B): "
                         "2 is dumpcap's default, 32 soc's")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_live.py needs root: it creates network namespaces")
    pcap = args.pcap or ROOT / "bench-data" / f"bench-{args.rounds}.pcap"
    if not pcap.exists():
        pcap.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(TOOL), str(args.rounds), str(pcap)], check=True)
    tcpreplay, tshark = ensure("tcpreplay", "tcpreplay"), ensure("tshark", "tshark")
    rates = [int(r) for r in args.rates.split(",")]
    readers = [(f"{kind} {mb}MB", kind, int(mb)) for mb in args.buffers.split(",") for kind in ("soc", "tshark")]
    readers.insert(0, (f"soc-1proc {args.buffers.split(',')[0]}MB", "soc-1proc", int(args.buffers.split(",")[0])))
    load = os.getloadavg()
    print(f"{pcap.name} x {args.loops} loops; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{os.cpu_count()} cores")
    print(f"{'reader':15} {'asked pps':>9} {'sent pps':>9} {'sent':>7} {'read':>7} {'lost':>7} {'cpu s':>6}")
    best: dict[str, float | None] = {label: None for label, _, _ in readers}
    first_loss: dict[str, float | None] = dict(best)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, Namespaces() as ns:
        work = Path(tmp)
        for rate in rates:
            for label, kind, mb in readers:
                if first_loss[label] is not None:
                    continue  # a reader that lost packets at a lower rate is not tried higher
                if kind == "tshark":
                    r = run_tshark(ns, tcpreplay, tshark, pcap, rate, work, mb, args.loops)
                else:  # soc: the reader process (--processes 2, the default on 2 cores) or one process
                    r = run_soc(ns, tcpreplay, pcap, rate, work, mb, args.loops, 1 if kind == "soc-1proc" else 2)
                lost = r["sent"] - r["read"]
                print(f"{label:15} {rate or 'top':>9} {r['pps']:>9.0f} {r['sent']:>7} {r['read']:>7} {lost:>7} "
                      f"{r['cpu']:>6.2f}  (drops reported: {r['kernel_drops']})", flush=True)
                if lost == 0:  # top speed may come out below an asked rate: the highest rate passed
                    best[label] = max(best[label] or 0.0, r["pps"])
                else:
                    first_loss[label] = r["pps"]
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for label, _, _ in readers:
        b, f = best[label], first_loss[label]
        print(f"{label}: highest rate with zero drops {'none tried' if b is None else f'{b:,.0f} pps'}"
              + (f", first loss at {f:,.0f} pps" if f else ", no loss at any rate tried"))
    for mb in args.buffers.split(","):
        s, t = best[f"soc {mb}MB"], best[f"tshark {mb}MB"]
        if s and t:
            print(f"{mb} MB buffers: soc / tshark zero-drop rate = {s / t:.2f}x")


if __name__ == "__main__":
    main()
