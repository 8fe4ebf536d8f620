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
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import repeat
from operator import and_, attrgetter, contains, itemgetter, mul, not_, truediv
from typing import Literal

from exporter.distribution import dropped, fill
from exporter.records import ClientRecord
from exporter.state import COUNTER_FIELDS, NO_INCREASE, CounterState

#: A regex that is only a plain prefix and `.*`, as class rules usually are (`sensor-.*`).
_PREFIX_ONLY = re.compile(r"([A-Za-z0-9_/:@ -]*)\.\*")


@cache
def _plain_prefix(pattern: re.Pattern[str]) -> str | None:
    found = _PREFIX_ONLY.fullmatch(pattern.pattern)
    return found.group(1) if found is not None and not pattern.flags & ~re.UNICODE else None


def fullmatches(pattern: re.Pattern[str], values: Sequence[str]) -> list[bool]:
    """`pattern.fullmatch` of each value, as booleans. A `prefix.*` pattern is a prefix test
    (`.` takes anything but a newline), several times faster than the regex engine."""
    prefix = _plain_prefix(pattern)
    if prefix is None:
        return [m is not None for m in map(pattern.fullmatch, values)]
    starts = map(str.startswith, values, repeat(prefix))
    return list(map(and_, starts, map(not_, map(contains, values, repeat("\n")))))


@dataclass(frozen=True, slots=True)
class Pattern:
    """A regex over the client id or the username (full match)."""

    field: str  # "clientid" or "username"
    pattern: re.Pattern[str]

    def matches(self, record: ClientRecord) -> bool:
        value = record.clientid if self.field == "clientid" else (record.username or "")
        return self.pattern.fullmatch(value) is not None


#: The scores of a page of clients in one ranking, larger is worse, one per record: from the
#: records, each one's counter increases when they make a rate (None while the client has no
#: rate yet), 1 / seconds since the previous poll (None on the first poll) and the counter
#: state. A page at a time, so the work per client stays in C where it can.
ScoreFunction = Callable[[Sequence[ClientRecord], Sequence[list[int] | None], float | None,
                          CounterState], list[float]]


@dataclass(frozen=True, slots=True)
class Ranking:
    """One meaning of "worst" for top-K, the status page and `top`."""

    name: str
    help: str
    score: ScoreFunction
    #: The score comes from the counter state, a lookup per client: computed for every client
    #: only when a top-K ranks by it, otherwise only for the members shown. Every other score
    #: is 0 for an idle client (empty queue and window, no traffic), so the pipeline skips
    #: scoring idle clients, most of a large fleet, unless such a score is ranked by.
    from_state: bool = False


def _fills(records: Sequence[ClientRecord], length: str, capacity: str) -> list[float]:
    """Fill ratios, 0 where the capacity is unlimited or a figure unknown."""
    lengths = list(map(attrgetter(length), records))
    capacities = list(map(attrgetter(capacity), records))
    if (records and None not in lengths and set(map(type, capacities)) == {int}
            and min(capacities) > 0):
        return list(map(truediv, lengths, capacities))  # the common case, in C
    return [fill(n, m) or 0.0 for n, m in zip(lengths, capacities, strict=True)]


def _rated(rate_deltas: Sequence[list[int] | None]) -> Sequence[list[int]]:
    """The counter increases, zeros for a client without a rate."""
    if None not in rate_deltas:
        return rate_deltas  # type: ignore[return-value]
    return [deltas or NO_INCREASE for deltas in rate_deltas]


_BYTES = itemgetter(COUNTER_FIELDS.index("received_bytes"), COUNTER_FIELDS.index("sent_bytes"))


def _mqueue_fill(records: Sequence[ClientRecord], rate_deltas: Sequence[list[int] | None],
                 per_second: float | None, state: CounterState) -> list[float]:
    return _fills(records, "mqueue_len", "mqueue_max")


def _inflight_fill(records: Sequence[ClientRecord], rate_deltas: Sequence[list[int] | None],
                   per_second: float | None, state: CounterState) -> list[float]:
    return _fills(records, "inflight", "inflight_max")


