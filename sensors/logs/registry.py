"""Decoders by format name (as pySigma registers backends): `@register("name")` on a class built per opened file
as `cls(path)`, told the file's leading `#` lines by `header(lines)` and handed each line by `decode(raw)`, which
returns a flat ECS event, None for a line that carries none, or raises one of `fields.BAD_RECORD`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Decoder(Protocol):
    """One log format's line decoder for one file."""

    def __init__(self, path: str) -> None: ...

    def header(self, lines: list[bytes]) -> None: ...

    def decode(self, raw: bytes) -> dict | None: ...


DECODERS: dict[str, type[Decoder]] = {}


def register(name: str) -> Callable[[type[Decoder]], type[Decoder]]:
    """Class decorator: make the decoder available as format `name`."""
    def add(cls: type[Decoder]) -> type[Decoder]:
        DECODERS[name] = cls
        return cls
    return add


def decoder_for(fmt: str) -> type[Decoder]:
    """The decoder class of format `fmt` (ValueError naming the formats otherwise)."""
    try:
        return DECODERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(DECODERS)})") from None
