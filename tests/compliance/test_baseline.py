"""Every national-baseline check passes on a compliant tree and fails on a tree that breaks only that check.

The compliant tree is one compact spec; each check has one or more mutations of it. A mutation must flip its own
check to "failed" and leave every other check "passed" (so a rule that silently matches the wrong thing fails
here, the class of bug Wazuh shipped in its CIS policies, wazuh/wazuh#10600 and #32443), and the failed result must
name what failed it: its evidence holds the place the mutation broke (EVIDENCE).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensors.compliance import Scanner, load_policy

BASELINE = Path(__file__).resolve().parents[2] / "rules" / "compliance" / "national_baseline.yml"
UID, GID = os.getuid(), os.getgid()  # the tree's /etc/passwd names the test user "root", as a real image would


def unit(name: str, install: bool = True) -> str:
    return f"[Unit]\nDescription={name}\n[Service]\nExecStart=/usr/sbin/{name}\n" + (
        "[Install]\nWantedBy=multi-user.target\n" if install else "")


def dpkg(*packages: str) -> str:
    return "\n".join(f"Package: {p}\nStatus: install ok installed\nVersion: 1.0\n" for p in packages)


def wants(name: str) -> dict:
    return {f"/etc/systemd/system/multi-user.target.wants/{name}": ("link", f"/lib/systemd/system/{name}")}


TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
SSH_LISTEN = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
NTP_UDP = "   0: 00000000:007B 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2 2\n"
PACKAGES = ("openssh-server", "nftables", "auditd", "unattended-upgrades", "chrony", "rsyslog")
SSHD = ("Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\nPermitEmptyPasswords no\nMaxAuthTries 4\n"
        "X11Forwarding no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel VERBOSE\n"
        "ClientAliveInterval 300\n")
COMMON_PASSWORD = ("password requisite pam_pwquality.so retry=3\n"
                   "password [success=1 default=ignore] pam_unix.so obscure use_authtok yescrypt remember=5\n"
                   "password requisite pam_deny.so\n")

PASSWD = f"root:x:{UID}:{GID}:root:/root:/bin/bash\n"
SHADOW = "root:*:19800:0:99999:7:::\n"

GOOD: dict = {
    "/etc/debian_version": "12.5\n",
    "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n',
    "/etc/passwd": PASSWD,
    "/etc/passwd-": PASSWD,
    "/etc/group": f"root:x:{GID}:\n",
    "/etc/group-": f"root:x:{GID}:\n",
    "/etc/shadow": ("file", SHADOW, 0o640),
    "/etc/shadow-": ("file", SHADOW, 0o600),
    "/etc/gshadow": ("file", "root:*::\n", 0o640),
    "/etc/gshadow-": ("file", "root:*::\n", 0o400),
    "/etc/ssh/sshd_config": ("file", SSHD, 0o600),
    "/etc/ssh/sshd_config.d": ("dir", 0o755),
    "/etc/login.defs": "PASS_MAX_DAYS 365\nPASS_MIN_DAYS 1\nPASS_WARN_AGE 7\nENCRYPT_METHOD YESCRYPT\n",
    "/etc/pam.d/common-password": COMMON_PASSWORD,
    "/etc/security/pwquality.conf": "# minlen = 8\nminlen = 14\n",
    "/var/lib/dpkg/status": dpkg(*PACKAGES),
    "/lib/systemd/system/nftables.service": unit("nft"),
    "/lib/systemd/system/auditd.service": unit("auditd"),
    "/lib/systemd/system/chrony.service": unit("chronyd"),
    "/lib/systemd/system/rsyslog.service": unit("rsyslogd"),
    **wants("nftables.service"), **wants("auditd.service"), **wants("chrony.service"), **wants("rsyslog.service"),
    "/etc/systemd/journald.conf": "[Journal]\n#Storage=auto\n",
    "/etc/audit/rules.d/50-identity.rules": "-w /etc/passwd -p wa -k identity\n-w /etc/shadow -p wa -k identity\n",
    "/etc/apt/apt.conf.d/20auto-upgrades": ('APT::Periodic::Update-Package-Lists "1";\n'
                                            'APT::Periodic::Unattended-Upgrade "1";\n'),
    "/proc/net/tcp": TCP_HEADER + SSH_LISTEN,
    "/proc/net/udp": TCP_HEADER + NTP_UDP,
    "/proc/1/comm": "systemd\n", "/proc/1/cmdline": "/sbin/init\0splash\0",
    "/proc/212/comm": "auditd\n", "/proc/212/cmdline": "/sbin/auditd\0",
    "/proc/sys/net/ipv4/ip_forward": "0\n",
    "/proc/sys/kernel/randomize_va_space": "2\n",
    "/tmp": ("dir", 0o1777),
    "/usr/bin/passwd": ("file", "#!binary\n", 0o4755),
    "/usr/bin/ls": ("file", "#!binary\n", 0o755),
    "/var/log/syslog": ("file", "", 0o640),
}


def sshd_drop_in(line: str) -> dict:
    """A drop-in read before the main file: sshd's first-value-wins makes it effective."""
    return {"/etc/ssh/sshd_config.d/00-local.conf": line + "\n"}


