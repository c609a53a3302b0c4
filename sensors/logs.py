"""Log readers: Suricata EVE JSON, Zeek logs (JSON or TSV) and generic NDJSON into flat ECS events, read through
`LogTail`, which resumes from a checkpoint (inode + byte offset) so a re-run or a follow neither loses nor repeats
a line, including across rotation (rename + new file) and truncation.

A line is only consumed once it ends with a newline; the checkpoint is saved by the caller after the events up to
`LogTail.position` are stored (`LogTail.commit()`), so a crash repeats at most an unstored batch (and the store
de-duplicates it by event id: every event carries `log.file.path` and `log.offset`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from correlator.events import loads_event, normalize, to_utc_iso

FORMATS = ("suricata-eve", "zeek", "ndjson")


class LogError(ValueError):
    """A line that cannot be read; the message names the file and byte offset."""


# What a malformed record raises in the readers below (a field of the wrong type or range, a missing field).
BAD_RECORD = (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError)
_INT64 = 2**63


# --- checkpointed tail ------------------------------------------------------------------------------------------
class LogTail:
    """Reads complete lines of one log file from its checkpoint onwards, following rotation when asked."""

    def __init__(self, path: str, checkpoint: Path | None) -> None:
        self.path = os.path.abspath(path)
        self.checkpoint = checkpoint
        self.fh = None
        self.inode = 0
        self.offset = 0          # byte offset after the last line handed out
        self.incomplete = 0      # bytes of a trailing line without newline left for later
        self.header: list[bytes] = []  # leading '#' lines (Zeek TSV) of the current file

    # checkpoint
    def _load(self) -> dict | None:
        if self.checkpoint and self.checkpoint.exists():
            try:
                return json.loads(self.checkpoint.read_text())
            except (OSError, ValueError):
                return None
        return None

    def commit(self) -> None:
        """Persist the current position (call after the events read so far are stored)."""
        if self.checkpoint is None:
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps({"path": self.path, "inode": self.inode, "offset": self.offset}))
        os.replace(tmp, self.checkpoint)

    # reading
    def _open(self, path: str, offset: int) -> None:
        if self.fh:
            self.fh.close()
        self.fh = open(path, "rb")  # noqa: SIM115 - kept open while following
        st = os.fstat(self.fh.fileno())
        self.inode = st.st_ino
        if offset > st.st_size:  # truncated since the checkpoint (copytruncate rotation)
            offset = 0
        self.header = []
        for line in self.fh:
            if not line.startswith(b"#"):
                break
            self.header.append(line)
        self.fh.seek(offset)
        self.offset = offset

    def _rotated_predecessor(self, inode: int) -> str | None:
        """The rotated file (path.1, path-2024…, …) that still has the checkpoint's inode."""
        for cand in sorted(glob.glob(glob.escape(self.path) + "?*")):
            try:
                if os.stat(cand).st_ino == inode:
                    return cand
            except OSError:
                continue
        return None

    def lines(self, follow: bool = False, stop: Callable[[], bool] = lambda: False,
              poll: float = 0.5) -> Iterator[tuple[int, bytes]]:
        """Yield (byte offset, line without newline) from the checkpoint on; with `follow`, wait for more,
        yielding (-1, None) each time the file is idle."""
        state = self._load()
        try:
            cur = os.stat(self.path)
        except OSError as exc:
            raise LogError(f"{self.path}: cannot read ({exc.strerror})") from exc
        if state and state.get("inode") == cur.st_ino:
            self._open(self.path, int(state.get("offset", 0)))
        elif state and (old := self._rotated_predecessor(state.get("inode", -1))):
            self._open(old, int(state.get("offset", 0)))  # finish the rotated file first
            yield from self._drain()
            self._open(self.path, 0)
        else:
            self._open(self.path, 0)
        while True:
            yield from self._drain()
            if not follow or stop():
                return
            try:
                st = os.stat(self.path)
            except OSError:
                st = None
            if st is not None and st.st_ino != self.inode:  # rotated: finish the old file, then the new one
                yield from self._drain()
                self._open(self.path, 0)
                continue
            if st is not None and st.st_size < self.offset:  # truncated in place
                self._open(self.path, 0)
                continue
            yield -1, None  # idle: lets the caller flush what it holds
            time.sleep(poll)

    def _drain(self) -> Iterator[tuple[int, bytes]]:
        fh = self.fh
        fh.seek(self.offset)
        for line in fh:
            if not line.endswith(b"\n"):
                self.incomplete = len(line)
                break
            start = self.offset
            self.offset += len(line)
            self.incomplete = 0
            yield start, line.rstrip(b"\r\n")

    def close(self) -> None:
        if self.fh:
            self.fh.close()
            self.fh = None


