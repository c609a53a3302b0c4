"""Typed locations against independent truth: the live kernel's tables, real sockets, real TLS handshakes,
and the documented precedence rules of sshd, sysctl, systemd and PAM."""

from __future__ import annotations

import os
import socket

import pytest

from sensors.compliance.probes import Probes
from sensors.compliance.rootfs import RootFS, Unreadable


def probes(root) -> Probes:
    return Probes(RootFS(str(root)), probe_tls=True)


def test_listening_ports_match_a_real_socket():
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        assert f"tcp 127.0.0.1:{port}" in probes("/").lines("port", "tcp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        assert f"udp 127.0.0.1:{udp.getsockname()[1]}" in probes("/").lines("port", "udp")


def test_ipv6_listening_socket():
    if not socket.has_ipv6 or not os.path.exists("/proc/net/tcp6"):
        pytest.skip("no IPv6 on this host (/proc/net/tcp6 absent)")
    try:
        srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    with srv:
        assert f"tcp6 [::1]:{srv.getsockname()[1]}" in probes("/").lines("port", "tcp6")


def test_processes_include_this_test_run():
    with open(f"/proc/{os.getpid()}/comm") as fh:
        comm = fh.read().strip()
    assert comm in probes("/").lines("processes", "")


def test_live_sysctl():
    with open("/proc/sys/kernel/ostype") as fh:
        assert probes("/").lines("sysctl", "kernel.ostype") == [fh.read().strip()]


def test_sysctl_config_precedence(make_tree):
    root = make_tree({
        "/usr/lib/sysctl.d/10-a.conf": "net.x = 2\n",        # shadowed by /etc/sysctl.d/10-a.conf
        "/etc/sysctl.d/10-a.conf": "net.x = 1\nnet.y=5\n",
        "/usr/lib/sysctl.d/20-b.conf": "net/x = 3\n-net.z = 9\n",
        "/etc/sysctl.conf": "# net.y = 0\nnet.y = 6\n",
    })
    p = probes(root)
    assert p.lines("sysctl", "net.x") == ["3"]      # files apply in name order; 20-b.conf is last
    assert p.lines("sysctl", "net.y") == ["6"]      # /etc/sysctl.conf applies after sysctl.d
    assert p.lines("sysctl", "net.z") == ["9"]
    assert p.lines("sysctl", "net.none") is None
    # where each value was set: the file and line that won, as evidence shows it
    assert p.lines("sysctl", "net.x").where == ["/usr/lib/sysctl.d/20-b.conf:1"]
    assert p.lines("sysctl", "net.y").where == ["/etc/sysctl.conf:2"]
    assert p.evidence("sysctl", "net.z", p.lines("sysctl", "net.z"), 0) == "net.z = 9 (/usr/lib/sysctl.d/20-b.conf:2)"


def test_sshd_effective_settings(make_tree):
    root = make_tree({
        "/etc/ssh/sshd_config": "Include sshd_config.d/*.conf\nPort 22\nPort 2222\nPermitRootLogin yes\n"
                                "MaxAuthTries=3\nMatch User backup\n  PasswordAuthentication yes\n  MaxAuthTries 9\n",
        "/etc/ssh/sshd_config.d/50-local.conf": "permitrootlogin no\n# X11Forwarding yes\n",
        "/etc/ssh/sshd_config.d/README": "X11Forwarding yes\n",
    })
    p = probes(root)
    assert p.lines("sshd", "PermitRootLogin") == ["no"]          # first obtained value wins (the Include)
    assert p.lines("sshd", "port") == ["22", "2222"]
    assert p.lines("sshd", "maxauthtries") == ["3"]
    assert p.lines("sshd", "passwordauthentication") == ["yes"]  # the default; Match blocks are not global
    assert p.lines("sshd", "x11forwarding") == ["no"]            # README is not *.conf; comment ignored
    assert "permitrootlogin no" in p.lines("sshd", "")
    assert p.lines("sshd", "PermitRootLogin").where == ["/etc/ssh/sshd_config.d/50-local.conf:1"]
    assert p.lines("sshd", "port").where == ["/etc/ssh/sshd_config:2", "/etc/ssh/sshd_config:3"]
    assert p.lines("sshd", "passwordauthentication").where == ["default"]
    assert probes(make_tree({"/etc/x": "y"})).lines("sshd", "port") is None


def test_dpkg_status(make_tree):
    root = make_tree({"/var/lib/dpkg/status": "Package: a\nStatus: install ok installed\nVersion: 1.2\n\n"
                                             "Package: b\nStatus: deinstall ok config-files\nVersion: 3\n"})
    p = probes(root)
    assert p.lines("pkg", "a") == ["version 1.2"]
    assert p.lines("pkg", "b") is None
    with pytest.raises(Unreadable, match="dpkg"):
        probes(make_tree({"/etc/x": "y"})).lines("pkg", "a")


def test_systemd_unit_states(make_tree):
    install = "[Service]\nExecStart=/x\n[Install]\nWantedBy=multi-user.target\n"
    root = make_tree({
        "/lib/systemd/system/on.service": install,
        "/etc/systemd/system/multi-user.target.wants/on.service": ("link", "/lib/systemd/system/on.service"),
        "/lib/systemd/system/off.service": install,
        "/lib/systemd/system/static.service": "[Service]\nExecStart=/x\n",
        "/lib/systemd/system/masked.service": install,
        "/etc/systemd/system/masked.service": ("link", "/dev/null"),
        "/etc/systemd/system/alias.service": ("link", "/lib/systemd/system/on.service"),
    })
    p = probes(root)
    states = {u: p.lines("svc", u) for u in ("on", "off.service", "static", "masked", "alias", "ghost")}
    assert states == {"on": ["enabled"], "off.service": ["disabled"], "static": ["static"], "masked": ["masked"],
                      "alias": ["enabled"], "ghost": ["not-found"]}


def test_password_policy_sources(make_tree):
    pam = ("password requisite pam_pwquality.so retry=3 minlen=12\n"
           "password [success=1 default=ignore] pam_unix.so sha512\n")
    root = make_tree({"/etc/login.defs": "PASS_MAX_DAYS 60\n#PASS_MIN_DAYS 9\n",
                      "/etc/pam.d/common-password": pam,
                      "/etc/security/pwquality.conf": "minlen = 16\ndcredit = -1\n",
                      "/etc/security/pwquality.conf.d/90.conf": "dcredit=-2\n"})
    p = probes(root)
    assert p.lines("pwpolicy", "pass_max_days") == ["60"]
    assert p.lines("pwpolicy", "pass_min_days") is None
    assert p.lines("pwpolicy", "minlen") == ["12"]                # PAM arguments override pwquality.conf
    assert p.lines("pwpolicy", "dcredit") == ["-2"]
    assert p.lines("pwpolicy", "hash") == ["sha512"]
    assert p.lines("pwpolicy", "remember") == ["0"]
    where = {k: p.lines("pwpolicy", k).where[0] for k in ("pass_max_days", "minlen", "dcredit", "hash", "remember",
                                                           "ucredit")}
    assert where == {"pass_max_days": "/etc/login.defs:1", "minlen": "/etc/pam.d/common-password:1",
                     "dcredit": "/etc/security/pwquality.conf.d/90.conf:1", "hash": "/etc/pam.d/common-password:2",
                     "remember": "pam_unix default", "ucredit": "pam_pwquality default"}
    plain = probes(make_tree({"/etc/pam.d/common-password": "password required pam_unix.so yescrypt\n"}))
    assert plain.lines("pwpolicy", "minlen") == ["6"]             # pam_unix's own default without pwquality


def test_stat_lines(make_tree):
    root = make_tree({"/etc/passwd": f"svc:x:{os.getuid()}:{os.getgid()}::/:/bin/false\n",
                      "/etc/group": f"svc:x:{os.getgid()}:\n", "/etc/f": ("file", "x", 0o2751)})
    lines = probes(root).lines("stat", "/etc/f")
    assert lines[:6] == ["mode 2751", "type file", f"uid {os.getuid()}", f"gid {os.getgid()}", "owner svc",
                         "group svc"]
    assert "sgid yes" in lines and "other_exec yes" in lines and "other_read no" in lines


def test_tls_probe_reports_versions_and_certificate(tls_server):
    server = tls_server(days=100)
    lines = probes("/").lines("tls", server.endpoint)
    assert "protocol TLSv1.2" in lines and "protocol TLSv1.3" in lines
    assert "protocol TLSv1" not in lines and "protocol TLSv1.1" not in lines
    days = int(next(line for line in lines if line.startswith("cert_days_left ")).split()[1])
    assert days in (99, 100)
    assert "cert_self_signed yes" in lines and "cert_subject CN=localhost" in lines
    legacy = probes("/").lines("tls", tls_server(min_version="TLSv1").endpoint)
    assert "protocol TLSv1" in legacy


def test_tls_not_probed_under_root_by_default(make_tree, tls_server):
    p = Probes(RootFS(str(make_tree({"/etc/x": "y"}))), probe_tls=False)
    with pytest.raises(Unreadable, match="live host"):
        p.lines("tls", tls_server().endpoint)
