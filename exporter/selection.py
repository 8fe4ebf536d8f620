"""Which clients get per-client series: watch list, allow/deny, top-K per ranking, and a cap.

Priority under the cap: watched clients first, then top-K members, then the allow list.
Top-K membership has hysteresis: a member stays while it ranks within K x (1 + hysteresis),
so a client hovering at rank K does not flap in and out between polls.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.records import ClientRecord


@dataclass(frozen=True, slots=True)
class Pattern:
    """A regex over the client id or the username (full match)."""

    field: str  # "clientid" or "username"
    pattern: re.Pattern[str]

    def matches(self, record: ClientRecord) -> bool:
        value = record.clientid if self.field == "clientid" else (record.username or "")
        return self.pattern.fullmatch(value) is not None


#: Rankings for top-K, by name: what "worst" means for each.
RANKINGS = ("mqueue_fill", "inflight_fill", "drop_rate", "byte_rate", "reconnects")


@dataclass(frozen=True, slots=True)
class SelectionSettings:
    watch: frozenset[str] = frozenset()
    allow: tuple[Pattern, ...] = ()
    deny: tuple[Pattern, ...] = ()
    top_k: tuple[tuple[str, int], ...] = ()
    hysteresis: float = 0.5
    max_series: int = 40_000
    #: Only look the watched clients up, never walk the cluster.
    watch_only: bool = False

    @property
    def export_all(self) -> bool:
        """With no selection configured, every client is exported (up to the cap)."""
        return not (self.watch or self.allow or self.top_k)


def fill(length: int | None, capacity: int | str | None) -> float:
    """A fill ratio in [0, ...); unlimited or unknown capacity counts as 0."""
    if not length or not isinstance(capacity, int) or capacity <= 0:
        return 0.0
    return length / capacity


@dataclass(order=True, slots=True)
class _Candidate:
    score: float
    order: int
    clientid: str = field(compare=False)
    record: ClientRecord = field(compare=False)


class TopK:
    """The best ⌈K·(1+hysteresis)⌉ clients of one ranking during a poll, in bounded memory."""

    def __init__(self, name: str, k: int, hysteresis: float) -> None:
        self.name = name
        self.k = k
        self.keep = max(k, math.ceil(k * (1 + hysteresis)))
        self.members: set[str] = set()
        self._heap: list[_Candidate] = []
        self._order = itertools.count()

    def start(self) -> None:
        self._heap = []

    def offer(self, score: float, record: ClientRecord) -> None:
        if score <= 0 or self.k <= 0:
            return  # a client with no drops or no queue is not among the worst
        candidate = _Candidate(score, -next(self._order), record.clientid, record)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, candidate)
        elif candidate > self._heap[0]:
            heapq.heapreplace(self._heap, candidate)

    def discard(self, clientids: Iterable[str]) -> None:
        """Drop candidates seen on a node whose walk failed."""
        gone = set(clientids)
        if gone:
            self._heap = [c for c in self._heap if c.clientid not in gone]
            heapq.heapify(self._heap)

    def finish(self) -> list[ClientRecord]:
        """The K members: former members still within the wider band first, then the best."""
        ranked = sorted(self._heap, reverse=True)
        staying = [c for c in ranked if c.clientid in self.members][: self.k]
        chosen = {c.clientid for c in staying}
        for c in ranked:
            if len(chosen) >= self.k:
                break
            chosen.add(c.clientid)
        winners = [c.record for c in ranked if c.clientid in chosen]
        self.members = chosen
        return winners


class Selector:
    """Per-record allow/deny decisions and the top-K trackers of one cluster."""

    def __init__(self, settings: SelectionSettings, per_client_series: int) -> None:
        self.settings = settings
        self.per_client_series = max(1, per_client_series)
        self.max_clients = settings.max_series // self.per_client_series
        self.top = [TopK(name, k, settings.hysteresis) for name, k in settings.top_k]
        reserved = len(settings.watch) + sum(k for _, k in settings.top_k)
        #: How many allow-list clients may stream before the cap: the watch list and top-K
        #: come first, so their full size is reserved up front.
        self.allow_budget = max(0, self.max_clients - reserved)

    def allowed(self, record: ClientRecord) -> bool:
        s = self.settings
        if s.export_all:
            return True
        if not s.allow or not any(p.matches(record) for p in s.allow):
            return False
        return not any(p.matches(record) for p in s.deny)
