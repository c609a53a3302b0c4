"""SSH identification strings (RFC 4253 §4.2)."""

from __future__ import annotations


def banner(buf: bytes) -> str | None:
    """The `SSH-proto-software [comments]` line at the start of buf, or None while incomplete."""
    end = buf.find(b"\n", 0, 512)
    if end < 0:
        if len(buf) >= 512:
            raise ValueError("SSH identification line longer than 255 bytes")
        return None
    return buf[:end].rstrip(b"\r").decode("utf-8", "replace")


def fields(client: str | None, server: str | None) -> dict:
    """Documented soc fields for an SSH session's banners: `soc.ssh.client.*` and `soc.ssh.server.*`."""
    ev: dict = {}
    for side, line in (("client", client), ("server", server)):
        if line:
            parts = line.split("-", 2)
            ev[f"soc.ssh.{side}.banner"] = line
            if len(parts) == 3:
                ev[f"soc.ssh.{side}.protocol"] = parts[1]
                ev[f"soc.ssh.{side}.software"] = parts[2].split(" ", 1)[0]
    return ev
