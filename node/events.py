"""In-process event bus behind the RPC `subscribe` method (CometBFT-style queries).

Queries are conjunctions of equalities, as CometBFT's simplest form:
``tm.event = 'NewBlock' AND fl.task = '3'``. A subscriber gets a bounded
channel; one that does not keep up is dropped rather than slowing the node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import trio

_COND = re.compile(r"""^\s*([A-Za-z0-9_.]+)\s*=\s*(?:'([^']*)'|"([^"]*)"|(-?\d+))\s*$""")


class QueryError(ValueError):
    pass


def parse_query(query: str) -> list[tuple[str, str]]:
    if len(query) > 512:
        raise QueryError("query longer than 512 characters")
    parts = re.split(r"\s+AND\s+", query.strip())
    out = []
    for part in parts:
        m = _COND.match(part)
        if m is None:
            raise QueryError(f"cannot parse condition {part!r}: use key = 'value' [AND ...]")
        key = m.group(1)
        value = next(g for g in m.groups()[1:] if g is not None)
        out.append((key, value))
    return out


@dataclass
class Subscription:
    id: int
    query: str
    conditions: list[tuple[str, str]]
    send: trio.MemorySendChannel[dict[str, Any]]
    receive: trio.MemoryReceiveChannel[dict[str, Any]]
    dropped: bool = False


@dataclass
class EventBus:
    max_subscriptions: int = 100
    buffer: int = 100
    _subs: dict[int, Subscription] = field(default_factory=dict)
    _next: int = 1

    def subscribe(self, query: str) -> Subscription:
        if len(self._subs) >= self.max_subscriptions:
            raise QueryError(f"too many subscriptions (limit {self.max_subscriptions})")
        conds = parse_query(query)
        send, receive = trio.open_memory_channel[dict[str, Any]](self.buffer)
        sub = Subscription(self._next, query, conds, send, receive)
        self._subs[sub.id] = sub
        self._next += 1
        return sub

    def unsubscribe(self, sub_id: int) -> None:
        sub = self._subs.pop(sub_id, None)
        if sub is not None:
            sub.send.close()

    def publish(self, event_type: str, data: dict[str, Any],
                attrs: dict[str, str] | None = None) -> None:
        tags = {"tm.event": event_type, **(attrs or {})}
        for sub in list(self._subs.values()):
            if all(tags.get(k) == v for k, v in sub.conditions):
                try:
                    sub.send.send_nowait({"query": sub.query, "data": {"type": event_type,
                                                                       "value": data},
                                          "events": {k: [v] for k, v in tags.items()}})
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    sub.dropped = True
                    self.unsubscribe(sub.id)

    def __len__(self) -> int:
        return len(self._subs)
