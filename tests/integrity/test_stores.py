"""The keyed baseline on both stores (SQLite and an Elasticsearch-compatible server): many chunks, a re-baseline
to the other slot, an edited chunk and an edited head found, an interrupted baseline leaving the old one in force."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from correlator.store import open_store
from sensors.compliance.rootfs import RootFS
from sensors.integrity import baseline as bl
from sensors.integrity.baseline import HEAD_KIND, Baseline, BaselineWriter, chunk_kind, find_head
from sensors.integrity.events import EventMaker
from sensors.integrity.policy import parse_watch_policy
from sensors.integrity.scan import ScanStats, scan

KEY = bytes(range(32))
POLICY = "policy: {id: p, name: p}\nwatch:\n  - path: /data\n  - path: /data/nested\n    attributes: [size]\n"


@pytest.fixture(scope="module", params=["sqlite", "es"])
def store_uri(request, tmp_path_factory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'soc.db'}"
        return
    from es_server import server_names, start_server

    name = server_names()[0]
    server = start_server(name, tmp_path_factory.mktemp(name))
    try:
        yield f"{server.url}/?namespace=integrity{int(time.time() * 1000)}"
    finally:
        server.close()


def _tree(root: Path) -> None:
    for i in range(60):
        d = root / "data" / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    (root / "data/nested").mkdir()
    (root / "data/nested/n.txt").write_text("nested\n")


def _run(store, fs, pol, host: str, update: bool = False) -> tuple[list[dict], ScanStats]:
    head = find_head(store, host, pol.id)
    maker = EventMaker(pol, host, datetime.now(UTC), {})
    base = Baseline(store, KEY, head) if head else None
    writer = BaselineWriter(store, KEY, host, pol.id, pol.digest, maker.ts, head and head["slot"]) \
        if update or base is None else None
    stats = ScanStats()
    events = list(scan(fs, pol, maker, base, writer, stats))
    if writer:
        writer.commit()
    return events, stats


class _Counted:
    """The store, counting the record reads made through it."""

    def __init__(self, store) -> None:
        self.store, self.calls = store, {}

    def __getattr__(self, name: str):
        attr = getattr(self.store, name)
        if name in ("records", "get_record"):
            def counted(*args, **kwargs):
                self.calls[name] = self.calls.get(name, 0) + 1
                return attr(*args, **kwargs)
            return counted
        return attr


@pytest.mark.es
def test_baseline_chunks_slots_and_tampering(store_uri, tmp_path, monkeypatch):
    monkeypatch.setattr(bl, "CHUNK", 16)  # 70 entries: several chunks per watch
    _tree(tmp_path)
    fs, pol = RootFS(str(tmp_path)), parse_watch_policy(POLICY)
    host = f"h{time.time_ns()}"
    store = open_store(store_uri)
    store.init()
    try:
        _, stats = _run(store, fs, pol, host)
        head = find_head(store, host, pol.id)
        assert stats.entries == 1 + 7 + 60 + 2 and head["slot"] == "a" and len(head["chunks"]) == 6
        assert [c["watch"] for c in head["chunks"]] == [0, 0, 0, 0, 0, 1]  # /data/nested: its own watch
        assert _run(store, fs, pol, host)[0] == []  # unchanged
        counted = _Counted(store)
        assert _run(counted, fs, pol, host)[0] == []
        # a scan reads the head and each chunk by id: never a listing of the store's records
        assert counted.calls == {"get_record": 1 + 6}, counted.calls
        (tmp_path / "data/d3/f3.txt").write_text("edited\n")
        (tmp_path / "data/nested/n.txt").touch()  # mtime only: /data/nested watches size alone
        events, _ = _run(store, fs, pol, host, update=True)
        assert {e["file.path"] for e in events if e["file.type"] == "file"} == {"/data/d3/f3.txt"}
        assert find_head(store, host, pol.id)["slot"] == "b"  # the new baseline went to the other slot
        assert _run(store, fs, pol, host)[0] == []

        # an interrupted re-baseline (chunks written, head not switched) leaves the previous baseline in force
        w = BaselineWriter(store, KEY, host, pol.id, pol.digest, "x", "b")
        w.add(0, next(iter(Baseline(store, KEY, find_head(store, host, pol.id)).entries(0)))._replace(size=1))
        w._flush()
        assert _run(store, fs, pol, host)[0] == []

        # an edited chunk (through the store's own API: the attacker has the store, not the key)
        seq = 2
        kind = chunk_kind(host, pol.id, "b", seq)
        doc = store.records(kind)[0]
        doc["entries"] = doc["entries"][1:]  # drop one entry: its file would look created... and the chunk is wrong
        store.put_record(kind, "0", doc)
        events, stats = _run(store, fs, pol, host)
        tampered = [e for e in events if e.get("soc.integrity.baseline.tampered")]
        assert stats.tampered == 1 and tampered[0]["file.path"].endswith(f"#chunk{seq}")
        assert tampered[0]["soc.integrity.baseline.first_path"].startswith("/data/")

        # an edited head (e.g. pointing back at the old slot)
        head = find_head(store, host, pol.id)
        store.put_record(HEAD_KIND, f"{host}/{pol.id}", head | {"slot": "a"})
        events, _ = _run(store, fs, pol, host)
        assert any(e.get("soc.integrity.baseline.tampered") and "#" not in e["file.path"] for e in events)
    finally:
        store.close()


@pytest.mark.es
def test_follow_streams_against_the_stored_baseline(store_uri, tmp_path, monkeypatch):
    """The follower holds no copy of the tree: a path inotify names is compared with its stored chunk (one read
    by id), what it saw is pending until the next full scan, which stores the walk; each change is reported once,
    and a chunk edited in the store meanwhile is reported and never re-sealed."""
    from sensors.integrity.follow import Follower

    monkeypatch.setattr(bl, "CHUNK", 16)
    _tree(tmp_path)
    fs, pol = RootFS(str(tmp_path)), parse_watch_policy(POLICY)
    host = f"f{time.time_ns()}"
    store = open_store(store_uri)
    store.init()
    try:
        _run(store, fs, pol, host)
        counted = _Counted(store)
        follower = Follower(fs, pol, host, find_head(store, host, pol.id), counted, KEY, "tester")
        assert counted.calls == {} and follower.base.changes == {}  # nothing read up front
        maker = EventMaker(pol, host, datetime.now(UTC), {})

        def kinds(events: list[dict]) -> set[tuple[str, str]]:
            return {(e["event.type"][0], e["file.path"]) for e in events}

        (tmp_path / "data/d3/f3.txt").write_text("edited\n")
        assert kinds(follower.examine("/data/d3/f3.txt", maker)) == {("change", "/data/d3/f3.txt")}
        assert counted.calls == {"get_record": 1}  # the one chunk holding the path
        assert follower.examine("/data/d3/f3.txt", maker) == []  # reported once
        gone = {f"/data/d5/{p.name}" for p in (tmp_path / "data/d5").iterdir()} | {"/data/d5"}
        shutil.rmtree(tmp_path / "data/d5")
        assert kinds(follower.examine("/data/d5", maker)) == {("deletion", p) for p in gone}
        (tmp_path / "data/new").mkdir()
        (tmp_path / "data/new/x.txt").write_text("x\n")
        assert kinds(follower.examine("/data/new", maker)) == {("creation", "/data/new"),
                                                                ("creation", "/data/new/x.txt")}
        assert kinds(follower.examine("/data", maker)) == {("change", "/data")}  # inotify names the parent too
        assert len(follower.base.changes) == 1 + len(gone) + 2 + 1  # pending: the changes only
        (tmp_path / "data/d1/f1.txt").write_text("missed by inotify\n")
        assert kinds(follower.full_scan(maker)) == {("change", "/data/d1/f1.txt")}  # nothing reported twice
        assert follower.base.changes == {} and _run(store, fs, pol, host)[0] == []  # the walk is the baseline

        (tmp_path / "data/d2/f2.txt").write_text("edited again\n")
        follower.examine("/data/d2/f2.txt", maker)
        follower.persist(maker.ts)  # on stopping: the stored baseline with the pending change applied
        assert _run(store, fs, pol, host)[0] == []

        head = find_head(store, host, pol.id)
        kind = chunk_kind(host, pol.id, head["slot"], 0)
        doc = store.get_record(kind, "0")
        store.put_record(kind, "0", doc | {"entries": doc["entries"][:-1]})  # edited in the store meanwhile
        follower.base.find(0, "/data")  # a lookup reads the edited chunk
        tampered = follower._tampered(maker)
        assert [e["file.path"] for e in tampered] == [f"store:{HEAD_KIND}/{host}/{pol.id}#chunk0"]
        follower.persist(maker.ts)
        assert find_head(store, host, pol.id) == head  # not re-sealed: the next scan reports it
        assert any(e.get("soc.integrity.baseline.tampered") for e in _run(store, fs, pol, host)[0])
    finally:
        store.close()


def test_change_window_open_means_no_classified_alert(tmp_path):
    """A change inside an open change window is labelled as such (the classified-folder rule needs it closed)."""
    from correlator.sigma.detector import shipped_detector

    _tree(tmp_path)
    text = POLICY.replace("  - path: /data\n", "  - path: /data\n    label: secret\n")
    levels = {"public": (0, "عام"), "secret": (2, "سري")}
    detector = shipped_detector()
    for window, expected in (("", 1), ('change_windows: [{from: "00:00", to: "00:00"}]\n', 0)):
        pol = parse_watch_policy(text + window, levels={k: v[0] for k, v in levels.items()})
        fs = RootFS(str(tmp_path))
        maker = EventMaker(pol, "h", datetime.now(UTC), levels)
        store = open_store(f"sqlite:///{tmp_path / f'w{expected}.db'}")
        store.init()
        writer = BaselineWriter(store, KEY, "h", pol.id, pol.digest, maker.ts, None)
        list(scan(fs, pol, maker, None, writer, ScanStats()))
        writer.commit()
        (tmp_path / "data/d1/f1.txt").write_text(f"amended {expected}\n")
        events = list(scan(fs, pol, maker, Baseline(store, KEY, find_head(store, "h", pol.id)), None, ScanStats()))
        store.close()
        page = next(e for e in events if e["file.path"] == "/data/d1/f1.txt")
        assert page["soc.integrity.change_window"] is (expected == 0)
        from correlator.events import normalize

        alerts = detector.detect([normalize(dict(e)) for e in events])
        titles = [a["soc.alert.rule.name"] for a in alerts]
        assert titles.count("Classified Folder Changed Outside A Change Window") == expected


def test_a_folder_that_cannot_be_listed_is_unknown_not_deleted(tmp_path, monkeypatch):
    """A scan that cannot list a folder (permissions) reports nothing under it deleted, and names the folder."""
    import os

    from sensors.integrity import walker

    _tree(tmp_path)
    fs, pol = RootFS(str(tmp_path)), parse_watch_policy(POLICY)
    store = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
    store.init()
    try:
        _run(store, fs, pol, "h")
        blocked = str(tmp_path / "data" / "d3")
        real_listdir = os.listdir

        def listdir(path):
            if str(path) == blocked:
                raise PermissionError(13, "Permission denied", path)
            return real_listdir(path)

        monkeypatch.setattr(walker.os, "listdir", listdir)
        (tmp_path / "data/d4/f4.txt").write_text("edited\n")
        events, stats = _run(store, fs, pol, "h")
    finally:
        store.close()
    assert stats.unreadable == ["/data/d3"]
    assert [(e["event.type"], e["file.path"]) for e in events] == [(["change"], "/data/d4/f4.txt")]