# check id -> variants; a variant is (tree overrides, TLS server options or None)
MUTATIONS: dict[int, list[tuple[dict, dict | None]]] = {
    10001: [(sshd_drop_in("PermitRootLogin yes"), None),
            ({"/etc/ssh/sshd_config": ("file", SSHD.replace("PermitRootLogin no\n", ""), 0o600)}, None)],
    10002: [(sshd_drop_in("PermitEmptyPasswords yes"), None)],
    10003: [(sshd_drop_in("MaxAuthTries 6"), None),
            ({"/etc/ssh/sshd_config": ("file", SSHD.replace("MaxAuthTries 4\n", ""), 0o600)}, None)],
    10004: [(sshd_drop_in("X11Forwarding yes"), None)],
    10005: [(sshd_drop_in("PasswordAuthentication yes"), None),
            ({"/etc/ssh/sshd_config": ("file", SSHD.replace("KbdInteractiveAuthentication no\n", ""), 0o600)},
             None)],
    10006: [(sshd_drop_in("LogLevel QUIET"), None)],
    10007: [({"/etc/ssh/sshd_config": ("file", SSHD, 0o644)}, None),
            ({"/etc/ssh/sshd_config": ("file", SSHD, 0o620)}, None)],
    10008: [(sshd_drop_in("ClientAliveInterval 0"), None), (sshd_drop_in("ClientAliveInterval 3600"), None)],
    10101: [({"/etc/login.defs": "PASS_MAX_DAYS 99999\nPASS_MIN_DAYS 1\nENCRYPT_METHOD YESCRYPT\n"}, None)],
    10102: [({"/etc/login.defs": "PASS_MAX_DAYS 365\nPASS_MIN_DAYS 0\nENCRYPT_METHOD YESCRYPT\n"}, None)],
    10103: [({"/etc/security/pwquality.conf": "minlen = 8\n"}, None),
            ({"/etc/pam.d/common-password": COMMON_PASSWORD.replace("retry=3", "retry=3 minlen=10")}, None),
            ({"/etc/pam.d/common-password": COMMON_PASSWORD.replace("pam_pwquality.so", "pam_permit.so")}, None)],
    10104: [({"/etc/login.defs": "PASS_MAX_DAYS 365\nPASS_MIN_DAYS 1\nENCRYPT_METHOD MD5\n"}, None),
            ({"/etc/pam.d/common-password": COMMON_PASSWORD.replace("yescrypt", "md5")}, None)],
    10105: [({"/etc/pam.d/common-password": COMMON_PASSWORD.replace(" remember=5", "")}, None)],
    10201: [({"/var/lib/dpkg/status": dpkg(*(p for p in PACKAGES if p != "nftables"))}, None)],
    10202: [({"/etc/systemd/system/multi-user.target.wants/nftables.service": None}, None),
            ({"/etc/systemd/system/nftables.service": ("link", "/dev/null")}, None)],
    10203: [({"/proc/net/tcp": TCP_HEADER + SSH_LISTEN + SSH_LISTEN.replace("00000000:0016", "0100007F:0017")},
             None),
            ({"/proc/net/udp": TCP_HEADER + NTP_UDP.replace(":007B", ":0045")}, None)],
    10204: [({"/var/lib/dpkg/status": dpkg(*PACKAGES, "telnetd")}, None)],
    10301: [({"/etc/systemd/system/multi-user.target.wants/auditd.service": None}, None),
            ({"/var/lib/dpkg/status": dpkg(*(p for p in PACKAGES if p != "auditd"))}, None)],
    10302: [({"/etc/audit/rules.d/50-identity.rules": "-w /etc/passwd -p wa -k identity\n"}, None),
            ({"/etc/audit/rules.d/50-identity.rules": "#-w /etc/passwd -p wa\n-w /etc/shadow -p wa\n"}, None)],
    10303: [({"/etc/systemd/system/multi-user.target.wants/rsyslog.service": None}, None)],
    10304: [({"/proc/212": None}, None)],
    10401: [({"/var/lib/dpkg/status": dpkg(*(p for p in PACKAGES if p != "unattended-upgrades"))}, None)],
    10402: [({"/etc/apt/apt.conf.d/20auto-upgrades": 'APT::Periodic::Update-Package-Lists "1";\n'
                                                      'APT::Periodic::Unattended-Upgrade "0";\n'}, None)],
    10501: [({}, {"min_version": "TLSv1"})],
    10502: [({}, {"days": 10})],
    10601: [({"/srv/share/notes.txt": ("file", "x", 0o666)}, None), ({"/srv/drop": ("dir", 0o777)}, None)],
    10602: [({"/usr/local/bin/helper": ("file", "#!binary\n", 0o4755)}, None),
            ({"/usr/bin/passwd.bak": ("file", "#!binary\n", 0o4711)}, None)],
    10701: [({"/var/lib/dpkg/status": dpkg(*(p for p in PACKAGES if p != "chrony"))}, None)],
    10702: [({"/etc/systemd/system/multi-user.target.wants/chrony.service": None}, None)],
    10801: [({"/proc/sys/net/ipv4/ip_forward": "1\n"}, None),
            ({"/proc/sys": None, "/etc/sysctl.d/99-router.conf": "net.ipv4.ip_forward = 1\n",
              "/etc/sysctl.conf": "kernel.randomize_va_space = 2\n"}, None)],
    10802: [({"/proc/sys/kernel/randomize_va_space": "0\n"}, None)],
    # identity files: modes outside 0644 / 0640 that are not world-writable (that is 10601's failure)
    10901: [({"/etc/passwd": ("file", PASSWD, 0o664)}, None), ({"/etc/passwd": ("file", PASSWD, 0o744)}, None)],
    10902: [({"/etc/passwd-": ("file", PASSWD, 0o654)}, None)],
    10903: [({"/etc/group": ("file", f"root:x:{GID}:\n", 0o654)}, None)],
    10904: [({"/etc/group-": ("file", f"root:x:{GID}:\n", 0o645)}, None)],
    10905: [({"/etc/shadow": ("file", SHADOW, 0o644)}, None), ({"/etc/shadow": ("file", SHADOW, 0o660)}, None),
            ({"/etc/shadow": ("file", SHADOW, 0o740)}, None)],
    10906: [({"/etc/shadow-": ("file", SHADOW, 0o604)}, None)],
    10907: [({"/etc/gshadow": ("file", "root:*::\n", 0o650)}, None)],
    10908: [({"/etc/gshadow-": ("file", "root:*::\n", 0o644)}, None)],
}

