"""The bundled demo capture is exactly what its committed generator builds (so the two never drift apart)."""

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_capture_regenerates_identically(tmp_path, monkeypatch):
    out = tmp_path / "demo.pcap"
    monkeypatch.setattr("sys.argv", ["make_demo_pcap.py", str(out)])
    runpy.run_path(str(ROOT / "rules" / "samples" / "make_demo_pcap.py"), run_name="__main__")
    assert out.read_bytes() == (ROOT / "rules" / "samples" / "demo-ministry.pcap").read_bytes()
