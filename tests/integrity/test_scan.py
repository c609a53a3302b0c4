"""soc integrity baseline|scan on a test host tree, run as a user runs it; truth is the edits the test makes."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

from correlator.query import Query, Term
from correlator.store import open_store
from tests.integrity.conftest import Host


def test_done_when_edited_page_and_new_suid_file_are_the_two_alerts(host: Host) -> None:
    """Baseline a web root and /etc, edit a page, add a SUID file: the scan shows both, `soc alerts list` has the
    web root and SUID alerts and nothing else."""
    host.baseline()
    assert host.scan().returncode == 0  # nothing changed yet: no difference, exit 0
    (host.root / "var/www/html/index.html").write_text("<html><title>Hacked</title><body>owned</body></html>\n")
    suid = host.root / "etc/.sh"
    suid.write_bytes(b"\x7fELF fake shell")
    suid.chmod(0o4755)
    res = host.scan("--json")
    assert res.returncode == 1, res.stderr  # differences found
    events = {p: e for p, e in host.events(res).items() if e["file"]["type"] != "dir"}
    assert set(events) == {"/var/www/html/index.html", "/etc/.sh"}
    page, sh = events["/var/www/html/index.html"], events["/etc/.sh"]
    assert page["event"]["type"] == ["change"] and page["event"]["category"] == ["file"]
    assert set(page["soc"]["integrity"]["changed"]) >= {"sha256", "size"}
    assert page["file"]["hash"]["sha256"] == __import__("hashlib").sha256(
        (host.root / "var/www/html/index.html").read_bytes()).hexdigest()
    assert sh["event"]["type"] == ["creation"] and sh["file"]["mode"] == "4755" and sh["soc"]["integrity"]["setuid"]
    alerts = host.alerts()
    assert sorted(a["title"] for a in alerts) == ["New Or Changed SUID/SGID Binary", "Web Root Content Changed"]
    table = host.soc("alerts", "list")
    assert table.returncode == 0 and "Web Root Content Changed" in table.stdout


def test_every_attribute_and_only_the_watched_ones(host: Host) -> None:
    """Each attribute change is reported with old and new values; /etc does not watch mtime or inode."""
    host.baseline()
    html, etc = host.root / "var/www/html", host.root / "etc"
    os.utime(html / "css/site.css", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # mtime only
    (html / "index.html").chmod(0o666)  # mode only
    os.chown(etc / "hostname", 33, 33)  # owner and group
    (etc / "localtime").unlink()
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Asia/Riyadh")  # link target
    os.utime(etc / "shadow", ns=(1, 1))  # mtime: not watched under /etc
    copy = etc / "passwd.new"
    copy.write_bytes((etc / "passwd").read_bytes())
    copy.replace(etc / "passwd")  # same content, new inode: not watched under /etc
    (etc / "cron.d/backup").write_text("0 3 * * * root /usr/local/bin/backup\n")  # creation
    (host.root / "srv/records/case-1.txt").unlink()  # deletion
    (html / "index.html.swp").write_text("editor scratch")  # ignored everywhere
    res = host.scan("--json")
    assert res.returncode == 1
    ev = host.events(res)
    got = {p: (e["event"]["type"][0], sorted(e["soc"]["integrity"].get("changed", []))) for p, e in ev.items()
           if e["file"]["type"] != "dir"}
    assert got == {
        "/var/www/html/css/site.css": ("change", ["mtime"]),
        "/var/www/html/index.html": ("change", ["mode"]),
        "/etc/hostname": ("change", ["group", "owner"]),
        "/etc/localtime": ("change", ["link", "size"]),  # a symlink's size is its target's length
        "/etc/cron.d/backup": ("creation", []),
        "/srv/records/case-1.txt": ("deletion", []),
    }
    folders = {p for p, e in ev.items() if e["file"]["type"] == "dir"}
    assert {"/var/www/html", "/srv/records"} <= folders <= {"/var/www/html", "/srv/records", "/etc/cron.d"}
    assert "mtime" in ev["/var/www/html"]["soc"]["integrity"]["changed"]  # the ignored .swp still moved it
    old_new = ev["/var/www/html/index.html"]["soc"]["integrity"]
    assert (old_new["old"]["mode"], old_new["new"]["mode"]) == ("0644", "0666")
    assert ev["/etc/hostname"]["file"]["owner"] == "www-data"  # named from the tree's own /etc/passwd
    assert ev["/etc/localtime"]["soc"]["integrity"]["new"]["target_path"] == "/usr/share/zoneinfo/Asia/Riyadh"
    titles = sorted(a["title"] for a in host.alerts())
    assert titles == ["New Cron Job Or Systemd Unit", "Web Root Content Changed"]  # records: secret, withheld


def test_classified_folder_outside_window_is_labelled(host: Host) -> None:
    host.baseline()
    (host.root / "srv/records/case-1.txt").write_text("decision 1 (amended)\n")
    assert host.scan().returncode == 1
    store = open_store(host.store)
    try:
        ev = store.search_events(Query((Term("file.path", "/srv/records/case-1.txt"),)), 10)[0]
        alerts = store.search_alerts(Query((Term("soc.alert.rule.name",
                                                 "Classified Folder Changed Outside A Change Window"),)), 10)
    finally:
        store.close()
    assert (ev["gov.label.level"], ev["gov.label.rank"]) == ("secret", 2)
    assert len(alerts) == 1 and alerts[0]["gov.label.rank"] == 2
    assert host.alerts() == []  # a public reader sees none of it


def test_update_accepts_changes_and_rescan_is_clean(host: Host) -> None:
    host.baseline()
    (host.root / "var/www/html/new.html").write_text("new page\n")
    assert host.scan("--update").returncode == 1
    res = host.scan("--json")
    assert res.returncode == 0 and res.stdout == ""


def test_edited_baseline_is_reported_like_an_edited_file(host: Host) -> None:
    """Hiding a change by editing the stored baseline (the attacker has the store, not the key) is detected."""
    host.baseline()
    (host.root / "var/www/html/index.html").write_text("defaced\n")
    db = sqlite3.connect(host.store.removeprefix("sqlite:///"))
    kind, doc = db.execute("SELECT kind, doc FROM records WHERE kind LIKE 'integrity-baseline/web01/%' "
                           "AND doc LIKE '%index.html%'").fetchone()
    data = json.loads(doc)
    new_hash = __import__("hashlib").sha256(b"defaced\n").hexdigest()
    for row in data["entries"]:
        if row[0] == "/var/www/html/index.html":
            row[5], row[8] = 8, new_hash  # size and sha256 of the defaced page
            row[6] = (host.root / "var/www/html/index.html").stat().st_mtime_ns
    db.execute("UPDATE records SET doc = ? WHERE kind = ?", (json.dumps(data), kind))
    db.commit()
    db.close()
    res = host.scan("--json")
    assert res.returncode == 1
    events = host.events(res)
    tampered = [e for e in events.values() if e["soc"]["integrity"].get("baseline", {}).get("tampered")]
    assert len(tampered) == 1 and tampered[0]["file"]["path"].startswith("store:integrity-baseline/web01/test-web")
    assert "/var/www/html/index.html" not in events  # the forged entry hid it: the tamper alert is what tells
    assert "Integrity Baseline Tampered" in {a["title"] for a in host.alerts()}


def test_key_is_0600_and_never_in_the_store(host: Host) -> None:
    host.baseline()
    key = Path(host.env["SOC_HOME"]) / "integrity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = key.read_text().strip()
    assert secret.encode() not in Path(host.store.removeprefix("sqlite:///")).read_bytes()
    key.chmod(0o644)
    res = host.scan()
    assert res.returncode == 1 and "open to other users" in res.stderr


def test_scan_without_baseline_and_under_another_policy_version(host: Host) -> None:
    res = host.scan()
    assert res.returncode == 1 and "no soc store at" in res.stderr  # no baseline was ever taken here
    assert host.soc("integrity", "baseline", "--policy", str(host.policy), "--root", str(host.root), "--host",
                    "web02").returncode == 0
    res = host.scan()
    assert res.returncode == 1 and "no baseline of web01 under policy test-web" in res.stderr
    host.baseline()
    host.policy.write_text(host.policy.read_text().replace('ignore: ["*.swp"]', 'ignore: ["*.swp", "*.tmp"]'))
    res = host.scan()
    assert res.returncode == 2 and "another version" in res.stderr


def test_root_confinement_symlinks_stay_inside(host: Host, tmp_path: Path) -> None:
    """A watched path that is an absolute symlink is re-rooted: the host's own /etc is never walked."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host file\n")
    (host.root / "var/www/html/link").symlink_to(outside)  # an entry (a symlink), never followed
    (host.root / "srv/web").symlink_to("/etc")  # re-rooted: the tree's /etc
    host.policy.write_text(host.policy.read_text() + "  - path: /srv/web\n    tags: [webroot]\n")
    host.baseline()
    (outside / "secret.txt").write_text("changed outside the tree\n")
    (host.root / "etc/hostname").write_text("web01.mof.gov.example\n")
    res = host.scan("--json")
    assert res.returncode == 1, res.stderr
    # /srv/web is the tree's /etc (were it the machine's, its hostname would not have changed); `link` is an entry
    assert {p for p, e in host.events(res).items() if e["file"]["type"] != "dir"} == {"/etc/hostname",
                                                                                      "/srv/web/hostname"}
