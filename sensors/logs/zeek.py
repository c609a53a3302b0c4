"""Zeek logs (JSON or tab-separated with `#` headers) → flat ECS events (conn, dns, http, ssl, ssh, notice)."""

from __future__ import annotations

import math
import os

from correlator.events import loads_event
from sensors.logs.fields import iso, put, ssh_side, tls_version
from sensors.logs.registry import register

_INT64 = 2**63


def _number(text: str, kind: type) -> float | int:
    """A Zeek TSV count/double: finite, and an integer within 64 bits (what a store can hold)."""
    n = kind(text)
    if not (math.isfinite(n) if kind is float else -_INT64 <= n < _INT64):
        raise ValueError(f"{text!r} is out of range")
    return n


ZEEK_KINDS = ("conn", "dns", "http", "ssl", "ssh", "notice")


def zeek_event(rec: dict, kind: str) -> dict:
    """One Zeek record (field → value, JSON types) of log `kind` → flat ECS."""
    ev: dict = {"@timestamp": iso(rec["ts"]), "event.kind": "event", "event.module": "zeek",
                "event.dataset": f"zeek.{kind}", "observer.product": "zeek", "event.category": ["network"],
                "event.type": ["connection"] if kind == "conn" else ["protocol"]}
    put(ev, "zeek.session_id", rec.get("uid"))
    put(ev, "source.ip", rec.get("id.orig_h"))
    put(ev, "source.port", rec.get("id.orig_p"))
    put(ev, "destination.ip", rec.get("id.resp_h"))
    put(ev, "destination.port", rec.get("id.resp_p"))
    ips = [ip for ip in (rec.get("id.orig_h"), rec.get("id.resp_h")) if ip and ip != "-"]
    if ips:
        ev["related.ip"] = list(dict.fromkeys(ips))
    if kind == "conn":
        put(ev, "network.transport", rec.get("proto"))
        put(ev, "network.protocol", rec.get("service"))
        if rec.get("duration") not in (None, "-"):
            ev["event.duration"] = round(float(rec["duration"]) * 1e9)
        for side, who in (("source", "orig"), ("destination", "resp")):
            put(ev, f"{side}.packets", rec.get(f"{who}_pkts"))
            put(ev, f"{side}.bytes", rec.get(f"{who}_ip_bytes"))  # Zeek counts IP bytes, not frames
            put(ev, f"soc.flow.{side}_payload_bytes", rec.get(f"{who}_bytes"))  # payload, as the sensor's
        if "orig_pkts" in rec and "resp_pkts" in rec:
            ev["network.packets"] = rec["orig_pkts"] + rec["resp_pkts"]
        if "orig_ip_bytes" in rec and "resp_ip_bytes" in rec:
            ev["network.bytes"] = rec["orig_ip_bytes"] + rec["resp_ip_bytes"]
        put(ev, "zeek.conn.state", rec.get("conn_state"))
        put(ev, "zeek.conn.history", rec.get("history"))
    elif kind == "dns":
        ev["network.protocol"] = "dns"
        put(ev, "dns.id", str(rec["trans_id"]) if rec.get("trans_id") not in (None, "-") else None)
        put(ev, "dns.question.name", rec.get("query"))
        put(ev, "dns.question.type", rec.get("qtype_name"))
        put(ev, "dns.response_code", rec.get("rcode_name"))
        answers = rec.get("answers") or []
        ev["dns.type"] = "answer" if answers or rec.get("rcode_name") else "query"
        if answers:
            ev["dns.answers"] = [{"data": a} for a in answers]
            ips = [a for a in answers if _is_ip(a)]
            if ips:
                ev["dns.resolved_ip"] = ips
    elif kind == "http":
        ev["network.protocol"] = "http"
        ev["event.category"] = ["network", "web"]
        put(ev, "http.request.method", rec.get("method"))
        put(ev, "url.domain", rec.get("host"))
        put(ev, "url.original", rec.get("uri"))
        put(ev, "user_agent.original", rec.get("user_agent"))
        put(ev, "http.response.status_code", rec.get("status_code"))
        put(ev, "http.version", rec.get("version"))
        put(ev, "http.request.referrer", rec.get("referrer"))
    elif kind == "ssl":
        ev["network.protocol"] = "tls"
        put(ev, "tls.client.server_name", rec.get("server_name"))
        put(ev, "tls.version", tls_version(rec.get("version")))
        put(ev, "tls.cipher", rec.get("cipher"))
        put(ev, "tls.next_protocol", rec.get("next_protocol"))
        put(ev, "tls.established", rec.get("established"))
        put(ev, "tls.client.ja3", rec.get("ja3"))
        put(ev, "tls.server.ja3s", rec.get("ja3s"))
    elif kind == "ssh":
        ev["network.protocol"] = "ssh"
        ssh_side(ev, "client", rec.get("client"))
        ssh_side(ev, "server", rec.get("server"))
        if rec.get("auth_success") is not None and rec.get("auth_success") != "-":
            ev["event.outcome"] = "success" if rec["auth_success"] else "failure"
    elif kind == "notice":  # an alert: the correlator's SensorAlertDetector raises it in soc's queue
        ev["event.kind"] = "alert"
        ev["event.category"] = ["network", "intrusion_detection"]
        ev["event.type"] = ["info"]
        note = rec.get("note")
        put(ev, "rule.name", note)
        put(ev, "rule.category", note.split("::")[0] if isinstance(note, str) and "::" in note else None)
        put(ev, "message", rec.get("msg"))
        put(ev, "zeek.notice.sub", rec.get("sub"))
        put(ev, "zeek.notice.actions", rec.get("actions") or None)
        put(ev, "zeek.notice.suppress_for", rec.get("suppress_for"))
        for side, addr in (("source", "src"), ("destination", "dst")):  # the notice's hosts, when not a connection
            if ev.get(f"{side}.ip") is None:
                put(ev, f"{side}.ip", rec.get(addr))
        if ev.get("destination.port") is None:
            put(ev, "destination.port", rec.get("p"))
        ips = [ev[f] for f in ("source.ip", "destination.ip") if ev.get(f)]
        if ips:
            ev["related.ip"] = list(dict.fromkeys(ips))
    return ev


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ZeekTSV:
    """Zeek's tab-separated format: `#fields`/`#types` header, `-` unset, `(empty)`, `,` set separator."""

    def __init__(self) -> None:
        self.fields: list[str] = []
        self.types: list[str] = []
        self.path = ""
        self.sep, self.set_sep, self.unset, self.empty = "\t", ",", "-", "(empty)"

    def header(self, line: str) -> None:
        key, _, rest = line[1:].partition(self.sep if not line.startswith("#separator") else " ")
        if key == "separator":
            self.sep = rest.strip().encode().decode("unicode_escape")
        elif key == "set_separator":
            self.set_sep = rest
        elif key == "unset_field":
            self.unset = rest
        elif key == "empty_field":
            self.empty = rest
        elif key == "path":
            self.path = rest
        elif key == "fields":
            self.fields = rest.split(self.sep)
        elif key == "types":
            self.types = rest.split(self.sep)

    def record(self, line: str) -> dict:
        values = line.split(self.sep)
        if len(values) != len(self.fields):
            raise ValueError(f"{len(values)} columns, the #fields header has {len(self.fields)}")
        return {f: self._value(v, t) for f, v, t in zip(self.fields, values, self.types or [""] * len(values),
                                                         strict=True)}

    def _value(self, v: str, t: str) -> object:
        if v == self.unset:
            return None
        if t.startswith(("set[", "vector[")):
            return [] if v == self.empty else [self._value(x, t[t.index("[") + 1:-1]) for x in v.split(self.set_sep)]
        if t in ("count", "port", "int"):
            return _number(v, int)
        if t in ("interval", "double", "time"):
            return _number(v, float)
        if t == "bool":
            return v == "T"
        return v