def _drop_rate(records: Sequence[ClientRecord], rate_deltas: Sequence[list[int] | None],
               per_second: float | None, state: CounterState) -> list[float]:
    if per_second is None:
        return [0.0] * len(records)
    return list(map(mul, map(dropped, _rated(rate_deltas)), repeat(per_second)))


def _byte_rate(records: Sequence[ClientRecord], rate_deltas: Sequence[list[int] | None],
               per_second: float | None, state: CounterState) -> list[float]:
    if per_second is None:
        return [0.0] * len(records)
    return list(map(mul, map(sum, map(_BYTES, _rated(rate_deltas))), repeat(per_second)))


def _reconnects(records: Sequence[ClientRecord], rate_deltas: Sequence[list[int] | None],
                per_second: float | None, state: CounterState) -> list[float]:
    return list(map(state.reconnect_score, map(attrgetter("clientid"), records)))


#: The rankings for top-K: a client's `Scores` hold one value per ranking, in this order.
RANKING_TABLE: tuple[Ranking, ...] = (
    Ranking("mqueue_fill", "session queue length / capacity", _mqueue_fill),
    Ranking("inflight_fill", "inflight messages / window size", _inflight_fill),
    Ranking("drop_rate", "messages dropped per second", _drop_rate),
    Ranking("byte_rate", "bytes received + sent per second", _byte_rate),
    Ranking("reconnects", "new connections over about the last ten polls", _reconnects,
            from_state=True),
)
RANKINGS = tuple(r.name for r in RANKING_TABLE)
#: Rankings by a rate: counter increases between two polls, so nobody has one on the first.
RATE_RANKINGS = ("drop_rate", "byte_rate")
RANKING_HELP = {r.name: r.help for r in RANKING_TABLE}
#: One score per ranking of `RANKINGS`, in its order.
Scores = tuple[float, ...]
#: The default ranking under the cap: queue fill first, then drop rate, inflight fill, traffic.
DEFAULT_RANKING = ("mqueue_fill", "drop_rate", "inflight_fill", "byte_rate")
DEFAULT_RANKING_NAME = "default"
#: A client's place in the default ranking: compared value by value, larger is worse.
default_key: Callable[[Scores], tuple[float, ...]] = itemgetter(
    *(RANKINGS.index(name) for name in DEFAULT_RANKING))