# --- helpers ----------------------------------------------------------------------------------------------------
def flatten(doc: dict, prefix: str = "") -> dict:
    """Nested dict → flat dotted keys (lists stay values)."""
    out: dict = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _iso(value: object) -> str:
    """Epoch seconds (a number or a numeric string) or an ISO-8601 string → ISO UTC (ValueError otherwise)."""
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value)
    return to_utc_iso(value)


def _number(text: str, kind: type) -> float | int:
    """A Zeek TSV count/double: finite, and an integer within 64 bits (what a store can hold)."""
    n = kind(text)
    if not (math.isfinite(n) if kind is float else -_INT64 <= n < _INT64):
        raise ValueError(f"{text!r} is out of range")
    return n


def _put(ev: dict, key: str, value: object) -> None:
    if value is not None and value != "" and value != "-":
        ev[key] = value


def _tls_version(text: str | None) -> str | None:
    """'TLS 1.2' / 'TLSv12' / 'TLSv1.3' → '1.2' / '1.3'."""
    if not text:
        return None
    m = re.search(r"(\d)\.?(\d)", text)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = re.search(r"SSLv?(\d)", text)
    return f"{m.group(1)}.0" if m else None


def _ssh_side(ev: dict, side: str, banner: str | None, software: str | None = None,
              proto: str | None = None) -> None:
    if banner:
        ev[f"soc.ssh.{side}.banner"] = banner
        parts = banner.split("-", 2)
        if len(parts) == 3:
            proto, software = proto or parts[1], software or parts[2].split(" ", 1)[0]
    _put(ev, f"soc.ssh.{side}.protocol", proto)
    _put(ev, f"soc.ssh.{side}.software", software)


