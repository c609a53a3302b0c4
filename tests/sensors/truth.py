"""Compare the sensor's events for one pcap with tshark's ground truth (`pcaps/truth/<name>.json`).

Each field class yields (agreeing, total, differences). The comparison is exact; the only normalisations are the
conventions documented in docs/sensors.md, each applied by name here:
- FLOW-SPLIT: a tshark stream may be several soc flow records (idle/active timeout, VLAN stacks in the key); the
  records of one 5-tuple that fall inside the stream's time span are summed before comparing.
- ICMP-GROUPS: tshark groups ICMP by (src, dst, type, code); soc's per-packet ICMP events are grouped the same way.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from sensors.capture import read_file
from sensors.engine import Sensor


def run_sensor(pcap: Path, **options) -> tuple[list[dict], dict]:
    sensor = Sensor(sensor_name="test", source=str(pcap), **options)
    events = list(sensor.run(read_file(str(pcap))))
    return events, sensor.stats()


def _iso_to_epoch(s: str) -> float:
    from datetime import datetime
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=__import__("datetime").timezone.utc).timestamp()


def _multiset_agreement(truth: Counter, ours: Counter) -> tuple[int, int, list]:
    agree = sum(min(n, ours[k]) for k, n in truth.items())
    total = sum(truth.values())
    diff = [("missing", k, n - ours[k]) for k, n in truth.items() if ours[k] < n]
    diff += [("extra", k, n - truth[k]) for k, n in ours.items() if truth[k] < n]
    return agree, total, diff


def compare(truth: dict, events: list[dict]) -> dict[str, tuple[int, int, list]]:
    by = defaultdict(list)
    for ev in events:
        by[ev["event.dataset"]].append(ev)
    out: dict[str, tuple[int, int, list]] = {}

    # flows: packets and bytes each way (FLOW-SPLIT)
    index = defaultdict(list)
    for ev in by["soc.flow"]:
        if ev["network.transport"] in ("tcp", "udp"):
            k = (ev["network.transport"], frozenset([(ev["source.ip"], ev["source.port"]),
                                                     (ev["destination.ip"], ev["destination.port"])]))
            index[k].append(ev)
    agree, diffs, used, splits = 0, [], set(), []
    for f in truth["flows_exact"]:
        a, b = (f["a_ip"], f["a_port"]), (f["b_ip"], f["b_port"])
        got = [0, 0, 0, 0]
        parts = []
        for ev in index[(f["transport"], frozenset([a, b]))]:
            start, end = _iso_to_epoch(ev["event.start"]), _iso_to_epoch(ev["event.end"])
            if end < f["start"] - 1e-6 or start > f["end"] + 1e-6 or id(ev) in used:
                continue
            used.add(id(ev))
            parts.append(ev)
            fwd = (ev["source.ip"], ev["source.port"]) == a
            sp, sb = ev["source.packets"], ev["source.bytes"]
            dp, db = ev["destination.packets"], ev["destination.bytes"]
            got = [x + y for x, y in zip(got, (sp, sb, dp, db) if fwd else (dp, db, sp, sb), strict=False)]
        want = [f["a_to_b_packets"], f["a_to_b_bytes"], f["b_to_a_packets"], f["b_to_a_bytes"]]
        if got == want:
            agree += 1
        else:
            diffs.append((f["transport"], a, b, "want", want, "got", got))
        if len(parts) > 1:  # FLOW-SPLIT: the end reasons of every record but the last
            splits.append(tuple(e["soc.flow.end_reason"] for e in parts[:-1]))
    out["flows"] = (agree, len(truth["flows_exact"]), diffs)
    out["flow_splits"] = (0, 0, splits)

    # ICMP packets per (src, dst, type, code) (ICMP-GROUPS)
    t = Counter({(g["src"], g["dst"], g["type"], g["code"]): g["packets"] for g in truth["icmp_flows"]})
    o = Counter((e["source.ip"], e["destination.ip"], e["soc.icmp.type"], e["soc.icmp.code"]) for e in by["soc.icmp"])
    out["icmp"] = _multiset_agreement(t, o)

    # DNS: every question name of every query and response, by sender
    t = Counter((q["src"], n.lower()) for q in truth["dns_queries"] for n in q["qnames"][:1])
    o = Counter((e["source.ip"], e.get("dns.question.name", "").lower()) for e in by["soc.dns"]
                if e["dns.type"] == "query")
    out["dns_queries"] = _multiset_agreement(t, o)
    t = Counter((r["src"], (r["qnames"][:1] or [""])[0].lower(), int(r["rcode"] or 0)) for r in truth["dns_responses"])
    rc = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
    o = Counter((e["source.ip"], e.get("dns.question.name", "").lower(), rc.get(e["dns.response_code"], -1))
                for e in by["soc.dns"] if e["dns.type"] == "answer")
    out["dns_responses"] = _multiset_agreement(t, o)
    # answers: A/AAAA/TXT of the answer section must all be in tshark's record values for that response
    t_ans = Counter()
    o_ans = Counter()
    for r in truth["dns_responses"]:
        for v in r["a"] + r["aaaa"]:
            t_ans[(r["src"], v)] += 1
        for v in r["txt"]:
            t_ans[(r["src"], v)] += 1
    for e in by["soc.dns"]:
        for v in e.get("dns.resolved_ip", []) + e.get("soc.dns.txt", []):
            o_ans[(e["source.ip"], v)] += 1
    agree = sum(min(n, t_ans[k]) for k, n in o_ans.items())
    out["dns_answers"] = (agree, sum(o_ans.values()), [("not in truth", k) for k, n in o_ans.items() if t_ans[k] < n])

    # HTTP requests: sender, method, Host, URI, User-Agent
    t = Counter((r["src"], r["method"], r["host"], r["uri"], r["user_agent"]) for r in truth["http_requests"])
    o = Counter((e["source.ip"], e["http.request.method"], e.get("soc.http.host"), e["url.original"],
                 e.get("user_agent.original")) for e in by["soc.http"] if "http.request.method" in e)
    out["http_requests"] = _multiset_agreement(t, o)
    t = Counter(s for r in truth["http_responses"] for s in r["status"][:1])
    o = Counter(str(e["http.response.status_code"]) for e in by["soc.http"] if "http.response.status_code" in e)
    out["http_responses"] = _multiset_agreement(t, o)

    # TLS: ClientHello (sender, SNI, JA3, JA3 string), ServerHello (sender, JA3S)
    t = Counter((c["src"], (c["sni"] or [None])[0], c["ja3"][0], c["ja3_full"][0]) for c in truth["tls_client_hellos"])
    o = Counter((e["source.ip"], e.get("tls.client.server_name"), e["tls.client.ja3"], e["soc.tls.client.ja3_string"])
                for e in by["soc.tls"] if "tls.client.ja3" in e)
    out["tls_client_hello"] = _multiset_agreement(t, o)
    t = Counter((s["src"], s["ja3s"][0]) for s in truth["tls_server_hellos"])
    o = Counter((e["destination.ip"], e["tls.server.ja3s"]) for e in by["soc.tls"] if "tls.server.ja3s" in e)
    out["tls_server_hello"] = _multiset_agreement(t, o)

    # SSH banners by sender
    t = Counter((s["src"], s["banner"]) for s in truth["ssh_banners"])
    o = Counter()
    for e in by["soc.ssh"]:
        if "soc.ssh.client.banner" in e:
            o[(e["source.ip"], e["soc.ssh.client.banner"])] += 1
        if "soc.ssh.server.banner" in e:
            o[(e["destination.ip"], e["soc.ssh.server.banner"])] += 1
    out["ssh_banners"] = _multiset_agreement(t, o)
    return out


def load_truth(corpus: Path, pcap: Path) -> dict:
    name = pcap.name.rsplit(".", 1)[0]
    return json.loads((corpus / "pcaps" / "truth" / f"{name}.json").read_text())
