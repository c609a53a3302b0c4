"""Value access and normalisation for the generated Sigma matchers: a dotted field's value (``field_value``), its
lower-case form as rules compare it (``lower_value``) and the lazy per-event view of both (``Lowered``)."""

from __future__ import annotations

from typing import Any


class Lowered(dict):
    """Lazy lower-case view of an event: ``l[k]`` is computed on first use (None when absent)."""

    __slots__ = ("e", "_text")

    def __init__(self, e: dict[str, Any]) -> None:
        super().__init__()
        self.e = e
        self._text: str | None = None

    def text(self) -> str:
        """Every value of the event, lower-cased and joined by newlines (keyword search in one pass)."""
        if self._text is None:
            parts: list[str] = []
            for v in self.e.values():
                t = type(v)
                if t is str:
                    parts.append(v)
                elif t is list or t is tuple:
                    lv = lower_value(v)
                    if lv:
                        parts.extend(lv)
                elif v is not None and t is not dict:
                    parts.append(lower_value(v))
            self._text = "\n".join(parts).lower()
        return self._text

    def __missing__(self, k: str) -> str | tuple[str, ...] | None:
        e = self.e
        v = lower_value(e[k] if k in e else field_value(e, k))
        self[k] = v
        return v


def field_value(e: dict[str, Any], k: str) -> Any:
    """Value of dotted field ``k``: the flat key, else the sub-field of a list of objects (``dns.answers.data``
    from ``dns.answers: [{"data": ..}]``, as Elasticsearch flattens object arrays). None when absent."""
    v = e.get(k)
    if v is not None or "." not in k:
        return v
    i = k.rfind(".")
    while i > 0:
        parent = e.get(k[:i])
        if type(parent) is list:
            sub = k[i + 1:].split(".")
            out = []
            for item in parent:
                for part in sub:
                    item = item.get(part) if type(item) is dict else None
                out.extend(item if type(item) is list else [] if item is None else [item])
            return out or None
        i = k.rfind(".", 0, i)
    return None


def lower_value(v: Any) -> str | tuple[str, ...] | None:
    """Lower-case string form of a value as rules compare it (bools as true/false, lists as tuples)."""
    if v is None:
        return None
    t = type(v)
    if t is str:
        return v.lower()
    if t is bool:
        return "true" if v else "false"
    if t is list or t is tuple:
        try:
            return tuple(map(str.lower, v))  # all strings: the common case, in C
        except TypeError:
            return tuple(x for x in map(lower_value, v) if type(x) is str)
    if t is dict:  # an object is no value to compare (its sub-fields are, via field_value)
        return None
    return str(v).lower()


