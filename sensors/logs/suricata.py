"""Suricata EVE JSON → flat ECS events (flow, dns, http, tls, ssh, alert; other types keep their EVE fields)."""

from __future__ import annotations

from correlator.events import loads_event
from sensors.logs.fields import flatten, iso, put, ssh_side, tls_version
from sensors.logs.registry import register


def suricata_event(obj: dict) -> dict:
    """One EVE record → flat ECS (flow, dns, http, tls, ssh, alert; others keep their EVE fields under suricata.eve)."""
    etype = obj.get("event_type", "unknown")
    ev: dict = {"@timestamp": iso(obj["timestamp"]), "event.kind": "alert" if etype == "alert" else "event",
                "event.module": "suricata", "event.dataset": "suricata.eve", "observer.product": "suricata",
                "suricata.eve.event_type": etype, "event.category": ["network"],
                "event.type": ["connection"] if etype == "flow" else ["protocol"]}
    put(ev, "source.ip", obj.get("src_ip"))
    put(ev, "source.port", obj.get("src_port"))
    put(ev, "destination.ip", obj.get("dest_ip"))
    put(ev, "destination.port", obj.get("dest_port"))
    if obj.get("proto"):
        ev["network.transport"] = str(obj["proto"]).lower()
    put(ev, "network.protocol", obj.get("app_proto") if etype == "flow" else etype if etype in (
        "dns", "http", "tls", "ssh") else None)
    put(ev, "network.community_id", obj.get("community_id"))
    put(ev, "observer.ingress.interface.name", obj.get("in_iface"))
    put(ev, "suricata.eve.flow_id", obj.get("flow_id"))
    if obj.get("vlan"):
        ev["network.vlan.id"] = str(obj["vlan"][0])
    ips = [ip for ip in (obj.get("src_ip"), obj.get("dest_ip")) if ip]
    if ips:
        ev["related.ip"] = list(dict.fromkeys(ips))
    body = obj.get(etype) if isinstance(obj.get(etype), dict) else {}
    if etype == "flow":
        put(ev, "source.packets", body.get("pkts_toserver"))
        put(ev, "source.bytes", body.get("bytes_toserver"))
        put(ev, "destination.packets", body.get("pkts_toclient"))
        put(ev, "destination.bytes", body.get("bytes_toclient"))
        if "pkts_toserver" in body:
            ev["network.packets"] = body.get("pkts_toserver", 0) + body.get("pkts_toclient", 0)
            ev["network.bytes"] = body.get("bytes_toserver", 0) + body.get("bytes_toclient", 0)
        if body.get("start"):
            ev["event.start"] = iso(body["start"])
        if body.get("end"):
            ev["event.end"] = iso(body["end"])
        put(ev, "soc.flow.state", body.get("state"))
        put(ev, "soc.flow.end_reason", body.get("reason"))
    elif etype == "dns":
        queries = body.get("queries") or ([{"rrname": body["rrname"], "rrtype": body.get("rrtype")}]
                                          if body.get("rrname") and body.get("type") in ("query", "request") else [])
        dtype = body.get("type")
        ev["dns.type"] = "query" if dtype in ("query", "request") else "answer"
        put(ev, "dns.id", str(body["id"]) if "id" in body else None)
        name = queries[0].get("rrname") if queries else body.get("rrname")
        qtype = queries[0].get("rrtype") if queries else body.get("rrtype")
        put(ev, "dns.question.name", name)
        put(ev, "dns.question.type", qtype)
        put(ev, "dns.response_code", body.get("rcode"))
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
        put(ev, "url.domain", body.get("hostname"))
        put(ev, "url.original", body.get("url"))
        if body.get("url"):
            ev["url.path"] = body["url"].partition("?")[0]
        put(ev, "http.request.method", body.get("http_method"))
        put(ev, "user_agent.original", body.get("http_user_agent"))
        put(ev, "http.response.status_code", body.get("status"))
        put(ev, "http.request.referrer", body.get("http_refer"))
        put(ev, "http.version", (body.get("protocol") or "").partition("/")[2] or None)
        ev["event.category"] = ["network", "web"]
    elif etype == "tls":
        put(ev, "tls.client.server_name", body.get("sni"))
        put(ev, "tls.version", tls_version(body.get("version")))
        put(ev, "tls.client.ja3", (body.get("ja3") or {}).get("hash"))
        put(ev, "soc.tls.client.ja3_string", (body.get("ja3") or {}).get("string"))
        put(ev, "tls.server.ja3s", (body.get("ja3s") or {}).get("hash"))
        put(ev, "tls.client.ja4", body.get("ja4"))
        put(ev, "tls.server.subject", body.get("subject"))
        put(ev, "tls.server.issuer", body.get("issuerdn"))
        put(ev, "tls.server.hash.sha1", (body.get("fingerprint") or "").replace(":", "").upper() or None)
    elif etype == "ssh":
        for side in ("client", "server"):
            info = body.get(side) or {}
            ssh_side(ev, side, None, info.get("software_version"), info.get("proto_version"))
    elif etype == "alert":
        alert = obj.get("alert") or {}
        put(ev, "rule.name", alert.get("signature"))
        put(ev, "rule.id", str(alert["signature_id"]) if "signature_id" in alert else None)
        put(ev, "rule.category", alert.get("category"))
        put(ev, "event.severity", alert.get("severity"))
        put(ev, "event.action", alert.get("action"))
        ev["event.category"] = ["network", "intrusion_detection"]
        ev["event.type"] = ["info"]
    else:
        ev.update({f"suricata.eve.{k}": v for k, v in flatten(body).items()})
    return ev




@register("suricata-eve")
class SuricataDecoder:
    """EVE JSON lines, one record per line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def header(self, lines: list[bytes]) -> None:
        """EVE has no header."""

    def decode(self, raw: bytes) -> dict:
        return suricata_event(loads_event(raw))