# (check, variant) -> a text its evidence must contain: the file, file:line or value the mutation put there.
EVIDENCE: dict[tuple[int, int], str] = {
    (10001, 0): "permitrootlogin yes (/etc/ssh/sshd_config.d/00-local.conf:1)",
    (10001, 1): "permitrootlogin prohibit-password (default)",
    (10003, 0): "maxauthtries 6 (/etc/ssh/sshd_config.d/00-local.conf:1)",
    (10005, 1): "kbdinteractiveauthentication yes (default)",
    (10007, 0): "/etc/ssh/sshd_config: mode 0644",
    (10101, 0): "pass_max_days 99999 (/etc/login.defs:1)",
    (10103, 0): "minlen 8 (/etc/security/pwquality.conf:1)",
    (10103, 1): "minlen 10 (/etc/pam.d/common-password:1)",
    (10104, 1): "hash md5 (/etc/pam.d/common-password:2)",
    (10201, 0): "package nftables not installed",
    (10202, 1): "unit nftables.service: masked",
    (10203, 0): "listening: tcp 127.0.0.1:23",
    (10204, 0): "package telnetd: version 1.0",
    (10302, 0): "no file under /etc/audit/rules.d named r:.rules$ has a line matching r:^-w /etc/shadow -p wa",
    (10303, 0): "no line of file /etc/systemd/journald.conf matches r:^Storage=persistent",
    (10304, 0): "no process matches auditd",
    (10501, 0): "protocol TLSv1",
    (10502, 0): "cert_days_left 9",
    (10601, 0): "-rw-rw-rw- /srv/share/notes.txt",
    (10601, 1): "drwxrwxrwx /srv/drop",
    (10602, 0): "-rwsr-xr-x /usr/local/bin/helper",
    (10801, 0): "net.ipv4.ip_forward = 1 (/proc/sys/net/ipv4/ip_forward)",
    (10801, 1): "net.ipv4.ip_forward = 1 (/etc/sysctl.d/99-router.conf:1)",
    (10802, 0): "kernel.randomize_va_space = 0 (/proc/sys/kernel/randomize_va_space)",
    (10901, 0): "/etc/passwd: mode 0664, owner root, group root",
    (10901, 1): "/etc/passwd: mode 0744",
    (10902, 0): "/etc/passwd-: mode 0654",
    (10905, 0): "/etc/shadow: mode 0644, owner root, group root",
    (10905, 2): "/etc/shadow: mode 0740",
    (10908, 0): "/etc/gshadow-: mode 0644",
}


def scan(root: Path, endpoint: str) -> dict[int, object]:
    policy = load_policy(BASELINE, {"$tls_endpoint": endpoint})
    return {r.check.id: r for r in Scanner(str(root), probe_tls=True).scan(policy).results}


