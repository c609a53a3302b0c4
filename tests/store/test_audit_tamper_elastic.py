"""The tamperings of tests/core/test_audit_tamper.py on the Elasticsearch store (each emulator): a cluster user who
can write `soc-audit-*` and `soc-meta-*` but has no key. Anchors go to a file and to an index."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from core.test_audit_tamper import TAMPERINGS, Entry
from elasticsearch import Elasticsearch
from es_server import EsServer

from correlator.audit import ANCHOR_ENV, KEY_ENV, EsAnchors
from correlator.store import StoreError

pytestmark = pytest.mark.es


class EsWriter:
    """Someone with write access to the audit and meta indices."""

    def __init__(self, server: EsServer, store: Any) -> None:  # noqa: ANN401 - an ElasticStore
        self.es = Elasticsearch(server.url, **server.client_options)
        self.store = store

    def entries(self) -> list[Entry]:
        return self.store.audit_entries()

    def head(self) -> str | None:
        got = self.es.options(ignore_status=404).get(index=self.store.meta_index, id="audit_head")
        return f"{got['_source']['seq']}:{got['_source']['hash']}" if got.get("found") else None

    def rewrite(self, entries: list[Entry], head: str | None) -> None:
        for e in self.entries():
            self.es.delete(index=self.store.audit_index, id=str(e["seq"]), refresh=True)
        for e in entries:
            self.es.index(index=self.store.audit_index, id=str(e["seq"]), document=e, refresh=True)
        if head:
            seq, digest = head.split(":", 1)
            self.es.index(index=self.store.meta_index, id="audit_head", document={"seq": int(seq), "hash": digest},
                          refresh=True)
        else:
            self.es.options(ignore_status=404).delete(index=self.store.meta_index, id="audit_head", refresh=True)


@pytest.fixture
def keyed_es(es_server: EsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "audit.key"))
    monkeypatch.setenv(ANCHOR_ENV, str(tmp_path / "audit.anchors"))
    store = es_server.store()
    store.init()
    for i in range(1, 6):
        store.audit("read", {"n": i, "level": "secret"}, actor="analyst")
    assert store.audit_verify() == []
    yield store
    store.close()


@pytest.mark.parametrize("name, tamper, needle, anchored_only", TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_tampering_by_a_cluster_writer_is_detected(es_server, keyed_es, tmp_path, monkeypatch, name, tamper, needle,
                                                   anchored_only):
    writer = EsWriter(es_server, keyed_es)
    writer.rewrite(*tamper(writer.entries(), writer.head()))
    monkeypatch.setenv(ANCHOR_ENV, "")
    without = es_server.store(keyed_es.namespace).audit_verify()  # a fresh store object: no anchor file
    assert (without == []) if anchored_only else any(needle in p for p in without), without
    monkeypatch.setenv(ANCHOR_ENV, str(tmp_path / "audit.anchors"))
    problems = es_server.store(keyed_es.namespace).audit_verify()
    assert any(needle in p for p in problems), problems


def test_heads_anchored_in_an_index_catch_deleting_everything(es_server, keyed_es, monkeypatch):
    index = f"anchors-{uuid.uuid4().hex[:8]}"
    anchors = EsAnchors(f"{es_server.url}/{index}", **es_server.client_options)
    last = keyed_es.audit_entries()[-1]
    anchors.append({"store": keyed_es.audit_name, "seq": 5, "hash": last["hash"], "time": "2026-01-01T00:00:00Z"})
    assert keyed_es.audit_verify([anchors]) == []
    EsWriter(es_server, keyed_es).rewrite([], None)
    monkeypatch.setenv(ANCHOR_ENV, "")
    store = es_server.store(keyed_es.namespace)
    assert store.audit_verify() == []
    problems = store.audit_verify([anchors])
    assert len(problems) == 1 and problems[0].startswith(
        f"audit entry seq=5: anchored at 2026-01-01T00:00:00Z ({es_server.url}/{index}/_doc/"), problems


def test_a_malformed_head_is_a_located_error_not_a_traceback(es_server, keyed_es):
    writer = EsWriter(es_server, keyed_es)
    writer.es.index(index=keyed_es.meta_index, id="audit_head", document={"seq": "5", "hash": 5}, refresh=True)
    with pytest.raises(StoreError, match=f"the head {keyed_es.meta_index}/audit_head is malformed"):
        keyed_es.audit("read", {"n": 6})
    assert any(p.startswith("audit entry seq=5: the stored head is 5:5") for p in keyed_es.audit_verify())
