"""DNS message parsing (RFC 1035) into ECS `dns.*` fields."""

from __future__ import annotations

import socket
from struct import unpack_from

TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
         35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3",
         64: "SVCB", 65: "HTTPS", 99: "SPF", 255: "ANY", 257: "CAA", 10: "NULL", 250: "TSIG", 252: "AXFR"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
          7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}
OPCODES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}
CLASSES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}  # UPDATE: ANY deletes an RRset, NONE one record
FLAGS = ((0x0400, "AA"), (0x0200, "TC"), (0x0100, "RD"), (0x0080, "RA"), (0x0020, "AD"), (0x0010, "CD"))
PORTS = frozenset({53, 5353, 5355})  # DNS, mDNS, LLMNR


def _name(buf: bytes, pos: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at pos; return (name, position after it in the original stream)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        length = buf[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 64:
                raise ValueError("DNS name compression loop")
            pos = ((length & 0x3F) << 8) | buf[pos + 1]
            continue
        if length & 0xC0:
            raise ValueError("bad DNS label type")
        pos += 1
        if length == 0:
            break
        label = buf[pos:pos + length]
        if len(label) < length:
            raise ValueError("DNS name truncated")
        labels.append(label.decode("latin-1"))
        pos += length
    return ".".join(labels), (end if end >= 0 else pos)


def _rdata(buf: bytes, rtype: int, pos: int, rdlen: int) -> str | list[str]:
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, buf[pos:pos + 4])
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, buf[pos:pos + 16])
    if rtype in (2, 5, 12, 39):
        return _name(buf, pos)[0]
    if rtype == 15:
        return _name(buf, pos + 2)[0]
    if rtype == 33:
        return _name(buf, pos + 6)[0]
    if rtype in (16, 99):
        strings, p, end = [], pos, pos + rdlen
        while p < end:
            n = buf[p]
            strings.append(buf[p + 1:p + 1 + n].decode("utf-8", "replace"))
            p += 1 + n
        return strings
    return buf[pos:pos + rdlen].hex()


def parse(buf: bytes) -> dict:
    """Parse one DNS message of any opcode; raise ValueError (or IndexError) when it is not one.

    For UPDATE (RFC 2136) the question is the zone and the update section's records are `soc.dns.updates`."""
    if len(buf) < 12:
        raise ValueError("DNS header truncated")
    ident, flags, qd, an, ns, ar = unpack_from(">HHHHHH", buf, 0)
    if qd > 64:  # absurd counts: not DNS
        raise ValueError("not a DNS message")
    response = bool(flags & 0x8000)
    opcode = (flags >> 11) & 0x0F
    header_flags = [name for bit, name in FLAGS if flags & bit]
    ev: dict = {"dns.id": str(ident), "dns.type": "answer" if response else "query",
                "dns.op_code": OPCODES.get(opcode, str(opcode)), "dns.header_flags": header_flags}
    pos = 12
    questions = []
    for _ in range(qd):
        name, pos = _name(buf, pos)
        qtype, qclass = unpack_from(">HH", buf, pos)
        pos += 4
        questions.append((name, qtype))
    if questions:
        name, qtype = questions[0]
        ev["dns.question.name"] = name
        ev["dns.question.type"] = TYPES.get(qtype, str(qtype))
        if len(questions) > 1:
            ev["soc.dns.questions"] = [q[0] for q in questions]
    if response:
        ev["dns.response_code"] = RCODES.get(flags & 0x0F, str(flags & 0x0F))
    answers, resolved, txt, updates = [], [], [], []
    update = opcode == 5
    for i in range(an + ns + ar):
        name, pos = _name(buf, pos)
        rtype, rclass, ttl, rdlen = unpack_from(">HHIH", buf, pos)
        pos += 10
        if pos + rdlen > len(buf):
            ev["soc.dns.truncated"] = True
            break
        if rtype == 41:  # OPT (EDNS): the DO bit is in what would be the TTL
            if ttl & 0x8000 and "DO" not in header_flags:
                header_flags.append("DO")
        elif (response and i < an) or (update and an <= i < an + ns):
            data = _rdata(buf, rtype, pos, rdlen) if rdlen else ""  # UPDATE deletions carry no data
            entry = {"name": name, "type": TYPES.get(rtype, str(rtype)), "class": CLASSES.get(rclass, str(rclass)),
                     "ttl": ttl}
            into = answers if i < an else updates
            if isinstance(data, str):
                into.append({**entry, "data": data})
            else:  # TXT: one answer per character-string, as Suricata and tshark list them
                into.extend({**entry, "data": text} for text in data)
            if i < an and rtype in (1, 28):
                resolved.append(data)
            elif i < an and rtype in (16, 99):
                txt.extend(data)
        pos += rdlen
    if answers:
        ev["dns.answers"] = answers
    if resolved:
        ev["dns.resolved_ip"] = resolved
    if txt:
        ev["soc.dns.txt"] = txt
    if updates:
        ev["soc.dns.updates"] = updates
    return ev
