"""An independent, brute-force evaluation of the query model over events, used as truth for the stores."""

from __future__ import annotations

import ipaddress
import random
import re
from typing import Any

from correlator.events import event_id, to_utc_iso
from correlator.query import Cidr, Prefix, Query, Range, Term, Text, Wildcard, tokens


def _values(ev: dict[str, Any], field: str) -> list[Any]:
    v = ev.get(field)
    return [] if v is None else v if isinstance(v, list) else [v]


def _ip(v: Any):
    try:
        return ipaddress.ip_address(v) if isinstance(v, str) else None
    except ValueError:
        return None


def _term(v: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(v, bool):
        return v is want
    if isinstance(want, (int, float)):
        return (isinstance(v, (int, float)) and v == want) or v == str(want)
    if _ip(want) is not None and _ip(v) is not None:
        return _ip(v) == _ip(want)
    return v == want


def matches(ev: dict[str, Any], q: Query) -> bool:
    ts = ev["@timestamp"]
    if q.since and ts < to_utc_iso(q.since) or q.until and ts >= to_utc_iso(q.until):
        return False
    for c in q.clauses:
        if isinstance(c, Text):
            have = {t for v in ev.values() for s in (v if isinstance(v, list) else [v]) if isinstance(s, str)
                    for t in tokens(s)}
            ok = all(w in have for w in c.words)
        else:
            vals = _values(ev, c.field)
            if isinstance(c, Term):
                ok = any(_term(v, c.value) for v in vals)
            elif isinstance(c, Prefix):
                ok = any(isinstance(v, str) and v.startswith(c.prefix) for v in vals)
            elif isinstance(c, Wildcard):  # every `*` is any run of characters, every other character itself
                rx = re.compile(".*".join(re.escape(part) for part in c.pattern.split("*")), re.DOTALL)
                ok = any(isinstance(v, str) and rx.fullmatch(v) is not None for v in vals)
            elif isinstance(c, Cidr):
                ok = any((ip := _ip(v)) is not None and ip.version == c.network.version and ip in c.network
                         for v in vals)
            elif isinstance(c, Range):
                ok = any(
                    isinstance(v, (int, float)) and not isinstance(v, bool)
                    and (c.gte is None or v >= c.gte) and (c.lte is None or v <= c.lte)
                    and (c.gt is None or v > c.gt) and (c.lt is None or v < c.lt)
                    for v in vals
                )
            else:
                raise TypeError(c)
        if not ok:
            return False
    return True


def expected(events: list[dict[str, Any]], q: Query, limit: int) -> list[str]:
    hits = sorted((e for e in events if matches(e, q)), key=lambda e: e["event.id"])
    hits.sort(key=lambda e: e["@timestamp"], reverse=True)
    return [e["event.id"] for e in hits[:limit]]


WORDS = ["beacon", "exfil", "Ministry", "portal", "login", "failed", "Évasion", "данные", "بيانات", "ok"]
# File names with the characters SQL LIKE/GLOB and ES wildcards treat specially (set without drawing from `rnd`).
FILE_NAMES = ["100%_done.txt", "a_b.log", "axb.log", "data[1].csv", "DATA[1].CSV", "data1.csv", "back\\slash?.txt",
              "ünïcode_ß.txt"]
DOMAINS = ["mof.gov.example", "moi.gov.example", "evil.example", "cdn.example.net", "xn--mgbh0fb.example"]


def sample_events(n: int = 600, seed: int = 7) -> list[dict[str, Any]]:
    """Varied flat ECS events: IPv4/IPv6, lists, numbers, text in several scripts, missing fields."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        v6 = rnd.random() < 0.25
        src = f"2001:db8:{rnd.randint(0, 3):x}::{rnd.randint(1, 300):x}" if v6 else \
            f"10.{rnd.randint(0, 3)}.{rnd.randint(0, 2)}.{rnd.randint(1, 254)}"
        dst = f"2001:db8:ff::{rnd.randint(1, 9)}" if v6 else rnd.choice(
            ["192.0.2.10", "198.51.100.7", "10.9.0.1", "172.16.5.5", "8.8.8.8"])
        ds = rnd.choice(["soc.flow", "soc.dns", "soc.http", "soc.tls", "zeek.conn"])
        ev: dict[str, Any] = {
            "@timestamp": to_utc_iso(1714550000 + rnd.randint(0, 86400) + rnd.choice([0, 0.5, 0.000001])),
            "event.kind": rnd.choice(["event", "event", "alert", "state"]),
            "event.category": rnd.choice([["network"], ["network", "intrusion_detection"], ["configuration"]]),
            "event.dataset": ds,
            "event.sequence": i,
            "source.ip": src,
            "destination.ip": dst,
            "network.bytes": rnd.randint(40, 100000),
        }
        if rnd.random() < 0.9:
            ev["source.port"] = rnd.randint(1024, 65535)
            ev["destination.port"] = rnd.choice([22, 53, 80, 443, 445, 3389, 8080])
        if ds == "soc.dns":
            ev["dns.question.name"] = rnd.choice(["a", "www", "x1y2"]) + "." + rnd.choice(DOMAINS)
            ev["dns.answers"] = [{"data": "192.0.2.1"}] if rnd.random() < 0.5 else []
            ev["related.ip"] = [src, "192.0.2.1"]
        if ds == "soc.http":
            ev["url.original"] = rnd.choice(["/", "/login.php?user=admin", "/static/app.js", "/Portal/Index"])
            ev["http.response.status_code"] = rnd.choice([200, 302, 404, 500])
        if rnd.random() < 0.5:
            ev["message"] = " ".join(rnd.sample(WORDS, rnd.randint(1, 3)))
        if rnd.random() < 0.3:
            ev["host.name"] = rnd.choice(["web01", "dc-mof-1", "portal"])
        if rnd.random() < 0.4:
            ev["observer.name"] = rnd.choice(["sensor-core", "sensor-dmz"])
        if i % 5 == 0:
            ev["file.name"] = FILE_NAMES[i // 5 % len(FILE_NAMES)]
        ev["event.id"] = event_id(ev)
        out.append(ev)
    return out


QUERIES = [
    "",
    "source.ip:10.1.0.0/16",
    "source.ip:10.0.0.0/8 destination.port:443",
    "destination.ip:2001:db8::/32",
    "source.ip:2001:db8:1::/48",
    "destination.ip:8.8.8.8",
    "source.ip:0.0.0.0/0",
    "related.ip:192.0.2.0/24",
    "related.ip:192.0.2.1",
    "event.dataset:soc.dns",
    "event.category:intrusion_detection",
    "event.category:network event.kind:alert",
    "dns.question.name:www*",
    "dns.question.name:a.evil.example",
    "url.original:/login*",
    "destination.port:[1 TO 100]",
    "destination.port:>=3389",
    "source.port:<2000",
    "network.bytes:>50000 destination.port:<100",
    "http.response.status_code:404",
    "http.response.status_code:[400 TO 599]",
    "beacon",
    "ministry failed",
    "EXFIL",
    "данные",
    "بيانات portal",
    "évasion",
    "host.name:web01",
    "observer.name:sensor-dmz destination.port:22",
    "host.name:dc*",
    "event.sequence:42",
    "destination.port:80",
    "missing.field:x",
    "dns.question.name:*.evil.example",
    "dns.question.name:*gov*",
    "dns.question.name:*GOV*",
    "dns.question.name:a*.example",
    "dns.question.name:*",
    "url.original:*.php*",
    "url.original:*Index",
    "host.name:*0*",
    "event.kind:*e*t",
    "event.category:*detect*",
    "message:*Ministry*",
    "destination.port:*4*",
    "file.name:*_*",
    "file.name:*%*",
    "file.name:*[1]*",
    "file.name:data[*",
    "file.name:*.CSV",
    "file.name:*slash*",
    "file.name:*ß*",
]
