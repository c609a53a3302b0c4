"""Typed locations: each turns host state under a RootFS into text lines that SCA content operators test.

A probe returns the lines of one target, None when the target does not exist, or raises Unreadable with the
reason the target could not be examined (the rule is then not applicable). Probes whose lines are values taken from
configuration return `Lines`, which also name where each value came from (`file:line`, a default), so a failed
check can show the evidence (`Probes.evidence`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
import socket
import ssl
import stat
import warnings
from functools import cached_property

from sensors.compliance.rootfs import RootFS, Unreadable

# sshd's compiled-in defaults as `sshd -T` prints them (OpenSSH 9.x); keys are lower-case like sshd -T.
SSHD_DEFAULTS = {
    "port": "22", "addressfamily": "any", "permitrootlogin": "prohibit-password", "pubkeyauthentication": "yes",
    "passwordauthentication": "yes", "permitemptypasswords": "no", "kbdinteractiveauthentication": "yes",
    "hostbasedauthentication": "no", "ignorerhosts": "yes", "maxauthtries": "6", "maxsessions": "10",
    "maxstartups": "10:30:100", "logingracetime": "120", "clientaliveinterval": "0", "clientalivecountmax": "3",
    "x11forwarding": "no", "allowtcpforwarding": "yes", "allowagentforwarding": "yes", "permittunnel": "no",
    "gatewayports": "no", "disableforwarding": "no", "permituserenvironment": "no", "loglevel": "INFO",
    "syslogfacility": "AUTH", "usepam": "no", "strictmodes": "yes", "usedns": "no", "banner": "none",
    "gssapiauthentication": "no", "compression": "yes", "tcpkeepalive": "yes", "printmotd": "yes",
}
_SSHD_MULTI = {"port", "listenaddress", "hostkey", "acceptenv", "subsystem", "setenv", "allowusers",
               "allowgroups", "denyusers", "denygroups"}
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")
UNIT_NOT_FOUND = "not-found"
FIND_SKIP = ("/proc", "/sys", "/dev", "/run")
PWQUALITY_DEFAULTS = {"minlen": "8", "minclass": "0", "dcredit": "0", "ucredit": "0", "lcredit": "0",
                      "ocredit": "0", "maxrepeat": "0", "dictcheck": "1", "enforcing": "1", "retry": "1"}
_PAM_UNIX_HASHES = ("md5", "bigcrypt", "sha256", "sha512", "blowfish", "gost_yescrypt", "yescrypt")
TLS_VERSIONS = (("TLSv1", "TLSv1"), ("TLSv1.1", "TLSv1_1"), ("TLSv1.2", "TLSv1_2"), ("TLSv1.3", "TLSv1_3"))
# Kinds whose lines are the values of one setting (shown as evidence when none matches); the others are listings
# (a file, a tree, sockets, processes), of which only matching lines are evidence.
VALUE_KINDS = frozenset({"sysctl", "sshd", "pkg", "svc", "stat", "pwpolicy", "tls"})
EVIDENCE_WIDTH = 240  # characters of one evidence item (a minified file line is cut, marked with …)


class Lines(list):
    """A probe's lines with, per line, where it came from (`/etc/sysctl.d/60.conf:3`, `default`)."""

    __slots__ = ("where",)

    def __init__(self, lines: list[str], where: list[str]) -> None:
        super().__init__(lines)
        self.where = where


def _valued(pairs: list[tuple[str, str]] | None) -> Lines | None:
    """(value, source) pairs as Lines; None stays None."""
    return None if pairs is None else Lines([v for v, _ in pairs], [w for _, w in pairs])


