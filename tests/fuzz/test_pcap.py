"""Fuzz: pcap and pcapng bytes through sensors.pcapfile.read_file (mutated real corpus captures, and garbage after a
valid header). Properties: only a located CaptureError escapes; every damage message is `FILE: byte offset N: ...`
with N inside the file; every record that lies wholly before the first changed byte is delivered, unchanged and
first; for pcap, the header, the records and the damaged bytes add up to the file's size."""

from __future__ import annotations

import re
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensors.pcapfile import CaptureError, read_file
from tests.conftest import corpus_dir
from tests.sensors.test_corrupt import truth

SMALL = ["sv_dns-udp-eve-txt.pcap", "zk_icmp-5-pings.pcap", "sv_http-bug78.pcap", "ak_dns-tcp.pcap",
         "zk_http-dvwa-login.pcapng"]
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
NG_HEADER = (struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
             + struct.pack("<IIHHII", 1, 20, 1, 0, 65535, 20))
_DIR = Path(tempfile.mkdtemp(prefix="soc-fuzz-pcap-"))


def _extents(raw: bytes) -> list[int]:
    """End offset of each packet record/block of an intact little-endian capture, in order."""
    ends, ng = [], raw[:4] == b"\x0a\x0d\x0d\x0a"
    off = 0 if ng else 24
    while off < len(raw):
        if ng:
            btype, blen = struct.unpack_from("<II", raw, off)
            off += blen
            if btype == 6:
                ends.append(off)
        else:
            off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
            ends.append(off)
    return ends


def _header_len(raw: bytes) -> int:
    """Bytes of the file header scapy reads at open: pcap's 24, or pcapng's first Section Header Block."""
    return struct.unpack_from("<I", raw, 4)[0] if raw[:4] == b"\x0a\x0d\x0d\x0a" else 24


def _load() -> dict[str, tuple[bytes, list, list[int]]]:
    pcaps = corpus_dir() / "pcaps"
    if not pcaps.is_dir():
        return {}
    return {name: ((pcaps / name).read_bytes(), truth(pcaps / name), _extents((pcaps / name).read_bytes()))
            for name in SMALL}


CORPUS = _load()


def _check(raw: bytes, name: str) -> tuple[list, dict | None]:
    """Read `raw` as a file; assert the properties that hold for any input; return the records and stats (None
    when the file could not be opened)."""
    path = _DIR / name
    path.write_bytes(raw)
    stats: dict = {}
    records: list = []
    try:
        for rec in read_file(str(path), stats):
            records.append(rec)
    except CaptureError as exc:
        assert re.match(rf"{re.escape(str(path))}: not a readable pcap/pcapng file", str(exc)), exc
        assert not records  # only the file header can make a file unreadable: nothing was delivered before
        return records, None
    for message in stats["damage"]:
        m = re.match(rf"{re.escape(str(path))}: byte offset (\d+): \S", message)
        assert m and int(m.group(1)) <= len(raw), message
    if raw[:4] == PCAP_HEADER[:4] and len(raw) >= 24:
        assert 24 + sum(16 + len(r[1]) for r in records) + stats["damaged_bytes"] == len(raw)
    for ts, data, wirelen, linktype in records:
        assert isinstance(ts, float) and isinstance(data, bytes) and wirelen >= 0 and linktype >= 0
    return records, stats


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 600)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16), st.just(0)),
)


@pytest.mark.fuzz
@pytest.mark.corpus
@given(name=st.sampled_from(SMALL), edits=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutated_corpus_captures(name: str, edits: list) -> None:
    if not CORPUS:
        pytest.fail(f"no corpus pcaps under {corpus_dir() / 'pcaps'}")
    raw, want, ends = CORPUS[name]
    buf, first = bytearray(raw), len(raw)
    for op, pos, arg in edits:
        pos %= len(buf) + 1
        first = min(first, pos)
        if op == "set":
            buf[pos:pos + len(arg)] = arg[:max(len(buf) - pos, 0)]
        elif op == "insert":
            buf[pos:pos] = arg
        elif op == "delete":
            del buf[pos:pos + arg]
        else:
            del buf[pos:]
    records, stats = _check(bytes(buf), name)
    if stats is None:
        assert first < _header_len(raw)  # only a changed file header makes the file unreadable
        return
    kept = sum(1 for end in ends if end <= first)  # records wholly before the first changed byte
    assert records[:kept] == want[:kept]


@pytest.mark.fuzz
@given(ng=st.booleans(), body=st.binary(max_size=2000))
def test_fuzz_garbage_after_a_valid_header(ng: bool, body: bytes) -> None:
    assert _check((NG_HEADER if ng else PCAP_HEADER) + body, "garbage.pcapng" if ng else "garbage.pcap")[1] is not None