def test_every_check_has_pass_and_fail_fixtures():
    ids = {c.id for c in load_policy(BASELINE).checks}
    assert ids == set(MUTATIONS), f"checks without fixtures: {ids - set(MUTATIONS)}; stale: {set(MUTATIONS) - ids}"


def test_compliant_tree_passes_every_check(make_tree, tls_server):
    results = scan(make_tree(GOOD), tls_server().endpoint)
    bad = {cid: (r.status, r.reason) for cid, r in results.items() if r.status != "passed"}
    assert bad == {}


@pytest.mark.parametrize(("check_id", "variant"),
                         [(cid, i) for cid, variants in MUTATIONS.items() for i in range(len(variants))])
def test_mutation_fails_only_its_check(make_tree, tls_server, check_id, variant):
    overrides, tls_options = MUTATIONS[check_id][variant]
    root = make_tree(GOOD, overrides)
    results = scan(root, tls_server(**(tls_options or {})).endpoint)
    result = results[check_id]
    assert result.status == "failed", result.reason
    assert result.evidence, f"{check_id} failed without naming what failed it"
    if (check_id, variant) in EVIDENCE:
        assert any(EVIDENCE[check_id, variant] in item for item in result.evidence), result.evidence
    others = {cid: (r.status, r.reason) for cid, r in results.items() if cid != check_id and r.status != "passed"}
    assert others == {}


def test_tls_checks_not_applicable_without_a_service(make_tree):
    from tests.compliance.conftest import free_port

    results = scan(make_tree(GOOD), f"127.0.0.1:{free_port()}")
    for cid in (10501, 10502):
        assert results[cid].status == "not applicable"
        assert "not found" in results[cid].reason


def test_image_without_proc_makes_runtime_checks_not_applicable(make_tree, tls_server):
    root = make_tree(GOOD, {"/proc": None, "/etc/sysctl.d/60-baseline.conf":
                            "net.ipv4.ip_forward=0\nkernel.randomize_va_space = 2\n"})
    results = scan(root, tls_server().endpoint)
    assert results[10304].status == "not applicable" and "/proc" in results[10304].reason
    assert results[10203].status == "not applicable" and "/proc/net" in results[10203].reason
    assert results[10801].status == "passed" and results[10802].status == "passed"  # from sysctl.d at boot


def test_requirements_gate_the_policy(make_tree, tls_server):
    root = make_tree(GOOD, {"/etc/debian_version": None, "/etc/os-release": "ID=rhel\nID_LIKE=fedora\n"})
    results = scan(root, tls_server().endpoint)
    assert {r.status for r in results.values()} == {"not applicable"}
    assert all("requirements not met" in r.reason for r in results.values())


IDENTITY = range(10901, 10909)


def test_owner_and_group_names_of_the_identity_files(make_tree, tls_server):
    """Owner and group are read as names from the tree's own /etc/passwd and /etc/group: renaming the tree's
    owner fails every owner check at once, and group "shadow" is accepted for shadow and gshadow only."""
    endpoint = tls_server().endpoint
    admin = make_tree(GOOD, {"/etc/passwd": f"admin:x:{UID}:{GID}::/home/admin:/bin/sh\n"})
    results = scan(admin, endpoint)
    assert {cid for cid, r in results.items() if r.status != "passed"} == {10007, *IDENTITY}
    for cid in IDENTITY:
        assert results[cid].status == "failed" and "owner admin" in results[cid].evidence[0]

    shadow = make_tree(GOOD, {"/etc/group": f"shadow:x:{GID}:\n"})
    results = scan(shadow, endpoint)
    assert {cid for cid, r in results.items() if r.status != "passed"} == {10901, 10902, 10903, 10904}
    assert results[10903].evidence == ["/etc/group: mode 0644, owner root, group shadow"]


def test_identity_mode_rules_agree_with_mode_arithmetic(make_tree):
    """Oracle: for all 4096 modes, "0644 (0640) or stricter" holds exactly when no bit outside 0644 (0640) is set."""
    import dataclasses

    policy = load_policy(BASELINE)
    policy = dataclasses.replace(policy, checks=tuple(c for c in policy.checks if c.id in (10901, 10905)))
    root = make_tree(GOOD)
    disagree = []
    for mode in range(0o10000):
        os.chmod(root / "etc/passwd", mode)
        os.chmod(root / "etc/shadow", mode)
        got = {r.check.id: r.status for r in Scanner(str(root)).scan(policy).results}
        want = {10901: "passed" if mode & ~0o644 == 0 else "failed",
                10905: "passed" if mode & ~0o640 == 0 else "failed"}
        if got != want:
            disagree.append((oct(mode), got))
    assert disagree == []
