"""Which clients get per-client series: watch list, allow/deny, top-K per ranking, and a cap.

Priority under the cap: watched clients first, then top-K members, then the allow list.
Top-K membership has hysteresis: a member stays while it ranks within K x (1 + hysteresis),
so a client hovering at rank K does not flap in and out between polls.

With none of these configured every client is exported, and when there are more than the cap
allows, the cap's worth is chosen by the default ranking (`DEFAULT_RANKING`) with the same
hysteresis, never by listing order.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from operator import and_, contains, not_
from typing import Literal

import numpy as np

from exporter.columns import Columns, exact, rates
from exporter.distribution import dropped
from exporter.records import ClientRecord
from exporter.state import COUNTER_INDEX, Bools, Floats, Ints

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

    def matches_page(self, page: Columns) -> Bools:
        """`matches` of each row of a page."""
        values = page.clientids if self.field == "clientid" else [
            u or "" for u in page.values("username")]
        return np.array(fullmatches(self.pattern, values), np.bool_).reshape(page.size)


#: The scores of a page's rows in one ranking, larger is worse: from the page, each row's
#: counter increases over one poll interval (0 where the row has no rate), 1 / seconds since
#: the previous poll (None on the first poll) and each row's reconnect score.
ScoreFunction = Callable[[Columns, Ints, float | None, Floats], Floats]


@dataclass(frozen=True, slots=True)
class Ranking:
    """One meaning of "worst" for top-K, the status page and `top`."""

    name: str
    help: str
    score: ScoreFunction


def _mqueue_fill(page: Columns, increases: Ints, per_second: float | None,
                 reconnects: Floats) -> Floats:
    return page.fill("mqueue_len")[0]


def _inflight_fill(page: Columns, increases: Ints, per_second: float | None,
                   reconnects: Floats) -> Floats:
    return page.fill("inflight")[0]


def _drop_rate(page: Columns, increases: Ints, per_second: float | None,
               reconnects: Floats) -> Floats:
    return rates(dropped(increases), per_second)


def _byte_rate(page: Columns, increases: Ints, per_second: float | None,
               reconnects: Floats) -> Floats:
    received, sent = exact(increases[:, COUNTER_INDEX["received_bytes"]],
                           increases[:, COUNTER_INDEX["sent_bytes"]])
    return rates(received + sent, per_second)


def _reconnects(page: Columns, increases: Ints, per_second: float | None,
                reconnects: Floats) -> Floats:
    return reconnects


#: The rankings for top-K: a client's `Scores` hold one value per ranking, in this order.
RANKING_TABLE: tuple[Ranking, ...] = (
    Ranking("mqueue_fill", "session queue length / capacity", _mqueue_fill),
    Ranking("inflight_fill", "inflight messages / window size", _inflight_fill),
    Ranking("drop_rate", "messages dropped per second", _drop_rate),
    Ranking("byte_rate", "bytes received + sent per second", _byte_rate),
    Ranking("reconnects", "new connections over about the last ten polls", _reconnects),
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
#: Positions in `Scores` of the default ranking's values, compared in this order.
DEFAULT_KEY = tuple(RANKINGS.index(name) for name in DEFAULT_RANKING)


def score_page(page: Columns, deltas: Ints, rated: Bools, per_second: float | None,
               reconnects: Floats) -> Floats:
    """Every ranking's scores of a page's rows: a row per client, a column per ranking."""
    increases = np.where(rated[:, None], deltas, 0)
    if not page.size:
        return np.zeros((0, len(RANKING_TABLE)))
    return np.stack([np.asarray(r.score(page, increases, per_second, reconnects), np.float64)
                     for r in RANKING_TABLE], axis=1)


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


def _tie(clientid: str) -> int:
    """Ties go by a hash of the client id: stable across polls, unlike the listing order."""
    return zlib.crc32(clientid.encode("utf-8", "replace"))


class TopK:
    """The best ⌈K·(1+hysteresis)⌉ clients of one ranking during a poll, in bounded memory.

    A named ranking only takes clients with a score above 0; the default ranking
    (`keep_zero`) takes every client, so it also chooses among clients that are all fine.
    Candidates are kept as arrays and merged with each page's best rows at once.
    """

    def __init__(self, name: str, k: int, hysteresis: float, *, keep_zero: bool = False) -> None:
        self.name = name
        #: Positions in `Scores` of the values compared, most significant first.
        self.key = (RANKINGS.index(name),) if name in RANKINGS else DEFAULT_KEY
        self.k = k
        self.keep = max(k, math.ceil(k * (1 + hysteresis)))
        self.keep_zero = keep_zero
        self.members: set[str] = set()
        #: The members chosen by the last `finish`, worst first.
        self.last: list[RankedClient] = []
        self.start()

    def start(self) -> None:
        """Forget the candidates of the last poll."""
        self._scores = np.zeros((0, len(RANKINGS)))
        self._ties = np.zeros(0, np.int64)
        self._ids: list[str] = []
        self._records: list[ClientRecord] = []

    def offer_page(self, scores: Floats, page: Columns, rows: Ints) -> None:
        """Offer these rows of a page, with their `score_page` scores (a row per page row)."""
        if self.k <= 0 or not len(rows):
            return
        primary = scores[rows, self.key[0]]
        if not self.keep_zero:
            rows = rows[primary > 0]  # a client with no drops or no queue is not the worst
            primary = scores[rows, self.key[0]]
        if len(self._ids) >= self.keep:  # below the lowest candidate: out of the running
            floor = self._scores[:, self.key[0]].min()
            rows = rows[primary >= floor]
            primary = scores[rows, self.key[0]]
        if len(rows) > self.keep:  # the rows that may be among the best (ties kept)
            bar = np.partition(primary, len(primary) - self.keep)[len(primary) - self.keep]
            rows = rows[primary >= bar]
        if not len(rows):
            return
        ids = [page.clientids[i] for i in rows.tolist()]
        self._merge(scores[rows], np.array([_tie(i) for i in ids], np.int64), ids,
                    page.take(rows))

    def offer(self, scores: Scores, record: ClientRecord) -> None:
        """Offer one client (`offer_page` of a page of one)."""
        self.offer_page(np.array([scores], np.float64), Columns([record]),
                        np.zeros(1, np.int64))

    def _merge(self, scores: Floats, ties: Ints, ids: list[str],
               records: list[ClientRecord]) -> None:
        all_scores = np.concatenate([self._scores, scores])
        all_ties = np.concatenate([self._ties, ties])
        all_ids = self._ids + ids
        all_records = self._records + records
        # Best first: by the key's values in order, then the tie.
        order = np.lexsort((all_ties, *(all_scores[:, i] for i in reversed(self.key))))[::-1]
        order = order[:self.keep]
        self._scores = all_scores[order]
        self._ties = all_ties[order]
        picked = order.tolist()
        self._ids = [all_ids[i] for i in picked]
        self._records = [all_records[i] for i in picked]

    def discard(self, clientids: Iterable[str]) -> None:
        """Drop candidates seen on a node whose walk failed."""
        gone = set(clientids)
        if gone and gone.intersection(self._ids):
            keep = [i for i, cid in enumerate(self._ids) if cid not in gone]
            self._scores = self._scores[keep]
            self._ties = self._ties[keep]
            self._ids = [self._ids[i] for i in keep]
            self._records = [self._records[i] for i in keep]

    def finish(self) -> list[ClientRecord]:
        """The K members: former members still within the wider band first, then the best."""
        ranked = range(len(self._ids))  # best first already
        staying = [i for i in ranked if self._ids[i] in self.members][: self.k]
        chosen = {self._ids[i] for i in staying}
        for i in ranked:
            if len(chosen) >= self.k:
                break
            chosen.add(self._ids[i])
        winners = [i for i in ranked if self._ids[i] in chosen]
        self.members = chosen
        scores = self._scores.tolist()
        self.last = [RankedClient(self._ids[i], self._records[i].node, self._records[i].username,
                                  tuple(scores[i])) for i in winners]
        return [self._records[i] for i in winners]


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

    def allowed(self, page: Columns) -> Bools:
        """Which rows of a page the allow and deny lists let through."""
        s = self.settings
        if s.export_all:
            return np.ones(page.size, np.bool_)
        allowed = np.zeros(page.size, np.bool_)
        for pattern in s.allow:
            allowed |= pattern.matches_page(page)
        for pattern in s.deny:
            if allowed.any():
                allowed &= ~pattern.matches_page(page)
        return allowed


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
        streamed, waiting = self.admit_many(1)
        return "stream" if streamed else "overflow" if waiting else "full"

    def admit_many(self, count: int) -> tuple[int, int]:
        """Take room for `count` allowed clients in listing order: how many stream and how
        many wait in the overflow (the rest find the cap full)."""
        streamed = min(count, self.allow_left)
        self.allow_left -= streamed
        waiting = min(count - streamed, self.overflow_left)
        self.overflow_left -= waiting
        if streamed + waiting < count:
            self.full = True
        return streamed, waiting

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
