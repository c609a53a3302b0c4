"""Evaluate a policy against a host tree with Wazuh SCA semantics (rule results, condition aggregation)."""

from __future__ import annotations

import datetime as dt
import operator
import stat
import subprocess
from dataclasses import dataclass, field

from sensors.compliance.osregex import compile_osmatch, compile_osregex
from sensors.compliance.policy import Check, Policy
from sensors.compliance.probes import UNIT_NOT_FOUND, VALUE_KINDS, Probes, one_line
from sensors.compliance.rootfs import RootFS, Unreadable
from sensors.compliance.rules import Minterm, Rule

FOUND, NOT_FOUND, INVALID = 1, 0, -1
PASSED, FAILED, NOT_APPLICABLE, ERROR = "passed", "failed", "not applicable", "error"
EVIDENCE_CAP = 20  # evidence items kept per result; the rest are counted in `evidence_more`
_OPS = {"==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass(slots=True)
class CheckResult:
    """One check's result; a failed or error result names what failed it: `evidence` (files, `file:line: text`,
    values found; at most EVIDENCE_CAP items) and `evidence_more` (how many more there were)."""

    check: Check
    status: str
    reason: str = ""
    evidence: list[str] = field(default_factory=list)
    evidence_more: int = 0


@dataclass(slots=True)
class ScanResult:
    policy: Policy
    root: str
    started: dt.datetime
    results: list[CheckResult] = field(default_factory=list)
    requirements_met: bool = True
    requirements_reason: str = ""

    def counts(self) -> dict[str, int]:
        out = {PASSED: 0, FAILED: 0, NOT_APPLICABLE: 0, ERROR: 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def score(self) -> float | None:
        """Wazuh's score: passed / (passed + failed), in percent; None when nothing was decidable."""
        c = self.counts()
        decided = c[PASSED] + c[FAILED]
        return round(100.0 * c[PASSED] / decided, 1) if decided else None


def line_matches(line: str, content: tuple[Minterm, ...]) -> bool:
    """True when every minterm (after its `!`) holds for this line."""
    for term in content:
        if term.kind == "r":
            ok = term.regex.search(line) is not None
        elif term.kind == "n":
            ok = _compare(term, line)
        else:
            ok = line.lower() == term.pattern.lower()
        if ok == term.negated:
            return False
    return True


def _compare(term: Minterm, line: str) -> bool:
    m = term.regex.search(line)
    if not m or m.group(1) is None:
        return False
    try:
        value = int(m.group(1).strip())
    except ValueError:
        return False
    return _OPS[term.op](value, term.number)


class Scanner:
    """Runs checks read-only against `root`; commands only when `allow_commands` and scanning the live host."""

    def __init__(self, root: str = "/", allow_commands: bool = False, probe_tls: bool | None = None,
                 command_timeout: float = 30.0) -> None:
        self.fs = RootFS(root)
        self.allow_commands = allow_commands
        self.command_timeout = command_timeout
        self.probes = Probes(self.fs, self.fs.is_live if probe_tls is None else probe_tls)
        self._outputs: dict[str, list[str] | str] = {}  # command -> output lines or why it gave none (run once)

    def scan(self, policy: Policy, on_check=None) -> ScanResult:
        result = ScanResult(policy, self.fs.root, dt.datetime.now(dt.UTC))
        if policy.requirements is not None:
            req = self.evaluate(policy.requirements)
            if req.status != PASSED:
                result.requirements_met = False
                why = f": {req.reason}" if req.reason else ""
                result.requirements_reason = f"policy requirements not met ({policy.requirements.title}){why}"
        for check in policy.checks:
            if result.requirements_met:
                result.results.append(self.evaluate(check))
            else:
                result.results.append(CheckResult(check, NOT_APPLICABLE, result.requirements_reason))
            if on_check:
                on_check(check)
        return result

    def evaluate(self, check: Check) -> CheckResult:
        """Aggregate rule results exactly as Wazuh's SCA module does (including its early exits)."""
        agg = FOUND if check.condition == "all" else NOT_FOUND
        reason, culprits = "", check.rules  # under `any`, every rule failed it
        for rule in check.rules:
            try:
                found, why = self.eval_rule(rule)
            except Unreadable as exc:
                found, why = INVALID, str(exc)
            except Exception as exc:  # noqa: BLE001 - one broken probe must not stop the scan
                return CheckResult(check, ERROR, f"{rule.text}: {type(exc).__name__}: {exc}",
                                   [one_line(f"rule {rule.text}")])
            if found != INVALID and rule.negated:
                found = 1 - found
            if (check.condition == "all" and found == NOT_FOUND) or (check.condition != "all" and found == FOUND):
                agg, culprits = found, (rule,)
                break
            if found == INVALID:
                agg = INVALID
                reason = reason or why
        if check.condition == "none" and agg != INVALID:
            agg = 1 - agg
        if agg == INVALID:
            return CheckResult(check, NOT_APPLICABLE, reason)
        if agg == FOUND:
            return CheckResult(check, PASSED)
        items = self.evidence(check) or [one_line(f"rule {r.text}") for r in culprits]  # places unreadable now
        return CheckResult(check, FAILED, "", items[:EVIDENCE_CAP], max(0, len(items) - EVIDENCE_CAP))

    def evidence(self, check: Check) -> list[str]:
        """What makes `check` fail, every item once, in rule order: for each rule that counts against it (not
        found under `all`/`any`, found under `none`), the matching lines when the rule found something, else what
        was found instead (values, near misses, or that nothing matched). Run only for failed checks."""
        items: dict[str, None] = {}
        for rule in check.rules:
            try:
                found, _ = self.eval_rule(rule)
                if found == INVALID or ((1 - found if rule.negated else found) == FOUND) != (check.condition == "none"):
                    continue
                items.update(dict.fromkeys(self._rule_evidence(rule, found == FOUND)))
            except Exception:  # noqa: BLE001, S112 - evidence is best effort: the result is already decided
                continue
        return list(items)

    def _rule_evidence(self, rule: Rule, found: bool) -> list[str]:
        """The lines that match `rule` (found), or what its targets hold instead (not found)."""
        kind, content = rule.type, rule.content
        wanted = one_line(rule.text.rpartition(" -> ")[2]) if content is not None else ""
        if kind == "c":
            lines = self._outputs.get(rule.location)
            lines = lines if isinstance(lines, list) else []
            hits = [one_line(f"`{rule.location}`: {line}") for line in lines if line_matches(line, content)]
            return hits if found else [one_line(f"no output line of `{rule.location}` matches {wanted}")]
        if kind == "d":
            return self._directory_evidence(rule, found, wanted)
        if kind == "p":
            kind, targets, wanted = "processes", [""], one_line(rule.location)
        elif kind in ("f", "stat", "find"):
            targets = [t.strip() for t in rule.location.split(",")]
        else:
            targets = [rule.location]
        if rule.type == "f" and content is None:
            return [f"file {t} {'exists' if found else 'not found'}" for t in targets if self._is_file(t) == found]
        out: list[str] = []
        for target in targets:
            try:
                lines = self.probes.lines(kind, target)
            except Unreadable:
                continue
            if lines is None:
                if not found:
                    out.append(one_line(f"{_NAMES[kind]} {target} not found" if kind != "pkg"
                                        else f"package {target} not installed"))
                continue
            where = range(len(lines))
            if found:
                where = [i for i in where if content is None or line_matches(lines[i], content)]
            elif content is not None:
                near = [i for i in where if _near_miss(lines[i], content)]
                if near:
                    where = near
                elif kind not in VALUE_KINDS:
                    label = "process" if kind == "processes" else f"line of {_NAMES[kind]} {target}"
                    out.append(one_line(f"no {label} matches {wanted}"))
                    continue
            out += [self.probes.evidence(kind, target, lines, i) for i in where]
        return out

    def _is_file(self, path: str) -> bool | None:
        try:
            return self.fs.is_file(path)
        except Unreadable:
            return None

    def _directory_evidence(self, rule: Rule, found: bool, wanted: str) -> list[str]:
        out: list[str] = []
        for directory in (d.strip() for d in rule.location.split(",")):
            if rule.file is None:
                if self.fs.is_dir(directory) == found:
                    out.append(f"directory {directory} {'exists' if found else 'not found'}")
                continue
            if not self.fs.is_dir(directory):
                continue
            name_re = (compile_osregex(rule.file[2:]) if rule.file[:2].lower() == "r:"
                       else compile_osmatch(rule.file))
            named = 0
            for path, st in self.fs.walk(directory):
                if not name_re.search(path.rsplit("/", 1)[1]) or stat.S_ISDIR(st.st_mode):
                    continue
                named += 1
                if not found:
                    continue
                if rule.content is None:
                    out.append(one_line(f"file {path}"))
                    continue
                try:
                    lines = self.probes.lines("f", path) or []
                except Unreadable:
                    continue
                out += [self.probes.evidence("f", path, lines, i) for i, line in enumerate(lines)
                        if line_matches(line, rule.content)]
            if not found:
                what = f"has a line matching {wanted}" if rule.content is not None and named else ""
                out.append(one_line(f"no file under {directory} named {rule.file} {what}".rstrip()))
        return out

    def eval_rule(self, rule: Rule) -> tuple[int, str]:
        """FOUND / NOT_FOUND / INVALID (with reason) for one rule, before its `not`."""
        kind = rule.type
        if kind == "r":
            return INVALID, "registry rules apply to Windows hosts only"
        if kind == "c":
            return self._command(rule)
        if kind == "d":
            return self._directory(rule)
        if kind == "p":
            try:
                names = self.probes.lines("processes", "")
            except Unreadable as exc:
                return INVALID, str(exc)
            return (FOUND if any(line_matches(n, rule.content) for n in names) else NOT_FOUND), ""
        targets = [t.strip() for t in rule.location.split(",")] if kind in ("f", "stat", "find") else [rule.location]
        if kind == "f" and rule.content is None:
            return self._files_exist(targets)
        return self._content(kind, targets, rule.content)

    def _files_exist(self, paths: list[str]) -> tuple[int, str]:
        """Wazuh's FILE_EXISTS over a list: a regular file is found; anything else there is invalid."""
        result, reason = NOT_FOUND, ""
        for path in paths:
            try:
                st = self.fs.stat(path)
            except Unreadable as exc:
                result, reason = INVALID, reason or str(exc)
                continue
            if st is None:
                continue
            if stat.S_ISREG(st.st_mode):
                return FOUND, ""
            result, reason = INVALID, reason or f"{path} is not a regular file"
        return result, reason

    def _content(self, kind: str, targets: list[str], content: tuple[Minterm, ...] | None) -> tuple[int, str]:
        result, reason = NOT_FOUND, ""
        for target in targets:
            try:
                lines = self.probes.lines(kind, target)
            except Unreadable as exc:
                result, reason = INVALID, reason or str(exc)
                continue
            if lines is None:
                if content is not None:
                    result, reason = INVALID, reason or self._missing(kind, target)
                continue
            if content is None and lines == [UNIT_NOT_FOUND] and kind == "svc":
                continue
            if content is None or any(line_matches(line, content) for line in lines):
                return FOUND, ""
        return result, reason

    def _missing(self, kind: str, target: str) -> str:
        if kind == "sshd" and not self.fs.is_file("/etc/ssh/sshd_config"):
            return "no /etc/ssh/sshd_config (is openssh-server installed?)"
        if kind == "sshd":
            return f"sshd keyword {target} is neither configured nor a known default"
        return f"{_NAMES[kind]} {target} not found"

    def _directory(self, rule: Rule) -> tuple[int, str]:
        result, reason = NOT_FOUND, ""
        for directory in (d.strip() for d in rule.location.split(",")):
            if rule.file is None:
                if self.fs.is_dir(directory):
                    return FOUND, ""
                continue
            if not self.fs.is_dir(directory):
                result, reason = INVALID, reason or f"could not open directory {directory}"
                continue
            name_re = (compile_osregex(rule.file[2:]) if rule.file[:2].lower() == "r:"
                       else compile_osmatch(rule.file))
            for path, st in self.fs.walk(directory):
                if not name_re.search(path.rsplit("/", 1)[1]) or stat.S_ISDIR(st.st_mode):
                    continue
                found, why = self._content("f", [path], rule.content) if rule.content else (FOUND, "")
                if found == FOUND:
                    return FOUND, ""
                if found == INVALID:
                    result, reason = INVALID, reason or why
        return result, reason

    def _command(self, rule: Rule) -> tuple[int, str]:
        """Run through the shell like Wazuh's wm_exec: stdout and stderr together, any exit status."""
        if not self.allow_commands:
            return INVALID, "command rules run only with --allow-commands"
        if not self.fs.is_live:
            return INVALID, "command rules run on the live host only, not under --root"
        output = self._outputs.get(rule.location)
        if output is None:
            try:
                proc = subprocess.run(rule.location, shell=True, stdout=subprocess.PIPE,  # noqa: S602
                                      stderr=subprocess.STDOUT, text=True, errors="replace",
                                      timeout=self.command_timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                output = f"timeout running command '{rule.location}'"
            else:
                output = (f"command not found: '{rule.location}'" if proc.returncode == 127
                          else [line.rstrip("\r") for line in proc.stdout.split("\n")])
            self._outputs[rule.location] = output
        if isinstance(output, str):
            return INVALID, output
        lines = output
        return (FOUND if any(line_matches(line, rule.content) for line in lines) else NOT_FOUND), ""


def _near_miss(line: str, content: tuple[Minterm, ...]) -> bool:
    """A line holding the value a numeric minterm looks for, out of range (`MaxAuthTries 6` for `<= 4`)."""
    return any(t.kind == "n" and not t.negated and (m := t.regex.search(line)) and m.group(1) is not None
               for t in content)


_NAMES = {"f": "file", "sysctl": "sysctl key", "sshd": "sshd configuration", "pkg": "package", "svc": "unit",
          "port": "socket table", "stat": "path", "find": "directory", "tls": "TLS service", "pwpolicy": "setting"}