# --- Suricata EVE -----------------------------------------------------------------------------------------------
def suricata_event(obj: dict) -> dict:
    """One EVE record → flat ECS (flow, dns, http, tls, ssh, alert; others keep their EVE fields under suricata.eve)."""
    etype = obj.get("event_type", "unknown")
    ev: dict = {"@timestamp": _iso(obj["timestamp"]), "event.kind": "alert" if etype == "alert" else "event",
                "event.module": "suricata", "event.dataset": "suricata.eve", "observer.product": "suricata",
                "suricata.eve.event_type": etype, "event.category": ["network"],
                "event.type": ["connection"] if etype == "flow" else ["protocol"]}
    _put(ev, "source.ip", obj.get("src_ip"))
    _put(ev, "source.port", obj.get("src_port"))
    _put(ev, "destination.ip", obj.get("dest_ip"))
    _put(ev, "destination.port", obj.get("dest_port"))
    if obj.get("proto"):
        ev["network.transport"] = str(obj["proto"]).lower()
    _put(ev, "network.protocol", obj.get("app_proto") if etype == "flow" else etype if etype in (
        "dns", "http", "tls", "ssh") else None)
    _put(ev, "network.community_id", obj.get("community_id"))
    _put(ev, "observer.ingress.interface.name", obj.get("in_iface"))
    _put(ev, "suricata.eve.flow_id", obj.get("flow_id"))
    if obj.get("vlan"):
        ev["network.vlan.id"] = str(obj["vlan"][0])
    ips = [ip for ip in (obj.get("src_ip"), obj.get("dest_ip")) if ip]
    if ips:
        ev["related.ip"] = list(dict.fromkeys(ips))
    body = obj.get(etype) if isinstance(obj.get(etype), dict) else {}
    if etype == "flow":
        _put(ev, "source.packets", body.get("pkts_toserver"))
        _put(ev, "source.bytes", body.get("bytes_toserver"))
        _put(ev, "destination.packets", body.get("pkts_toclient"))
        _put(ev, "destination.bytes", body.get("bytes_toclient"))
        if "pkts_toserver" in body:
            ev["network.packets"] = body.get("pkts_toserver", 0) + body.get("pkts_toclient", 0)
            ev["network.bytes"] = body.get("bytes_toserver", 0) + body.get("bytes_toclient", 0)
        if body.get("start"):
            ev["event.start"] = _iso(body["start"])
        if body.get("end"):
            ev["event.end"] = _iso(body["end"])
        _put(ev, "soc.flow.state", body.get("state"))
        _put(ev, "soc.flow.end_reason", body.get("reason"))
    elif etype == "dns":
        queries = body.get("queries") or ([{"rrname": body["rrname"], "rrtype": body.get("rrtype")}]
                                          if body.get("rrname") and body.get("type") in ("query", "request") else [])
        dtype = body.get("type")
        ev["dns.type"] = "query" if dtype in ("query", "request") else "answer"
        _put(ev, "dns.id", str(body["id"]) if "id" in body else None)
        name = queries[0].get("rrname") if queries else body.get("rrname")
        qtype = queries[0].get("rrtype") if queries else body.get("rrtype")
        _put(ev, "dns.question.name", name)
        _put(ev, "dns.question.type", qtype)
        _put(ev, "dns.response_code", body.get("rcode"))
        answers = body.get("answers") or ([{"rrname": body.get("rrname"), "rrtype": body.get("rrtype"),
                                            "rdata": body.get("rdata"), "ttl": body.get("ttl")}]
                                          if dtype == "answer" and body.get("rdata") is not None else [])
        if answers:
            ev["dns.answers"] = [{"name": a.get("rrname"), "type": a.get("rrtype"), "ttl": a.get("ttl"),
                                  "data": a.get("rdata")} for a in answers]
            ips = [a["rdata"] for a in answers if a.get("rrtype") in ("A", "AAAA") and a.get("rdata")]
            if ips:
                ev["dns.resolved_ip"] = ips
    elif etype == "http":
        _put(ev, "url.domain", body.get("hostname"))
        _put(ev, "url.original", body.get("url"))
        if body.get("url"):
            ev["url.path"] = body["url"].partition("?")[0]
        _put(ev, "http.request.method", body.get("http_method"))
        _put(ev, "user_agent.original", body.get("http_user_agent"))
        _put(ev, "http.response.status_code", body.get("status"))
        _put(ev, "http.request.referrer", body.get("http_refer"))
        _put(ev, "http.version", (body.get("protocol") or "").partition("/")[2] or None)
        ev["event.category"] = ["network", "web"]
    elif etype == "tls":
        _put(ev, "tls.client.server_name", body.get("sni"))
        _put(ev, "tls.version", _tls_version(body.get("version")))
        _put(ev, "tls.client.ja3", (body.get("ja3") or {}).get("hash"))
        _put(ev, "soc.tls.client.ja3_string", (body.get("ja3") or {}).get("string"))
        _put(ev, "tls.server.ja3s", (body.get("ja3s") or {}).get("hash"))
        _put(ev, "tls.client.ja4", body.get("ja4"))
        _put(ev, "tls.server.subject", body.get("subject"))
        _put(ev, "tls.server.issuer", body.get("issuerdn"))
        _put(ev, "tls.server.hash.sha1", (body.get("fingerprint") or "").replace(":", "").upper() or None)
    elif etype == "ssh":
        for side in ("client", "server"):
            info = body.get(side) or {}
            _ssh_side(ev, side, None, info.get("software_version"), info.get("proto_version"))
    elif etype == "alert":
        alert = obj.get("alert") or {}
        _put(ev, "rule.name", alert.get("signature"))
        _put(ev, "rule.id", str(alert["signature_id"]) if "signature_id" in alert else None)
        _put(ev, "rule.category", alert.get("category"))
        _put(ev, "event.severity", alert.get("severity"))
        _put(ev, "event.action", alert.get("action"))
        ev["event.category"] = ["network", "intrusion_detection"]
        ev["event.type"] = ["info"]
    else:
        ev.update({f"suricata.eve.{k}": v for k, v in flatten(body).items()})
    return ev