def one_line(text: str) -> str:
    """`text` as one printable line (controls escaped as in a repr), cut to EVIDENCE_WIDTH characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= EVIDENCE_WIDTH else text[: EVIDENCE_WIDTH - 1] + "…"


class Probes:
    """Typed location readers over one RootFS (results are cached for the scan)."""

    def __init__(self, fs: RootFS, probe_tls: bool, tls_timeout: float = 3.0) -> None:
        self.fs = fs
        self.probe_tls = probe_tls
        self.tls_timeout = tls_timeout
        self._cache: dict[tuple[str, str], list[str] | None | Unreadable] = {}

    def lines(self, kind: str, target: str) -> list[str] | None:
        key = (kind, target)
        if key not in self._cache:
            try:
                self._cache[key] = getattr(self, f"_{kind}")(target)
            except Unreadable as exc:
                self._cache[key] = exc
        value = self._cache[key]
        if isinstance(value, Unreadable):
            raise value
        return value

    def evidence(self, kind: str, target: str, lines: list[str], index: int) -> str:
        """Line `index` of a probe's `lines` as evidence naming its place: `/etc/x.conf:3: text`,
        `/etc/shadow: mode 0666, owner root, group root`, `net.ipv4.ip_forward = 1 (/proc/sys/net/ipv4/ip_forward)`."""
        line = lines[index]
        where = lines.where[index] if isinstance(lines, Lines) else ""
        if kind == "f":
            text = f"{target}:{index + 1}: {line}"
        elif kind == "stat":  # one summary per path: every matching attribute line gives the same item
            attrs = dict(item.split(" ", 1) for item in lines)
            text = f"{target}: mode {attrs['mode']}, owner {attrs['owner']}, group {attrs['group']}"
        elif kind == "sysctl":
            text = f"{target} = {line} ({where})"
        elif kind in ("sshd", "pwpolicy"):
            text = f"{target.lower()} {line} ({where})" if target else f"{line} ({where})"
        else:
            text = _EVIDENCE[kind].format(target=target, line=line)
        return one_line(text)

    # -- files, processes -------------------------------------------------------------------------------
    def _f(self, path: str) -> list[str] | None:
        try:
            return self.fs.read_lines(path)
        except FileNotFoundError:
            return None

    def _processes(self, _: str = "") -> list[str]:
        names: set[str] = set()
        if not self.fs.is_dir("/proc"):
            raise Unreadable("no /proc in the scanned root: process state is unknown")
        for pid in self.fs.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                comm = self.fs.read_text(f"/proc/{pid}/comm").strip()
                argv = [a for a in self.fs.read_text(f"/proc/{pid}/cmdline").split("\0") if a]
            except (FileNotFoundError, Unreadable):
                continue  # the process exited or is not ours to read
            names.add(comm)
            if argv:
                names.update((argv[0], os.path.basename(argv[0]), " ".join(argv)))
        return sorted(n for n in names if n)

    # -- sysctl ---------------------------------------------------------------------------------------------
    def _sysctl(self, key: str) -> list[str] | None:
        dotted = key.replace("/", ".")
        proc = "/proc/sys/" + dotted.replace(".", "/")
        if self.fs.is_file(proc):
            return Lines([" ".join(self.fs.read_text(proc).split())], [proc])
        value = self._sysctl_config.get(dotted)
        return None if value is None else Lines([" ".join(value[0].split())], [value[1]])

    @cached_property
    def _sysctl_config(self) -> dict[str, tuple[str, str]]:
        """What `sysctl --system` applies at boot: *.conf by name across the sysctl.d directories, then sysctl.conf."""
        chosen: dict[str, str] = {}
        for directory in SYSCTL_DIRS:  # earlier directories shadow files of the same name
            for name in self.fs.listdir(directory):
                if name.endswith(".conf"):
                    chosen.setdefault(name, f"{directory}/{name}")
        values: dict[str, tuple[str, str]] = {}  # key -> (value, file:line)
        for path in [chosen[n] for n in sorted(chosen)] + ["/etc/sysctl.conf"]:
            for number, line in enumerate(self._f(path) or [], 1):
                line = line.strip()
                if not line or line[0] in "#;" or "=" not in line:
                    continue
                k, _, v = line.partition("=")
                values[k.strip().lstrip("-").replace("/", ".")] = (v.strip(), f"{path}:{number}")
        return values

    # -- sshd -----------------------------------------------------------------------------------------------
    def _sshd(self, keyword: str) -> list[str] | None:
        config = self._sshd_effective
        if config is None:
            return None
        if not keyword:
            return _valued([(f"{k} {v}", w) for k, values in sorted(config.items()) for v, w in values])
        return _valued(config.get(keyword.lower()))

    @cached_property
    def _sshd_effective(self) -> dict[str, list[tuple[str, str]]] | None:
        """Global settings as sshd applies them: Includes expanded in place, first value wins, Match excluded.
        Each value comes with its `file:line` (or `default`)."""
        if not self.fs.is_file("/etc/ssh/sshd_config"):
            return None
        found: dict[str, list[tuple[str, str]]] = {}
        self._sshd_file("/etc/ssh/sshd_config", found, depth=0)
        return {k: [(v, "default")] for k, v in SSHD_DEFAULTS.items()} | found

    def _sshd_file(self, path: str, found: dict[str, list[tuple[str, str]]], depth: int) -> None:
        if depth > 16:
            raise Unreadable(f"sshd Include nesting too deep at {path}")
        for number, raw in enumerate(self.fs.read_lines(path), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([A-Za-z0-9]+)\s*(?:=\s*|\s+)(.*)$", line)
            if not m:
                continue
            key, value = m.group(1).lower(), m.group(2).strip()
            if key == "match":
                return  # Match blocks are conditional: the effective global settings end here
            if key == "include":
                for pattern in value.split():
                    if not pattern.startswith("/"):
                        pattern = "/etc/ssh/" + pattern
                    directory, _, glob = pattern.rpartition("/")
                    for name in self.fs.listdir(directory or "/"):
                        if fnmatch.fnmatchcase(name, glob) and self.fs.is_file(f"{directory}/{name}"):
                            self._sshd_file(f"{directory}/{name}", found, depth + 1)
                continue
            if key in _SSHD_MULTI:
                found.setdefault(key, []).append((value, f"{path}:{number}"))
            elif key not in found:  # sshd: the first obtained value wins
                found[key] = [(value, f"{path}:{number}")]

    # -- packages, services ---------------------------------------------------------------------------------
    def _pkg(self, name: str) -> list[str] | None:
        return self._dpkg.get(name)

    @cached_property
    def _dpkg(self) -> dict[str, list[str]]:
        try:
            text = self.fs.read_text("/var/lib/dpkg/status")
        except FileNotFoundError as exc:
            raise Unreadable("no dpkg database (/var/lib/dpkg/status)") from exc
        installed: dict[str, list[str]] = {}
        for para in text.split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", para, re.M))
            if fields.get("Status", "").split()[-1:] == ["installed"] and "Package" in fields:
                installed[fields["Package"]] = [f"version {fields.get('Version', '')}"]
        return installed

    def _svc(self, unit: str) -> list[str] | None:
        if "." not in unit:
            unit += ".service"
        for _ in range(8):  # follow aliases (/etc/systemd/system/NAME -> other.service)
            for directory in UNIT_DIRS[:2]:
                link = self.fs.readlink(f"{directory}/{unit}")
                if link in ("/dev/null",):
                    return ["masked"]
            alias = self.fs.readlink(f"/etc/systemd/system/{unit}")
            if alias and os.path.basename(alias) != unit:
                unit = os.path.basename(alias)
                continue
            break
        unit_file = next((f"{d}/{unit}" for d in UNIT_DIRS if self.fs.is_file(f"{d}/{unit}")), None)
        if unit_file is None:
            return [UNIT_NOT_FOUND]  # a known state, as `systemctl is-enabled` reports it
        for wants in self.fs.listdir("/etc/systemd/system"):
            if wants.endswith((".wants", ".requires")) and unit in self.fs.listdir(f"/etc/systemd/system/{wants}"):
                return ["enabled"]
        text = self.fs.read_text(unit_file)
        install = re.search(r"^\[Install\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        if install and re.search(r"^\s*(WantedBy|RequiredBy|Alias|Also)\s*=", install.group(1), re.M):
            return ["disabled"]
        return ["static"]

    # -- network ----------------------------------------------------------------------------------------------
    def _port(self, which: str) -> list[str]:
        which = which or "all"
        tables = [t for t in ("tcp", "tcp6", "udp", "udp6")
                  if which == "all" or t == which or (which in ("tcp4", "udp4") and t == which[:3])
                  or (which in ("tcp", "udp") and t.startswith(which))]
        lines, seen_any = [], False
        for table in tables:
            try:
                rows = self.fs.read_lines(f"/proc/net/{table}")
            except FileNotFoundError:
                continue
            seen_any = True
            for row in rows[1:]:
                cols = row.split()
                if len(cols) < 4:
                    continue
                listening = cols[3] == "0A" if table.startswith("tcp") else cols[3] == "07"
                if not listening or (table.startswith("udp") and not set(cols[2]) <= {"0", ":"}):
                    continue
                addr, port = _decode_addr(cols[1])
                lines.append(f"{table} {addr}:{port}")
        if not seen_any:
            raise Unreadable("no /proc/net tables in the scanned root: listening ports are unknown")
        return sorted(set(lines))

    def _tls(self, endpoint: str) -> list[str] | None:
        if not self.probe_tls:
            raise Unreadable("TLS endpoints are probed on the live host only (scan --root / or --probe-tls)")
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        lines, der = [], None
        for label, attr in TLS_VERSIONS:
            version = getattr(ssl.TLSVersion, attr)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    if version < ssl.TLSVersion.TLSv1_3:
                        ctx.set_ciphers("ALL:@SECLEVEL=0")
                    ctx.minimum_version = ctx.maximum_version = version
            except (ValueError, ssl.SSLError) as exc:
                raise Unreadable(f"this host's OpenSSL cannot offer {label}, so its support is unknown") from exc
            try:
                with socket.create_connection((host, int(port)), timeout=self.tls_timeout) as sock, \
                        ctx.wrap_socket(sock) as tls:
                    lines.append(f"protocol {tls.version()}")
                    der = der or tls.getpeercert(binary_form=True)
            except ConnectionRefusedError:
                return None
            except (ssl.SSLError, OSError):
                continue  # handshake refused for this version
        if der is None:
            raise Unreadable(f"{endpoint} accepted no TLS handshake")
        return lines + _cert_lines(der)

    # -- files: metadata and tree walks ---------------------------------------------------------------------
    def _stat(self, path: str) -> list[str] | None:
        st = self.fs.stat(path)
        if st is None:
            return None
        mode = st.st_mode
        kind = "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"
        bits = {"suid": stat.S_ISUID, "sgid": stat.S_ISGID, "sticky": stat.S_ISVTX, "group_read": stat.S_IRGRP,
                "group_write": stat.S_IWGRP, "group_exec": stat.S_IXGRP, "other_read": stat.S_IROTH,
                "other_write": stat.S_IWOTH, "other_exec": stat.S_IXOTH}
        return [f"mode {stat.S_IMODE(mode):04o}", f"type {kind}", f"uid {st.st_uid}", f"gid {st.st_gid}",
                f"owner {self._name('/etc/passwd', st.st_uid)}", f"group {self._name('/etc/group', st.st_gid)}",
                *(f"{name} {'yes' if mode & bit else 'no'}" for name, bit in bits.items())]

    def _name(self, db: str, number: int) -> str:
        try:
            for line in self.lines("f", db) or []:
                cols = line.split(":")
                if len(cols) > 2 and cols[2] == str(number):
                    return cols[0]
        except Unreadable:
            pass
        return str(number)

    def _find(self, top: str) -> list[str] | None:
        if not self.fs.is_dir(top):
            return None
        skip = frozenset(FIND_SKIP)
        return [f"{stat.filemode(st.st_mode)} {path}" for path, st in self.fs.walk(top, skip)]

    # -- password policy ------------------------------------------------------------------------------------
    def _pwpolicy(self, key: str) -> list[str] | None:
        value = self._password_policy.get(key.lower())
        return None if value is None else Lines([value[0]], [value[1]])

    @cached_property
    def _password_policy(self) -> dict[str, tuple[str, str]]:
        """login.defs settings plus the effective PAM password rules of /etc/pam.d/common-password, each value
        with where it was set (`file:line`, or the module's default)."""
        policy: dict[str, tuple[str, str]] = {}
        for number, line in enumerate(self._f("/etc/login.defs") or [], 1):
            cols = line.split()
            if len(cols) >= 2 and not cols[0].startswith("#"):
                policy[cols[0].lower()] = (cols[1], f"/etc/login.defs:{number}")
        pam_file = "/etc/pam.d/common-password"
        modules = {name: (args, f"{pam_file}:{number}")
                   for name, args, number in _pam_stack(self._f(pam_file) or [], "password")}
        quality = next((m for m in ("pam_pwquality.so", "pam_cracklib.so") if m in modules), None)
        if quality:
            module = quality.removesuffix(".so")
            policy.update({k: (v, f"{module} default") for k, v in PWQUALITY_DEFAULTS.items()})
            conf = ["/etc/security/pwquality.conf"] + [
                f"/etc/security/pwquality.conf.d/{n}" for n in self.fs.listdir("/etc/security/pwquality.conf.d")
                if n.endswith(".conf")]
            for path in conf:
                for number, line in enumerate(self._f(path) or [], 1):
                    k, sep, v = line.split("#", 1)[0].partition("=")
                    if sep:
                        policy[k.strip().lower()] = (v.strip(), f"{path}:{number}")
            args, where = modules[quality]
            policy.update({k: (v, where) for k, v in _pam_args(args).items()})
            policy["pam_quality_module"] = (module, where)
        elif "pam_unix.so" in modules:
            args, where = modules["pam_unix.so"]
            minlen = _pam_args(args).get("minlen")
            policy["minlen"] = (minlen, where) if minlen else ("6", "pam_unix default")
        if "pam_unix.so" in modules:
            args, where = modules["pam_unix.so"]
            algorithm = next((a for a in args if a in _PAM_UNIX_HASHES), None)
            policy["hash"] = (algorithm, where) if algorithm else ("default", "pam_unix default")
            remember = _pam_args(args).get("remember")
            policy["remember"] = (remember, where) if remember else ("0", "pam_unix default")
        if "pam_pwhistory.so" in modules:
            args, where = modules["pam_pwhistory.so"]
            remember = _pam_args(args).get("remember")
            policy["remember"] = (remember, where) if remember else ("10", "pam_pwhistory default")
        return policy


def _pam_stack(lines: list[str], kind: str) -> list[tuple[str, list[str], int]]:
    """(module file name, arguments, line number) of the `kind` lines of a PAM file; `[a=b c=d]` controls skipped."""
    out = []
    for number, line in enumerate(lines, 1):
        rest = re.sub(r"\[[^\]]*\]", "ctl", line.split("#", 1)[0]).split()
        if len(rest) >= 3 and rest[0] == kind:
            out.append((os.path.basename(rest[2]), rest[3:], number))
    return out


def _pam_args(args: list[str]) -> dict[str, str]:
    return {k.lower(): v for k, sep, v in (a.partition("=") for a in args) if sep}


def _decode_addr(field: str) -> tuple[str, int]:
    hex_ip, _, hex_port = field.partition(":")
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host-endian
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    addr = socket.inet_ntop(family, words)
    return (addr if family == socket.AF_INET else f"[{addr}]"), int(hex_port, 16)


def _cert_lines(der: bytes) -> list[str]:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    days = (not_after - dt.datetime.now(dt.UTC)).total_seconds() // 86400
    return [f"cert_not_after {not_after.strftime('%Y-%m-%dT%H:%M:%SZ')}", f"cert_days_left {int(days)}",
            f"cert_expired {'yes' if days < 0 else 'no'}", f"cert_subject {cert.subject.rfc4514_string()}",
            f"cert_self_signed {'yes' if cert.issuer == cert.subject else 'no'}"]


_EVIDENCE = {"pkg": "package {target}: {line}", "svc": "unit {target}: {line}", "port": "listening: {line}",
             "find": "{line}", "tls": "{target}: {line}", "processes": "process {line}"}
