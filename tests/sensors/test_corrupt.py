"""Corrupt captures: the damage is located (file, byte offset), everything before it is kept, reading resumes past it,
and `soc sensor pcap` exits 3. Truth: the intact corpus file's records as scapy's own readers give them."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader, RawPcapReader
from typer.testing import CliRunner

from sensors.engine import Sensor
from sensors.pcapfile import read_file
from soc_cli.main import app

runner = CliRunner()
PROBLEMS = ("malformed", "truncated", "unknown_link_type", "non_ip", "fragments")


def truth(path: Path) -> list[tuple]:
    """The records of an intact capture, read with scapy's readers (not soc's)."""
    reader = RawPcapReader(str(path))
    out = []
    with reader:
        for data, meta in reader:
            if isinstance(reader, RawPcapNgReader):
                out.append((((meta.tshigh << 32) | meta.tslow) / meta.tsresol, data, meta.wirelen, meta.linktype))
            else:
                out.append((meta.sec + meta.usec * 1e-6, data, meta.wirelen, reader.linktype))
    return out


def pcap_offsets(raw: bytes) -> list[int]:
    """Byte offsets of the records of an intact little-endian pcap."""
    out, off = [], 24
    while off < len(raw):
        out.append(off)
        off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
    return out


def pcapng_packet_blocks(raw: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the enhanced packet blocks of an intact little-endian pcapng."""
    out, off = [], 0
    while off < len(raw):
        btype, blen = struct.unpack_from("<II", raw, off)
        if btype == 6:
            out.append((off, blen))
        off += blen
    return out


def read(path: Path) -> tuple[list[tuple], dict]:
    stats: dict = {}
    return list(read_file(str(path), stats)), stats


def located(stats: dict, path: Path) -> list[int]:
    """The byte offsets named by the damage messages (each must start with `FILE: byte offset N: `)."""
    offsets = []
    for message in stats["damage"]:
        m = re.match(rf"{re.escape(str(path))}: byte offset (\d+): \S", message)
        assert m, message
        offsets.append(int(m.group(1)))
    return offsets


@pytest.fixture
def ftp(corpus: Path) -> Path:
    return corpus / "pcaps" / "zk_ftp-bruteforce.pcap"


@pytest.fixture
def dvwa(corpus: Path) -> Path:
    return corpus / "pcaps" / "zk_http-dvwa-login.pcapng"


def test_pcap_record_claiming_a_megabyte_is_skipped(ftp: Path, tmp_path: Path) -> None:
    """Issue 10's reproduction: record 300 of 606 claims 0x100000 bytes; the 605 others are read, exactly."""
    raw = ftp.read_bytes()
    want, offsets = truth(ftp), pcap_offsets(raw)
    assert len(want) == 606
    bad = bytearray(raw)
    struct.pack_into("<I", bad, offsets[300] + 8, 0x100000)
    path = tmp_path / "caplen.pcap"
    path.write_bytes(bad)
    got, stats = read(path)
    assert got == want[:300] + want[301:]
    assert located(stats, path) == [offsets[300]] and "caplen 1048576" in stats["damage"][0]
    assert stats["damaged_regions"] == 1 and stats["damaged_bytes"] == offsets[301] - offsets[300]
    assert 24 + sum(16 + len(r[1]) for r in got) + stats["damaged_bytes"] == len(bad)  # every byte accounted
    sensor = Sensor(sensor_name="t")
    list(sensor.run(got))
    s = sensor.stats()
    assert s["packets_read"] == 605 == s["packets_decoded"] + sum(s[k] for k in PROBLEMS)


def test_pcap_garbage_between_records_loses_nothing(ftp: Path, tmp_path: Path) -> None:
    raw = ftp.read_bytes()
    at = pcap_offsets(raw)[123]
    path = tmp_path / "inserted.pcap"
    path.write_bytes(raw[:at] + b"\xff" * 777 + raw[at:])
    got, stats = read(path)
    assert got == truth(ftp)
    assert located(stats, path) == [at] and stats["damaged_bytes"] == 777 and f"resumed at byte offset {at + 777}" in \
        stats["damage"][0]


def test_pcap_damage_at_the_first_record(ftp: Path, tmp_path: Path) -> None:
    """No earlier timestamp to compare with: the next header must still be followed by a plausible one."""
    raw = bytearray(ftp.read_bytes())
    struct.pack_into("<I", raw, 24 + 8, 0xFFFFFFF0)
    path = tmp_path / "first.pcap"
    path.write_bytes(raw)
    got, stats = read(path)
    assert got == truth(ftp)[1:] and located(stats, path) == [24]