# --- Zeek -------------------------------------------------------------------------------------------------------
ZEEK_KINDS = ("conn", "dns", "http", "ssl", "ssh", "notice")


def zeek_event(rec: dict, kind: str) -> dict:
    """One Zeek record (field → value, JSON types) of log `kind` → flat ECS."""
    ev: dict = {"@timestamp": _iso(rec["ts"]), "event.kind": "event", "event.module": "zeek",
                "event.dataset": f"zeek.{kind}", "observer.product": "zeek", "event.category": ["network"],
                "event.type": ["connection"] if kind == "conn" else ["protocol"]}
    _put(ev, "zeek.session_id", rec.get("uid"))
    _put(ev, "source.ip", rec.get("id.orig_h"))
    _put(ev, "source.port", rec.get("id.orig_p"))
    _put(ev, "destination.ip", rec.get("id.resp_h"))
    _put(ev, "destination.port", rec.get("id.resp_p"))
    ips = [ip for ip in (rec.get("id.orig_h"), rec.get("id.resp_h")) if ip and ip != "-"]
    if ips:
        ev["related.ip"] = list(dict.fromkeys(ips))
    if kind == "conn":
        _put(ev, "network.transport", rec.get("proto"))
        _put(ev, "network.protocol", rec.get("service"))
        if rec.get("duration") not in (None, "-"):
            ev["event.duration"] = round(float(rec["duration"]) * 1e9)
        for side, who in (("source", "orig"), ("destination", "resp")):
            _put(ev, f"{side}.packets", rec.get(f"{who}_pkts"))
            _put(ev, f"{side}.bytes", rec.get(f"{who}_ip_bytes"))  # Zeek counts IP bytes, not frames
            _put(ev, f"soc.flow.{side}_payload_bytes", rec.get(f"{who}_bytes"))  # payload, as the sensor's
        if "orig_pkts" in rec and "resp_pkts" in rec:
            ev["network.packets"] = rec["orig_pkts"] + rec["resp_pkts"]
        if "orig_ip_bytes" in rec and "resp_ip_bytes" in rec:
            ev["network.bytes"] = rec["orig_ip_bytes"] + rec["resp_ip_bytes"]
        _put(ev, "zeek.conn.state", rec.get("conn_state"))
        _put(ev, "zeek.conn.history", rec.get("history"))
    elif kind == "dns":
        ev["network.protocol"] = "dns"
        _put(ev, "dns.id", str(rec["trans_id"]) if rec.get("trans_id") not in (None, "-") else None)
        _put(ev, "dns.question.name", rec.get("query"))
        _put(ev, "dns.question.type", rec.get("qtype_name"))
        _put(ev, "dns.response_code", rec.get("rcode_name"))
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
        _put(ev, "http.request.method", rec.get("method"))
        _put(ev, "url.domain", rec.get("host"))
        _put(ev, "url.original", rec.get("uri"))
        _put(ev, "user_agent.original", rec.get("user_agent"))
        _put(ev, "http.response.status_code", rec.get("status_code"))
        _put(ev, "http.version", rec.get("version"))
        _put(ev, "http.request.referrer", rec.get("referrer"))
    elif kind == "ssl":
        ev["network.protocol"] = "tls"
        _put(ev, "tls.client.server_name", rec.get("server_name"))
        _put(ev, "tls.version", _tls_version(rec.get("version")))
        _put(ev, "tls.cipher", rec.get("cipher"))
        _put(ev, "tls.next_protocol", rec.get("next_protocol"))
        _put(ev, "tls.established", rec.get("established"))
        _put(ev, "tls.client.ja3", rec.get("ja3"))
        _put(ev, "tls.server.ja3s", rec.get("ja3s"))
    elif kind == "ssh":
        ev["network.protocol"] = "ssh"
        _ssh_side(ev, "client", rec.get("client"))
        _ssh_side(ev, "server", rec.get("server"))
        if rec.get("auth_success") is not None and rec.get("auth_success") != "-":
            ev["event.outcome"] = "success" if rec["auth_success"] else "failure"
    elif kind == "notice":  # an alert: the correlator's SensorAlertDetector raises it in soc's queue
        ev["event.kind"] = "alert"
        ev["event.category"] = ["network", "intrusion_detection"]
        ev["event.type"] = ["info"]
        note = rec.get("note")
        _put(ev, "rule.name", note)
        _put(ev, "rule.category", note.split("::")[0] if isinstance(note, str) and "::" in note else None)
        _put(ev, "message", rec.get("msg"))
        _put(ev, "zeek.notice.sub", rec.get("sub"))
        _put(ev, "zeek.notice.actions", rec.get("actions") or None)
        _put(ev, "zeek.notice.suppress_for", rec.get("suppress_for"))
        for side, addr in (("source", "src"), ("destination", "dst")):  # the notice's hosts, when not a connection
            if ev.get(f"{side}.ip") is None:
                _put(ev, f"{side}.ip", rec.get(addr))
        if ev.get("destination.port") is None:
            _put(ev, "destination.port", rec.get("p"))
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