def zeek_kind(path: str, rec: dict | None = None, tsv_path: str = "") -> str:
    """The Zeek log type from `_path`, the TSV `#path` header or the file name (conn.log, …_dns.log)."""
    name = (rec or {}).get("_path") or tsv_path or os.path.basename(path)
    for kind in ZEEK_KINDS:
        if name == kind or name.startswith(kind + ".") or f"_{kind}." in name or name.endswith("_" + kind):
            return kind
    return name.split(".")[0] or "unknown"




@register("zeek")
class ZeekDecoder:
    """Zeek JSON lines, or TSV lines read against the file's `#fields`/`#types` header."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tsv = ZeekTSV()

    def header(self, lines: list[bytes]) -> None:
        """Take a newly opened file's leading `#` lines (a bad one is reported where the line itself is read)."""
        self.tsv = tsv = ZeekTSV()
        for h in lines:
            try:
                tsv.header(h.decode().rstrip("\r\n"))
            except ValueError:
                continue

    def decode(self, raw: bytes) -> dict | None:
        """One line → a flat ECS event, or None for a `#` header line."""
        if not raw.lstrip().startswith(b"{"):
            tsv = self.tsv
            text = raw.decode()  # strict: invalid UTF-8 is an error, not replacement characters
            if text.startswith("#"):
                tsv.header(text)
                return None
            if not tsv.fields:
                raise ValueError("Zeek TSV line before any #fields header")
            return zeek_event(tsv.record(text), zeek_kind(self.path, None, tsv.path))
        obj = loads_event(raw)
        return zeek_event(obj, zeek_kind(self.path, obj))