def test_pcap_big_endian_nanosecond(ftp: Path, tmp_path: Path) -> None:
    """The same file rewritten big-endian with nanosecond timestamps, record 10 damaged."""
    raw, want = ftp.read_bytes(), truth(ftp)
    out = bytearray(struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
    for i, off in enumerate(pcap_offsets(raw)):
        sec, usec, caplen, wirelen = struct.unpack_from("<IIII", raw, off)
        out += struct.pack(">IIII", sec, usec * 1000, 0x7FFFFFFF if i == 10 else caplen, wirelen)
        out += raw[off + 16:off + 16 + caplen]
    path = tmp_path / "be.pcap"
    path.write_bytes(out)
    got, stats = read(path)
    assert [r[1:] for r in got] == [r[1:] for r in want[:10] + want[11:]]
    assert all(abs(a[0] - b[0]) < 1e-6 for a, b in zip(got, want[:10] + want[11:], strict=True))
    assert stats["damaged_regions"] == 1


def test_pcap_cut_inside_a_record(ftp: Path, tmp_path: Path) -> None:
    raw = ftp.read_bytes()
    want, offsets = truth(ftp), pcap_offsets(raw)
    path = tmp_path / "cut.pcap"
    path.write_bytes(raw[:offsets[400] + 16 + 5])  # header and 5 bytes of record 400
    got, stats = read(path)
    assert got[:400] == want[:400] and got[400][1] == want[400][1][:5] and len(got) == 401
    assert located(stats, path) == [offsets[400]] and stats["file_truncated"] == 1
    path.write_bytes(raw[:offsets[400] + 9])  # inside record 400's header
    got, stats = read(path)
    assert got == want[:400] and located(stats, path) == [offsets[400]] and stats["damaged_bytes"] == 9


@pytest.mark.parametrize("blen", [lambda n: n + 0x400, lambda n: 0x7FFFFFF0, lambda n: n + 2, lambda n: 4])
def test_pcapng_bogus_block_length(dvwa: Path, tmp_path: Path, blen) -> None:  # noqa: ANN001
    """Issue 10's reproduction: packet 31 of 64's block length is bogus; the 63 others are read, exactly."""
    raw = dvwa.read_bytes()
    want, blocks = truth(dvwa), pcapng_packet_blocks(raw)
    assert len(want) == 64 == len(blocks)
    off, n = blocks[31]
    bad = bytearray(raw)
    struct.pack_into("<I", bad, off + 4, blen(n))
    path = tmp_path / "blen.pcapng"
    path.write_bytes(bad)
    got, stats = read(path)
    assert got == want[:31] + want[32:]
    assert located(stats, path) == [off] and stats["damaged_bytes"] == n


def test_pcapng_cut_inside_a_block(dvwa: Path, tmp_path: Path) -> None:
    raw = dvwa.read_bytes()
    off, n = pcapng_packet_blocks(raw)[50]
    path = tmp_path / "cut.pcapng"
    path.write_bytes(raw[:off + n // 2])
    got, stats = read(path)
    assert got == truth(dvwa)[:50] and located(stats, path) == [off] and stats["damaged_bytes"] == n // 2


def test_pcapng_packet_of_an_undescribed_interface_is_reported(dvwa: Path, tmp_path: Path) -> None:
    raw = bytearray(dvwa.read_bytes())
    off, _ = pcapng_packet_blocks(raw)[7]
    struct.pack_into("<I", raw, off + 8, 5)  # interface id 5: the file describes one
    path = tmp_path / "intf.pcapng"
    path.write_bytes(raw)
    got, stats = read(path)
    want = truth(dvwa)
    assert got == want[:7] + want[8:] and located(stats, path) == [off] and "interface" in stats["damage"][0]


def test_cli_reports_damage_and_exits_partial(ftp: Path, tmp_path: Path, soc_env: Path) -> None:
    raw = ftp.read_bytes()
    offsets = pcap_offsets(raw)
    bad = bytearray(raw)
    struct.pack_into("<I", bad, offsets[300] + 8, 0x100000)
    path = tmp_path / "caplen.pcap"
    path.write_bytes(bad)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    res = runner.invoke(app, ["sensor", "pcap", str(path), "--store", db])
    assert res.exit_code == 3
    assert f"{path}: byte offset {offsets[300]}: record claims caplen 1048576" in " ".join(res.stderr.split())
    res = runner.invoke(app, ["sensor", "pcap", str(path), "--store", db, "--json"])
    assert res.exit_code == 3
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    (per_file,) = [x for x in lines if x["type"] == "file"]
    assert per_file["packets_read"] == 605 and per_file["damaged_regions"] == 1 and len(per_file["damage"]) == 1
    assert lines[-1]["damaged_files"] == 1
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[:offsets[400] + 21])
    res = runner.invoke(app, ["sensor", "pcap", str(cut), "--store", db])
    assert res.exit_code == 3 and f"byte offset {offsets[400]}: record cut short" in " ".join(res.stderr.split())
    assert runner.invoke(app, ["sensor", "pcap", str(ftp), "--store", db]).exit_code == 0


def test_pcapng_second_section_header(dvwa: Path, tmp_path: Path) -> None:
    """A second section mid-file is read; one whose length is bogus is skipped as damage, nothing else lost."""
    raw = dvwa.read_bytes()
    shb_len = struct.unpack_from("<I", raw, 4)[0]
    off, _ = pcapng_packet_blocks(raw)[20]
    path = tmp_path / "sections.pcapng"
    path.write_bytes(raw[:off] + raw[:shb_len] + raw[off:])
    got, stats = read(path)
    assert got == truth(dvwa) and stats["damage"] == []
    bad = bytearray(raw[:shb_len])
    struct.pack_into("<I", bad, 4, 0xFFFFFFF0)
    path.write_bytes(raw[:off] + bad + raw[off:])
    got, stats = read(path)
    assert got == truth(dvwa) and located(stats, path) == [off] and stats["damaged_bytes"] == shb_len
