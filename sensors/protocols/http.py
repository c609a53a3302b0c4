"""HTTP/1.x message heads into ECS `http.*`, `url.*`, `user_agent.*` fields."""

from __future__ import annotations

from base64 import b64decode
from binascii import Error as BinasciiError

METHOD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
MAX_HEAD = 65536


PORTS = frozenset({80, 81, 3128, 8000, 8008, 8080})


def looks_like_request(buf: bytes) -> bool:
    """True when buf starts like an HTTP/1.x request line: a method token then SP or end of line."""
    end = 0
    while end < len(buf) and end < 24 and buf[end] in METHOD_CHARS:
        end += 1
    return end > 0 and (end == len(buf) or buf[end] in b" \r\n")


def starts_message(buf: bytes) -> bool:
    """True when buf starts with an HTTP/1.x status line or a request line naming HTTP/1.x."""
    if buf.startswith(b"HTTP/1."):
        return True
    return looks_like_request(buf) and b" HTTP/1." in buf[:buf.find(b"\n", 0, 8192) + 1 or 8192]


def is_http(buf: bytes, sport: int, dport: int) -> bool:
    """HTTP on any port when the first line names an HTTP/1 version; on HTTP ports any method-like line."""
    return starts_message(buf) or sport in PORTS or dport in PORTS  # odd request lines get their responses parsed


def _head(buf: bytes) -> tuple[list[bytes], int] | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        end2 = buf.find(b"\n\n")
        if end2 < 0:
            if len(buf) > MAX_HEAD:
                raise ValueError("HTTP head longer than 64 KiB")
            return None
        return buf[:end2].split(b"\n"), end2 + 2
    return buf[:end].split(b"\r\n"), end + 4


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep:
            out.setdefault(name.strip().lower().decode("latin-1"), value.strip().decode("latin-1"))
    return out


CHUNKED, UNTIL_CLOSE = -1, -2


def _body_length(headers: dict[str, str], default: int = 0) -> int:
    """Body bytes to skip after the head; CHUNKED, or `default` when no length is given."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return CHUNKED
    try:
        return max(0, int(headers["content-length"]))
    except (KeyError, ValueError):
        return default


def _authorization(value: str) -> dict:
    """The Authorization scheme (`soc.http.auth_scheme`) and, for Basic, the user name; never the secret."""
    scheme, _, credentials = value.strip().partition(" ")
    out: dict = {"soc.http.auth_scheme": scheme.lower()}
    if scheme.lower() == "basic":
        try:
            user = b64decode(credentials.strip(), validate=True).decode("utf-8", "replace").partition(":")[0]
        except (BinasciiError, ValueError):
            return out
        if user:
            out["user.name"] = user
    return out


def parse_request(buf: bytes) -> tuple[dict, int, int] | None:
    """Parse a request head at the start of buf: (fields, head length, body length) or None if incomplete."""
    head = _head(buf)
    if head is None:
        return None
    lines, used = head
    method, _, rest = lines[0].decode("latin-1").partition(" ")
    uri, _, version = rest.partition(" ")  # tshark's reading of odd lines: "GET /HTTP/1.1" has URI "/HTTP/1.1"
    headers = _headers(lines[1:])
    ev: dict = {"http.request.method": method, "url.original": uri}
    if version.startswith("HTTP/"):
        ev["http.version"] = version[5:]
    path, _, query = uri.partition("?")
    if "://" in path:  # absolute-form (proxy requests)
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    ev["url.path"] = path
    if query:
        ev["url.query"] = query
    host = headers.get("host")
    if host is not None:
        if host.startswith("["):  # IPv6 literal: ECS keeps the brackets in url.domain
            end = host.find("]") + 1 or len(host)
            domain, port = host[:end], host[end + 1:]
        elif host.count(":") == 1:
            domain, _, port = host.partition(":")
        else:
            domain, port = host, ""
        ev["url.domain"] = domain
        if port.isdigit():
            ev["url.port"] = int(port)
        ev["soc.http.host"] = host
    if "user-agent" in headers:
        ev["user_agent.original"] = headers["user-agent"]
    if "referer" in headers:
        ev["http.request.referrer"] = headers["referer"]
    if "content-type" in headers:
        ev["http.request.mime_type"] = headers["content-type"].partition(";")[0]
    if "authorization" in headers:
        ev.update(_authorization(headers["authorization"]))
    body = _body_length(headers)
    if body > 0:
        ev["http.request.body.bytes"] = body
    return ev, used, max(body, 0)


def parse_response(buf: bytes) -> tuple[dict, int, int] | None:
    """Parse a response head at the start of buf: (fields, head length, body length | CHUNKED | UNTIL_CLOSE)
    or None while incomplete."""
    head = _head(buf)
    if head is None:
        return None
    lines, used = head
    parts = lines[0].decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError("bad HTTP status line")
    headers = _headers(lines[1:])
    ev: dict = {"http.response.status_code": int(parts[1])}
    if "content-type" in headers:
        ev["http.response.mime_type"] = headers["content-type"].partition(";")[0]
    body = _body_length(headers, UNTIL_CLOSE)
    if int(parts[1]) in (204, 304) or 100 <= int(parts[1]) < 200:
        body = 0
    if body > 0:
        ev["http.response.body.bytes"] = body
    return ev, used, body


def skip_chunked(buf: bytes) -> int | None:
    """Length of a complete chunked body at the start of buf, or None when more data is needed."""
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";")[0].strip() or b"0", 16)
        except ValueError as exc:
            raise ValueError("bad chunk size") from exc
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)
            return None if end < 0 else end + 4
        pos += size + 2
        if pos > len(buf):
            return None
