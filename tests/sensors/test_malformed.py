"""Bad input: garbage files, truncated files, mutated packets. Never a crash; every problem counted."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors.capture import CaptureError, read_file
from sensors.decode import LINK_ETHERNET, LINK_NULL, LINK_RAW, LINK_SLL, LINK_SLL2
from sensors.engine import Sensor
from tests.conftest import corpus_dir

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def _corpus_packets(limit: int = 4000) -> list[tuple[bytes, int]]:
    out = []
    pcaps = corpus_dir() / "pcaps"
    for p in sorted(pcaps.glob("*.pcap*")):
        for _, data, _, linktype in read_file(str(p)):
            out.append((data, linktype))
            if len(out) >= limit:
                return out
    return out


PACKETS = _corpus_packets() if (corpus_dir() / "pcaps").is_dir() else []


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pcap"
    bad.write_bytes(b"this is not a capture file at all" * 10)
    with pytest.raises(CaptureError, match="garbage.pcap"):
        list(read_file(str(bad)))


def test_truncated_file_keeps_what_was_read(corpus: Path, tmp_path: Path) -> None:
    src = (corpus / "pcaps" / "zk_http-methods.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(src[: len(src) // 2 + 7])  # ends inside a record
    stats: dict = {}
    sensor = Sensor(sensor_name="t")
    events = list(sensor.run(read_file(str(cut), stats)))
    complete, off, data = 0, 24, cut.read_bytes()
    while off + 16 <= len(data):  # independent walk of the record headers
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        if off + 16 + caplen > len(data):
            break
        complete, off = complete + 1, off + 16 + caplen
    assert stats["file_truncated"] == 1
    assert sensor.stats()["packets_read"] == complete + 1  # the cut record is kept, shorter, and counted
    assert any(e["event.dataset"] == "soc.http" for e in events)
    assert all(e["event.dataset"] != "soc.flow" or e["soc.flow.end_reason"] == "end_of_input"
               or e["soc.flow.end_reason"] for e in events)


def test_header_only_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.pcap"
    f.write_bytes(PCAP_HEADER)
    sensor = Sensor(sensor_name="t")
    assert list(sensor.run(read_file(str(f)))) == [] and sensor.stats()["packets_read"] == 0


@pytest.mark.parametrize("linktype", [LINK_ETHERNET, LINK_NULL, LINK_RAW, LINK_SLL, LINK_SLL2, 147])
def test_short_and_unknown_frames_are_counted(linktype: int) -> None:
    sensor = Sensor(sensor_name="t")
    frames = [b"", b"\x00", b"\x45" * 3, b"\x60" + b"\x00" * 10, b"\xff" * 30]
    list(sensor.run((1.0, f, 60, linktype) for f in frames))
    s = sensor.stats()
    problems = s["malformed"] + s["truncated"] + s["unknown_link_type"] + s["non_ip"]
    assert s["packets_read"] == 5 and s["packets_decoded"] + problems == 5  # each frame counted exactly once
    if linktype == 147:
        assert s["unknown_link_type"] == 5


@pytest.mark.corpus
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(idx=st.integers(min_value=0, max_value=max(len(PACKETS) - 1, 0)),
       edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
       cut=st.integers(0, 2000))
def test_fuzz_mutated_corpus_packets(idx: int, edits: list, cut: int) -> None:
    """Mutated real packets (byte flips + truncation), fed twice so TCP/HTTP/TLS state sees them mid-stream."""
    if not PACKETS:
        pytest.fail(f"no corpus packets under {corpus_dir() / 'pcaps'}")
    data, linktype = PACKETS[idx]
    buf = bytearray(data)
    for pos, val in edits:
        if buf:
            buf[pos % len(buf)] = val
    mutated = bytes(buf[:cut]) if cut < len(buf) else bytes(buf)
    sensor = Sensor(sensor_name="fuzz")
    events = list(sensor.run([(1.0, data, len(data), linktype), (1.1, mutated, len(data), linktype),
                              (1.2, mutated, len(data), linktype)]))
    s = sensor.stats()
    assert s["packets_read"] == 3
    problems = s["malformed"] + s["truncated"] + s["unknown_link_type"] + s["non_ip"] + s["fragments"]
    assert s["packets_decoded"] + problems == 3  # every frame accounted for exactly once
    assert all(isinstance(e["event.sequence"], int) for e in events)
