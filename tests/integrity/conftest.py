"""A test host tree (web root, /etc, records), soc run as a user runs it (the installed `soc` in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SOC = str(Path(sys.executable).with_name("soc"))
PAGE = "<html><head><title>Ministry of Finance</title></head><body><h1>Budget 2027</h1></body></html>\n"
POLICY = """\
policy: {id: test-web, name: Test web server}
ignore: ["*.swp"]
watch:
  - path: /var/www/html
    tags: [webroot]
    label: public
  - path: /etc
    attributes: [sha256, size, mode, owner, group, link]
    tags: [system]
  - path: /srv/records
    label: secret
"""


@dataclass
class Host:
    root: Path
    policy: Path
    env: dict[str, str]
    store: str

    def soc(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SOC, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def scan(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.soc("integrity", "scan", "--policy", str(self.policy), "--root", str(self.root), "--host",
                        "web01", *extra)

    def baseline(self) -> subprocess.CompletedProcess[str]:
        res = self.soc("integrity", "baseline", "--policy", str(self.policy), "--root", str(self.root), "--host",
                       "web01")
        assert res.returncode == 0, res.stderr
        return res

    def events(self, res: subprocess.CompletedProcess[str]) -> dict[str, dict]:
        """The --json events of a run by file path."""
        return {e["file"]["path"]: e for e in map(json.loads, res.stdout.splitlines())}

    def alerts(self) -> list[dict]:
        res = self.soc("alerts", "list", "--json", "--clearance", "public")
        assert res.returncode == 0, res.stderr
        return [json.loads(x) for x in res.stdout.splitlines()]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    root = tmp_path / "web01"
    (root / "var/www/html/css").mkdir(parents=True)
    (root / "var/www/html/index.html").write_text(PAGE)
    (root / "var/www/html/css/site.css").write_text("body { color: #123; }\n")
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33::/var/www:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nwww-data:x:33:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/shadow").chmod(0o640)
    (root / "etc/hostname").write_text("web01\n")
    (root / "etc/localtime").symlink_to("/usr/share/zoneinfo/UTC")
    (root / "srv/records").mkdir(parents=True)
    (root / "srv/records/case-1.txt").write_text("decision 1\n")
    policy = tmp_path / "watch.yml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOC_")} | {
        "SOC_HOME": str(tmp_path / "home"), "SOC_STORE": f"sqlite:///{tmp_path / 'soc.db'}",
        "XDG_CONFIG_HOME": str(tmp_path / "config"), "SOC_AUDIT_KEY_FILE": str(tmp_path / "home" / "audit.key"),
        "SOC_AUDIT_ANCHOR_FILE": str(tmp_path / "home" / "audit.anchors"), "COLUMNS": "200"}
    return Host(root, policy, env, env["SOC_STORE"])
