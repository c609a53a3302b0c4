"""Longest-prefix lookup over IP networks as a sorted interval table searched by bisection (O(log n) per address).

CIDR blocks are nested or disjoint, so one sweep flattens them into elementary intervals, each mapped to the most
specific block covering it; a lookup is one `bisect` on the interval starts.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Table(Generic[V]):
    __slots__ = ("starts", "values")

    def __init__(self, blocks: list[tuple[int, int, V]]) -> None:
        # Sort by start, then widest first, so a block's parents are on the stack when it opens.
        blocks.sort(key=lambda b: (b[0], -b[1]))
        bounds: dict[int, V | None] = {}
        stack: list[tuple[int, int, V]] = []
        for start, end, value in blocks:
            while stack and stack[-1][1] < start:
                top = stack.pop()
                bounds[top[1] + 1] = stack[-1][2] if stack else None
            bounds[start] = value
            stack.append((start, end, value))
        while stack:
            top = stack.pop()
            bounds[top[1] + 1] = stack[-1][2] if stack else None
        self.starts = sorted(bounds)
        self.values = [bounds[s] for s in self.starts]

    def get(self, address: int) -> V | None:
        i = bisect_right(self.starts, address) - 1
        return self.values[i] if i >= 0 else None


class NetworkMap(Generic[V]):
    """Maps addresses to the value of the most specific network containing them."""

    def __init__(self, items: Iterable[tuple[IPNetwork, V]]) -> None:
        v4: list[tuple[int, int, V]] = []
        v6: list[tuple[int, int, V]] = []
        for net, value in items:
            (v4 if net.version == 4 else v6).append(
                (int(net.network_address), int(net.broadcast_address), value))
        self._v4, self._v6 = _Table(v4), _Table(v6)

    def get(self, address: str) -> V | None:
        """The value for an address string, or None (also for a string that is not an address)."""
        try:
            return self._v4.get(int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big"))
        except OSError:
            pass
        except TypeError:
            return None
        try:
            return self._v6.get(int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big"))
        except OSError:
            return None
