"""Every national-baseline check passes on a compliant tree and fails on a tree that breaks only that check.

The compliant tree is one compact spec; each check has one or more mutations of it. A mutation must flip its own
check to "failed" and leave every other check "passed" (so a rule that silently matches the wrong thing fails
here, the class of bug Wazuh shipped in its CIS policies, wazuh/wazuh#10600 and #32443).
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

GOOD: dict = {
    "/etc/debian_version": "12.5\n",
    "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n',
    "/etc/passwd": f"root:x:{UID}:{GID}:root:/root:/bin/bash\n",
    "/etc/group": f"root:x:{GID}:\n",
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
            ({"/etc/ssh/sshd_config": ("file", SSHD, 0o620)}, None),
            ({"/etc/passwd": f"admin:x:{UID}:{GID}::/home/admin:/bin/sh\n"}, None)],
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
    assert results[check_id].status == "failed", results[check_id].reason
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
