"""Which clients get per-client series: watch list, allow/deny, top-K per ranking, and a cap.

Priority under the cap: watched clients first, then top-K members, then the allow list.
Top-K membership has hysteresis: a member stays while it ranks within K x (1 + hysteresis),
so a client hovering at rank K does not flap in and out between polls.

With none of these configured every client is exported, and when there are more than the cap
allows, the cap's worth is chosen by the default ranking (`DEFAULT_RANKING`) with the same
hysteresis, never by listing order.
"""

from __future__ import annotations

import heapq
import math
import re
import zlib
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


#: Rankings for top-K, by name: what "worst" means for each. A client's `Scores` hold one value
#: per ranking, in this order.
RANKINGS = ("mqueue_fill", "inflight_fill", "drop_rate", "byte_rate", "reconnects")
RANKING_HELP = {
    "mqueue_fill": "session queue length / capacity",
    "inflight_fill": "inflight messages / window size",
    "drop_rate": "messages dropped per second",
    "byte_rate": "bytes received + sent per second",
    "reconnects": "new connections over about the last ten polls",
}
Scores = tuple[float, float, float, float, float]
#: The default ranking under the cap: queue fill first, then drop rate, inflight fill, traffic.
DEFAULT_RANKING = ("mqueue_fill", "drop_rate", "inflight_fill", "byte_rate")
_DEFAULT_KEY = tuple(RANKINGS.index(name) for name in DEFAULT_RANKING)
DEFAULT_RANKING_NAME = "default"


def default_key(scores: Scores) -> tuple[float, ...]:
    """A client's place in the default ranking: compared value by value, larger is worse."""
    return tuple(scores[i] for i in _DEFAULT_KEY)


@dataclass(frozen=True, slots=True)
class RankedClient:
    """A member of a ranking, with every score (for the status page and `top`)."""

    clientid: str
    node: str | None
    username: str | None
    scores: Scores

    def score(self, ranking: str) -> float:
        return self.scores[RANKINGS.index(ranking)]


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


@dataclass(order=True, slots=True)
class _Candidate:
    score: float | tuple[float, ...]
    #: Ties go by a hash of the client id: stable across polls, unlike the listing order.
    tie: int
    clientid: str = field(compare=False)
    record: ClientRecord = field(compare=False)
    scores: Scores = field(compare=False)


class TopK:
    """The best ⌈K·(1+hysteresis)⌉ clients of one ranking during a poll, in bounded memory.

    A named ranking only takes clients with a score above 0; the default ranking
    (`keep_zero`) takes every client, so it also chooses among clients that are all fine.
    """

    def __init__(self, name: str, k: int, hysteresis: float, *, keep_zero: bool = False) -> None:
        self.name = name
        #: Position of the ranking's score in `Scores` (the default ranking has a key instead).
        self.index = RANKINGS.index(name) if name in RANKINGS else -1
        self.k = k
        self.keep = max(k, math.ceil(k * (1 + hysteresis)))
        self.keep_zero = keep_zero
        self.members: set[str] = set()
        #: The members chosen by the last `finish`, worst first.
        self.last: list[RankedClient] = []
        #: The lowest score still in the running once the candidates are full (0 before): a
        #: caller may skip `offer` for a lower score, most clients of a large fleet.
        self.floor: float = 0.0
        self._heap: list[_Candidate] = []

    def start(self) -> None:
        self._heap = []
        self.floor = 0.0

    def offer(self, score: float | tuple[float, ...], scores: Scores,
              record: ClientRecord) -> None:
        if self.k <= 0 or (not self.keep_zero and score <= 0):  # type: ignore[operator]
            return  # a client with no drops or no queue is not among the worst
        heap = self._heap
        full = len(heap) >= self.keep
        if full and score < heap[0].score:  # type: ignore[operator]
            return  # the common case on a large fleet, decided without building a candidate
        candidate = _Candidate(score, zlib.crc32(record.clientid.encode("utf-8", "replace")),
                               record.clientid, record, scores)
        if not full:
            heapq.heappush(heap, candidate)
        elif candidate > heap[0]:
            heapq.heapreplace(heap, candidate)
        if len(heap) >= self.keep and not self.keep_zero:
            self.floor = heap[0].score  # type: ignore[assignment]

    def discard(self, clientids: Iterable[str]) -> None:
        """Drop candidates seen on a node whose walk failed."""
        gone = set(clientids)
        if gone:
            self._heap = [c for c in self._heap if c.clientid not in gone]
            heapq.heapify(self._heap)
            self.floor = 0.0  # room again: every positive score is in the running

    def finish(self) -> list[ClientRecord]:
        """The K members: former members still within the wider band first, then the best."""
        ranked = sorted(self._heap, reverse=True)
        staying = [c for c in ranked if c.clientid in self.members][: self.k]
        chosen = {c.clientid for c in staying}
        for c in ranked:
            if len(chosen) >= self.k:
                break
            chosen.add(c.clientid)
        winners = [c for c in ranked if c.clientid in chosen]
        self.members = chosen
        self.last = [RankedClient(c.clientid, c.record.node, c.record.username, c.scores)
                     for c in winners]
        return [c.record for c in winners]


class Selector:
    """Per-record allow/deny decisions and the top-K trackers of one cluster."""

    def __init__(self, settings: SelectionSettings, per_client_series: int) -> None:
        self.settings = settings
        self.per_client_series = max(1, per_client_series)
        self.max_clients = settings.max_series // self.per_client_series
        self.top = [TopK(name, k, settings.hysteresis) for name, k in settings.top_k]
        #: With no selection configured: which clients fill the cap when it binds.
        self.default: TopK | None = None
        if settings.export_all and not settings.watch_only:
            self.default = TopK(DEFAULT_RANKING_NAME, self.max_clients, settings.hysteresis,
                                keep_zero=True)
        #: Every ranking that runs in a poll.
        self.trackers = self.top + ([self.default] if self.default is not None else [])
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
