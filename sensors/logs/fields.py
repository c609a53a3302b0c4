"""What every log decoder shares: the error types and the ECS field helpers (flatten, timestamps, TLS, SSH)."""

from __future__ import annotations

import re

from correlator.events import to_utc_iso


class LogError(ValueError):
    """A line that cannot be read; the message names the file and byte offset."""


# What a malformed record raises in the decoders (a field of the wrong type or range, a missing field).
BAD_RECORD = (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError)


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


def iso(value: object) -> str:
    """Epoch seconds (a number or a numeric string) or an ISO-8601 string → ISO UTC (ValueError otherwise)."""
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value)
    return to_utc_iso(value)


def put(ev: dict, key: str, value: object) -> None:
    if value is not None and value != "" and value != "-":
        ev[key] = value


def tls_version(text: str | None) -> str | None:
    """'TLS 1.2' / 'TLSv12' / 'TLSv1.3' → '1.2' / '1.3'."""
    if not text:
        return None
    m = re.search(r"(\d)\.?(\d)", text)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = re.search(r"SSLv?(\d)", text)
    return f"{m.group(1)}.0" if m else None


def ssh_side(ev: dict, side: str, banner: str | None, software: str | None = None,
              proto: str | None = None) -> None:
    if banner:
        ev[f"soc.ssh.{side}.banner"] = banner
        parts = banner.split("-", 2)
        if len(parts) == 3:
            proto, software = proto or parts[1], software or parts[2].split(" ", 1)[0]
    put(ev, f"soc.ssh.{side}.protocol", proto)
    put(ev, f"soc.ssh.{side}.software", software)


