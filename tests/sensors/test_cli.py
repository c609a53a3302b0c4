"""`soc sensor pcap` end to end, as a user runs it: store contents, idempotent re-runs, --bpf, --json, exit codes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from soc_cli.main import app

from .truth import load_truth

runner = CliRunner()


def _datasets(db: Path) -> dict[str, int]:
    rows = sqlite3.connect(db).execute(
        "SELECT json_extract(doc, '$.\"event.dataset\"'), count(*) FROM events GROUP BY 1").fetchall()
    return dict(rows)


@pytest.mark.corpus
def test_pcap_into_store_and_rerun_is_idempotent(corpus: Path, soc_env: Path) -> None:
    pcap, db = corpus / "pcaps" / "zk_http-methods.pcap", soc_env / "x.db"
    truth = load_truth(corpus, pcap)
    args = ["sensor", "pcap", str(pcap), "--store", f"sqlite:///{db}", "--json", "--sensor-name", "gw1",
            "--home-net", "128.2.0.0/16"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    file_line, summary = (json.loads(x) for x in res.stdout.strip().splitlines())
    assert file_line["packets_read"] == truth["packets"] and file_line["flows_emitted"] == truth["tcp_flows"]
    assert summary["written"] == summary["events_in"] == sum(file_line["events"].values())
    assert _datasets(db) == {"soc.flow": truth["tcp_flows"], "soc.http": len(truth["http_responses"])}
    doc = json.loads(sqlite3.connect(db).execute(
        "SELECT doc FROM events WHERE json_extract(doc, '$.\"event.dataset\"') = 'soc.flow' LIMIT 1").fetchone()[0])
    assert doc["observer.name"] == "gw1" and doc["network.direction"] == "outbound"
    again = runner.invoke(app, args)
    summary2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary2["written"] == 0 and summary2["duplicates"] == summary["written"]  # same ids on a re-run


@pytest.mark.corpus
def test_bpf_filter_keeps_only_matching_packets(corpus: Path, soc_env: Path) -> None:
    pcap, db = corpus / "pcaps" / "zk_wikipedia.pcap", soc_env / "b.db"
    truth = load_truth(corpus, pcap)
    res = runner.invoke(app, ["sensor", "pcap", str(pcap), "--store", f"sqlite:///{db}", "--json",
                              "--bpf", "tcp port 80"])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.stdout.splitlines()[0])
    port80 = [f for f in truth["flows_exact"] if f["transport"] == "tcp" and 80 in (f["a_port"], f["b_port"])]
    assert stats["packets_read"] == sum(f["packets"] for f in port80)
    assert stats["flows_emitted"] == len(port80) and stats["bpf"] == "tcp port 80"


def test_bad_input_exit_codes(tmp_path: Path, soc_env: Path, corpus: Path) -> None:
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    db = f"sqlite:///{tmp_path / 'e.db'}"
    res = runner.invoke(app, ["sensor", "pcap", str(garbage), "--store", db])
    assert res.exit_code == 2 and "garbage.pcap" in res.stderr
    ok = corpus / "pcaps" / "sv_icmpv4-ping.pcap"
    res = runner.invoke(app, ["sensor", "pcap", str(garbage), str(ok), "--store", db, "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout.splitlines()[-1])["written"] == 151  # the good file is kept
    assert runner.invoke(app, ["sensor", "pcap", str(tmp_path / "missing.pcap"), "--store", db]).exit_code == 2
    assert runner.invoke(app, ["sensor", "pcap", str(ok), "--bpf", "tcp port", "--store", db]).exit_code == 2
    assert runner.invoke(app, ["sensor", "pcap", str(ok), "--home-net", "10.0.0.0/33", "--store", db]).exit_code == 2
