"""Wazuh SCA rule syntax, parsed exactly: `[not ]TYPE:LOCATION[ -> CONTENT]`.

CONTENT is minterms joined by ` && `; each minterm is `[!]r:REGEX`, `[!]n:REGEX compare OP NUMBER` or a literal
(whole-line, case-insensitive). `d:` rules take `d:DIR -> FILE[ -> CONTENT]` where FILE is `r:REGEX` or an
OS_Match name. SCA types are f, d, p, c and r (registry, Windows only); soc adds typed locations whose "lines"
the same content operators test (see docs/compliance.md): sysctl, sshd, pkg, svc, port, stat, find, tls,
pwpolicy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sensors.compliance.osregex import RegexError, compile_osmatch, compile_regex

SCA_TYPES = {"f", "d", "p", "c", "r"}
SOC_TYPES = {"sysctl", "sshd", "pkg", "svc", "port", "stat", "find", "tls", "pwpolicy"}
TYPES = SCA_TYPES | SOC_TYPES
_COMPARE = re.compile(r"^\s*(==|!=|<=|>=|<|>)\s*(-?[0-9]{1,18})\s*$")  # a C long, as Wazuh compares
_VAR = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")
_LOCAL_TLS = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d{1,5}$")


class RuleSyntaxError(ValueError):
    """A rule that does not parse; the message says why."""


@dataclass(frozen=True, slots=True)
class Minterm:
    kind: str  # "r" regex, "n" numeric compare, "=" literal line
    negated: bool
    pattern: str
    regex: re.Pattern[str] | None = None
    op: str = ""
    number: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    text: str
    negated: bool
    type: str
    location: str
    file: str | None  # d: rules only: the file-name pattern
    content: tuple[Minterm, ...] | None

    def with_location(self, location: str) -> Rule:
        return Rule(self.text, self.negated, self.type, location, self.file, self.content)


def check_tls_target(location: str) -> None:
    """TLS rules may only probe loopback services (raises RuleSyntaxError otherwise)."""
    if not _LOCAL_TLS.match(location):
        raise RuleSyntaxError(f"tls rules probe loopback services only (127.0.0.1:PORT), got {location!r}")


def variables_in(text: str) -> list[str]:
    return _VAR.findall(text)


def substitute(location: str, variables: dict[str, str]) -> str:
    """Replace `$var`s, longest name first (as Wazuh does, so `$a` never clobbers `$ab`), in one pass: a value that
    names another variable is not expanded again (chained values would grow exponentially)."""
    if not variables:
        return location
    names = re.compile("|".join(re.escape(n) for n in sorted(variables, key=len, reverse=True)))
    return names.sub(lambda m: variables[m.group()], location)


def parse_content(text: str, regex_type: str) -> tuple[Minterm, ...]:
    terms = []
    for raw in text.split(" && "):
        negated = raw.startswith("!")
        body = raw[1:] if negated else raw
        try:
            if body[:2].lower() == "r:":
                terms.append(Minterm("r", negated, body[2:], compile_regex(body[2:], regex_type)))
            elif body[:2].lower() == "n:":
                regex_text, sep, comparison = body[2:].partition(" compare ")
                if not sep:
                    raise RuleSyntaxError(f"numeric minterm {raw!r} needs ' compare OP NUMBER'")
                m = _COMPARE.match(comparison)
                if not m:
                    raise RuleSyntaxError(f"bad comparison {comparison!r} in {raw!r} "
                                          "(OP is ==, !=, <, <=, >, >=; NUMBER up to 18 digits)")
                regex = compile_regex(regex_text, regex_type)
                if regex.groups < 1:
                    raise RuleSyntaxError(f"numeric minterm {raw!r} needs a capture group")
                terms.append(Minterm("n", negated, regex_text, regex, m.group(1), int(m.group(2))))
            else:
                terms.append(Minterm("=", negated, body))
        except RegexError as exc:
            raise RuleSyntaxError(f"invalid regex {exc}") from exc
    return tuple(terms)


def parse_rule(text: str, regex_type: str = "osregex") -> Rule:
    """Parse one rule string; raises RuleSyntaxError naming the problem."""
    body = text
    negated = body[:4] in ("not ", "NOT ")
    if negated:
        body = body[4:]
    kind, sep, value = body.partition(":")
    kind = kind.strip()
    if kind.startswith("!") and kind[1:] in TYPES:
        raise RuleSyntaxError(f"'{kind}:' does not negate in Wazuh SCA (the '!' is ignored); write 'not {kind[1:]}:'")
    if not sep or kind not in TYPES:
        raise RuleSyntaxError(f"unknown rule type {kind!r} (expected one of {', '.join(sorted(TYPES))})")
    file = None
    if kind == "p":
        location, content_text = value, None
    elif kind == "d":
        location, _, rest = value.partition(" -> ")
        file, _, content_text = rest.partition(" -> ") if rest else (None, "", "")
        content_text = content_text or None
        if file is not None:
            try:
                if file[:2].lower() == "r:":
                    compile_regex(file[2:], "osregex")
                else:
                    compile_osmatch(file)
            except RegexError as exc:
                raise RuleSyntaxError(f"invalid file pattern {exc}") from exc
    else:
        location, sep, content_text = value.partition(" -> ")
        content_text = content_text if sep else None
    if kind != "p" and not location and kind not in ("sshd", "port"):
        raise RuleSyntaxError(f"rule {text!r} has no location after '{kind}:'")
    if kind == "p" and not location:
        raise RuleSyntaxError(f"rule {text!r} names no process")
    if kind == "c" and content_text is None:
        raise RuleSyntaxError("command rules only allow content checks: 'c:COMMAND -> PATTERN'")
    if kind == "tls" and "$" not in location:
        check_tls_target(location)
    if kind == "port" and location not in ("", "all", "tcp", "udp", "tcp4", "tcp6", "udp4", "udp6"):
        raise RuleSyntaxError(f"port rules take tcp, udp, tcp4, tcp6, udp4, udp6 or all, got {location!r}")
    content = parse_content(content_text, regex_type) if content_text is not None else None
    if kind == "p":
        content = parse_content(location, regex_type)
    return Rule(text, negated, kind, location.strip() if kind != "c" else location, file, content)