# --- reader -----------------------------------------------------------------------------------------------------
class LogReader:
    """Events from one log file in `fmt`, with counters and per-line errors (file and byte offset)."""

    def __init__(self, path: str, fmt: str, checkpoint: Path | None = None, max_errors: int = 100) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        self.fmt, self.tail = fmt, LogTail(path, checkpoint)
        self.path = self.tail.path
        self.counters = {"lines": 0, "events": 0, "errors": 0, "skipped": 0}
        self.errors: list[str] = []
        self.max_errors = max_errors

    def events(self, follow: bool = False, stop: Callable[[], bool] = lambda: False) -> Iterator[dict | None]:
        """Events in file order; when following, None each time the file is idle (a cue to flush)."""
        tsv = ZeekTSV()
        seen_header: list[bytes] = []
        for offset, raw in self.tail.lines(follow, stop):
            if raw is None:
                yield None
                continue
            if self.tail.header is not seen_header:  # a (new) file was opened: take its Zeek TSV header
                seen_header = self.tail.header
                tsv = ZeekTSV()
                for h in seen_header:
                    try:
                        tsv.header(h.decode().rstrip("\r\n"))
                    except ValueError:  # reported where the line itself is read (from offset 0)
                        continue
            self.counters["lines"] += 1
            if not raw.strip():
                self.counters["skipped"] += 1
                continue
            try:
                ev = self._parse(raw, tsv)
                if ev is not None:
                    ev["log.file.path"] = self.path
                    ev["log.offset"] = offset
                    ev = normalize(ev)
            except BAD_RECORD as exc:
                self.counters["errors"] += 1
                if len(self.errors) < self.max_errors:
                    why = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
                    self.errors.append(f"{self.path}: byte offset {offset}: {why}")
                continue
            if ev is None:
                self.counters["skipped"] += 1
                continue
            self.counters["events"] += 1
            yield ev

    def _parse(self, raw: bytes, tsv: ZeekTSV) -> dict | None:
        """One line → a flat ECS event, or None for a Zeek header; raises one of BAD_RECORD if malformed."""
        if self.fmt == "zeek" and not raw.lstrip().startswith(b"{"):
            text = raw.decode()  # strict: invalid UTF-8 is an error, not replacement characters
            if text.startswith("#"):
                tsv.header(text)
                return None
            if not tsv.fields:
                raise ValueError("Zeek TSV line before any #fields header")
            rec = tsv.record(text)
            return zeek_event(rec, zeek_kind(self.path, None, tsv.path))
        obj = loads_event(raw)
        if self.fmt == "suricata-eve":
            return suricata_event(obj)
        if self.fmt == "zeek":
            return zeek_event(obj, zeek_kind(self.path, obj))
        ev = flatten(obj)
        ev.setdefault("event.module", "ndjson")
        ev.setdefault("event.dataset", "ndjson")
        if "@timestamp" not in ev:
            raise ValueError("no @timestamp")
        ev["@timestamp"] = _iso(ev["@timestamp"])
        return ev