class Scorer:
    """Every ranking's scores of a page of clients, for one poll."""

    def __init__(self, ranked_by: Collection[str], state: CounterState,
                 per_second: float | None) -> None:
        self.state = state
        self.per_second = per_second
        #: Indexes of the rankings read from the counter state that no top-K ranks by: left
        #: at 0 while ranking, filled in by `complete` for the members shown.
        self.deferred = tuple(i for i, r in enumerate(RANKING_TABLE)
                              if r.from_state and r.name not in ranked_by)
        #: An idle client scores 0 everywhere (see `Ranking.from_state`): it need not be scored.
        self.idle_is_zero = all(not r.from_state or i in self.deferred
                                for i, r in enumerate(RANKING_TABLE))

    def column(self, index: int, records: Sequence[ClientRecord],
               rate_deltas: Sequence[list[int] | None]) -> list[float]:
        """The scores of one ranking (by its index in `RANKINGS`), aligned with the records."""
        if index in self.deferred:
            return [0.0] * len(records)
        return RANKING_TABLE[index].score(records, rate_deltas, self.per_second, self.state)

    def columns(self, records: Sequence[ClientRecord],
                rate_deltas: Sequence[list[int] | None]) -> list[list[float]]:
        """Every ranking's `column` (`zip(*columns)` gives each client's `Scores`)."""
        return [self.column(i, records, rate_deltas) for i in range(len(RANKING_TABLE))]

    def complete(self, record: ClientRecord, scores: Scores) -> Scores:
        """The scores with the deferred ones computed (for the members of a ranking)."""
        return tuple(RANKING_TABLE[i].score([record], [None], self.per_second, self.state)[0]
                     if i in self.deferred else value for i, value in enumerate(scores))


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
    #: How watch-only looks clients up (`exporter.lookup.LookupMode`): `auto` batches
    #: `clientid=` filters only on small clusters, where they cost EMQX less than single GETs.
    lookup: str = "auto"

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

    def finish(self, complete: Callable[[ClientRecord, Scores], Scores] | None = None,
               ) -> list[ClientRecord]:
        """The K members: former members still within the wider band first, then the best.

        `complete` fills in scores left out while ranking, for the members kept in `last`.
        """
        ranked = sorted(self._heap, reverse=True)
        staying = [c for c in ranked if c.clientid in self.members][: self.k]
        chosen = {c.clientid for c in staying}
        for c in ranked:
            if len(chosen) >= self.k:
                break
            chosen.add(c.clientid)
        winners = [c for c in ranked if c.clientid in chosen]
        self.members = chosen
        self.last = [RankedClient(c.clientid, c.record.node, c.record.username,
                                  c.scores if complete is None else complete(c.record, c.scores))
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
        #: The watch list and top-K come first under the cap: their full size is reserved.
        self.reserved = len(settings.watch) + sum(k for _, k in settings.top_k)

    def budget(self) -> CapBudget:
        """A poll's room under the cap."""
        return CapBudget(self.max_clients, self.reserved)

    def allowed(self, record: ClientRecord) -> bool:
        s = self.settings
        if s.export_all:
            return True
        if not s.allow or not any(p.matches(record) for p in s.allow):
            return False
        return not any(p.matches(record) for p in s.deny)


#: What `CapBudget.admit` decided for an allowed client met during the walk.
Admission = Literal["stream", "overflow", "full"]


class CapBudget:
    """One poll's room under the cap: who is rendered while the walk goes on, who waits for
    the end, who is left out.

    Allowed clients stream while the streaming budget lasts: the cap's room minus the full
    watch list and every K, which are only known at the end. Past it they wait in the overflow,
    the reserved room the watch list and top-K may not use; past that, the cap is full. A node
    whose walk fails gives back the room its clients took. At the end, `choose` fills the room
    the streamed clients left: watched first, then top-K members, then the overflow.
    """

    def __init__(self, max_clients: int, reserved: int) -> None:
        self.max_clients = max_clients
        #: Allowed clients that may still stream.
        self.allow_left = max(0, max_clients - reserved)
        #: Allowed clients that may still wait for room left at the end.
        self.overflow_left = max_clients - self.allow_left
        #: Clients that qualified but were left out because of the cap.
        self.dropped = 0
        #: The cap was reached in this poll (a refund does not undo it).
        self.full = False

    def admit(self) -> Admission:
        """Take room for one allowed client, or say there is none."""
        if self.allow_left > 0:
            self.allow_left -= 1
            return "stream"
        if self.overflow_left > 0:
            self.overflow_left -= 1
            return "overflow"
        self.full = True
        return "full"

    def leave_out(self, count: int = 1) -> None:
        self.dropped += count

    def refund(self, streamed: int, overflow: int) -> None:
        """Give back the room of a failed node's streamed and waiting clients."""
        self.allow_left += streamed
        self.overflow_left += overflow

    def choose(self, streamed: Collection[str], watched: Iterable[ClientRecord],
               members: Iterable[Iterable[ClientRecord]],
               overflow: Iterable[ClientRecord]) -> list[ClientRecord]:
        """The clients rendered at the end, in the room the `streamed` ids left under the cap.

        Watched clients come first, then each ranking's members (once, and not again when they
        streamed), then the waiting `overflow`; whoever does not fit is left out. The streaming
        budget reserved room for the full watch list and every K, so these fit unless the watch
        list and K alone exceed the cap.
        """
        room = max(0, self.max_clients - len(streamed))
        chosen: dict[str, ClientRecord] = {}
        for record in watched:
            if len(chosen) < room:
                chosen[record.clientid] = record
            else:
                self.dropped += 1
        for ranking in members:
            for record in ranking:
                if record.clientid in chosen or record.clientid in streamed:
                    continue
                if len(chosen) < room:
                    chosen[record.clientid] = record
                else:
                    self.dropped += 1
        late = list(chosen.values())
        waiting = [r for r in overflow if r.clientid not in chosen]  # a top-K took some
        room -= len(late)
        self.dropped += max(0, len(waiting) - room)
        return late + waiting[:room]
