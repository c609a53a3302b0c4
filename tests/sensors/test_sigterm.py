"""`soc sensor pcap` stopped by SIGTERM mid-read: the open flows and the pending batch are stored, the summary is
printed, and what is stored is exactly what the sensor makes of the packets it read (independent truth: the same
capture cut after that many packets by a plain struct copy, read to its end)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

SOC = str(Path(sys.executable).with_name("soc"))
VOLATILE = ("event.id", "event.ingested", "log.file.path")


def _cut(src: Path, dst: Path, packets: int) -> int:
    """Copy the global header and the first `packets` records of a little-endian microsecond pcap; return the
    number of records in `src`."""
    data = src.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "build_bench_pcap.py writes little-endian microsecond pcap"
    off, n, end = 24, 0, None
    while off + 16 <= len(data):
        if n == packets:
            end = off
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        off += 16 + caplen
        n += 1
    dst.write_bytes(data[:end if end is not None else off])
    return n


def _stored(db: Path) -> list[str]:
    """Every stored event without its path-dependent fields, canonical and sorted."""
    out = []
    for (doc,) in sqlite3.connect(db).execute("SELECT doc FROM events"):
        ev = json.loads(doc)
        for k in VOLATILE:
            ev.pop(k, None)
        out.append(json.dumps(ev, sort_keys=True))
    return sorted(out)


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as con:
            return con.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.Error:  # not created yet, or locked by the writer
        return 0


@pytest.mark.corpus
@pytest.mark.parametrize("processes", ["1", "2"])
def test_sigterm_mid_read_stores_every_flow_of_the_packets_read(corpus: Path, soc_env: Path, processes: str) -> None:
    pcap = soc_env / "bench.pcap"
    subprocess.run([sys.executable, str(corpus.parent / "tools" / "build_bench_pcap.py"), "6", str(pcap),
                    str(corpus / "pcaps")], check=True, capture_output=True)
    db = soc_env / "stopped.db"
    proc = subprocess.Popen([SOC, "sensor", "pcap", str(pcap), "--store", f"sqlite:///{db}", "--json",
                             "--processes", processes], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    deadline = time.monotonic() + 120
    while _count(db) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first batch is stored: the reader is well inside the capture
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err  # partial: the input was not read to its end
    file_line, summary = (json.loads(x) for x in out.strip().splitlines())
    assert summary["stopped_by"] == "SIGTERM" and "stopped by SIGTERM" in err
    read = file_line["packets_read"]
    total = _cut(pcap, soc_env / "cut.pcap", read)
    assert 0 < read < total, "SIGTERM arrived after the whole capture was read: the test proves nothing"
    assert file_line["flows_emitted"] > 0 and summary["spooled_events"] == 0

    truth_db = soc_env / "cut.db"
    done = subprocess.run([SOC, "sensor", "pcap", str(soc_env / "cut.pcap"), "--store", f"sqlite:///{truth_db}",
                           "--json", "--processes", "1"], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    truth_file = json.loads(done.stdout.strip().splitlines()[0])
    assert truth_file["packets_read"] == read and truth_file["flows_emitted"] == file_line["flows_emitted"]
    stopped, truth = _stored(db), _stored(truth_db)
    assert summary["written"] == len(stopped) and len(stopped) == len(truth)
    assert stopped == truth  # every flow and application event of the packets read, nothing else
