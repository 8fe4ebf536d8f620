"""Compact per-client counter state that keeps aggregate counters monotonic across reconnects.

EMQX's per-client counters belong to one connection and restart at zero when the client
reconnects. For every tracked client this keeps the connection's identity and the last value
of each counter in NumPy arrays indexed by a stable slot per client (about 120 bytes per
client, plus the dict entry of its id), so a poll adds a page's increases since the last poll,
or a new connection's full value, with array operations: no Python step per client.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import numpy.typing as npt

from exporter.records import COUNTERS

#: Counter fields tracked per client: the columns of every increase matrix, in this order.
COUNTER_FIELDS: tuple[str, ...] = COUNTERS
WIDTH = len(COUNTER_FIELDS)
#: Column of each counter field in an increase matrix.
COUNTER_INDEX = {name: i for i, name in enumerate(COUNTER_FIELDS)}
#: A value EMQX did not report (every reported figure is >= 0, see `records.Number`).
ABSENT = -1
#: Each poll multiplies a client's reconnect score by this before adding its new connections,
#: so the score is a reconnect count over roughly the last ten polls.
RECONNECT_DECAY = 0.9

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Observation:
    """What a page's sightings changed, row by row (rows of the page as given)."""

    slots: Ints
    #: Increase of each counter since the last sighting (a new connection's full value), 0
    #: where the value is absent: one row per client, `COUNTER_FIELDS` columns.
    deltas: Ints
    #: A new connection (or a client first seen).
    new: Bools
    #: The increases span one poll interval on one connection, so they make a rate.
    rated: Bools
    #: When the connection started, Unix time (NaN: unknown).
    since: Floats


class CounterState:
    """Last counter values per client id, packed in arrays indexed by a slot number."""

    def __init__(self, parse_time: Callable[[str | None], float | None] | None = None) -> None:
        #: Reads a connection's start time; parsed once per connection, not once per poll.
        self._parse_time = parse_time
        self._slots: dict[str, int] = {}
        self._free: list[int] = []
        self._size = 0  # slots in use or free; the arrays may be longer
        self._connection = np.zeros(0, np.int64)      # hash of connected_at (or created_at)
        self._values = np.zeros((0, WIDTH), np.int64)  # the counters last seen
        self._seen = np.zeros(0, np.int32)            # poll serial that last saw the client
        self._listed = np.zeros(0, np.int32)          # poll serial that last listed it (dedup)
        self._node = np.zeros(0, np.int32)            # index of the node that last listed it
        self._reconnects = np.zeros(0, np.float32)    # decayed count of new connections
        self._since = np.zeros(0, np.float64)         # when the connection started (NaN: unknown)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, clientid: str) -> bool:
        return clientid in self._slots

    def slots(self, clientids: Sequence[str]) -> tuple[Ints, Bools]:
        """Each client's slot, allocating one for a client not tracked yet; and which slots
        were allocated here (a client listed twice in the page gets one slot)."""
        found = np.fromiter(map(self._slots.get, clientids, repeat(-1)), np.int64,
                            len(clientids))
        fresh = found < 0
        if fresh.any():
            unknown = [clientids[i] for i in np.flatnonzero(fresh).tolist()]
            first = dict.fromkeys(unknown)  # in order, once each
            count = len(first)
            reused = self._free[-count:][::-1] if self._free else []
            if reused:
                del self._free[-len(reused):]
            grown = count - len(reused)
            self._grow(self._size + grown)
            new_slots = reused + list(range(self._size, self._size + grown))
            self._size += grown
            self._slots.update(zip(first, new_slots, strict=True))
            slots = np.array(new_slots, np.int64)
            self._reset(slots)
            found[fresh] = np.fromiter(map(self._slots.__getitem__, unknown), np.int64,
                                       len(unknown))
        return found, fresh

    def first_listing(self, slots: Ints, poll: int) -> Bools:
        """Which rows are a client's first listing in this poll (the first row listed wins;
        later ones are drift), marking them listed."""
        _, first = np.unique(slots, return_index=True)
        keep = np.zeros(len(slots), np.bool_)
        keep[first] = True
        keep &= self._listed[slots] != poll
        self._listed[slots[keep]] = poll
        return keep

    def unlist(self, slots: Ints) -> None:
        """Forget that these clients were listed in this poll (their walk failed; another
        walk of the same node may list them again)."""
        self._listed[slots] = 0

    def observe_page(self, slots: Ints, allocated: Bools, connections: Ints,
                     has_connection: Bools, values: Ints, node: Ints, poll: int,
                     started: Sequence[str | None]) -> Observation:
        """Record a page of sightings (each slot once); return what changed.

        A new connection adds its full value; so does a counter that went down without a new
        connection (EMQX restarted the process): a lower bound is better than a negative step,
        and such an increase spans an unknown time, so it makes no rate. A row without its
        connection time (absent, or a wrong-typed value dropped) cannot say it is a new
        connection: it is taken as the one last seen, so its counters are not added again in
        full. `rated` says the client was seen on the same connection by the previous poll.
        """
        stored_connection = self._connection[slots]
        connection = np.where(has_connection, connections,
                              np.where(allocated, 0, stored_connection))
        new = allocated | (stored_connection != connection)
        absent = values < 0
        previous = self._values[slots]
        renewed = new[:, None]
        went_down = ~renewed & ~absent & (values < previous)
        deltas = np.where(absent, 0, np.where(renewed | went_down, values, values - previous))
        self._values[slots] = np.where(absent, np.where(renewed, 0, previous), values)
        rated = ~new & (self._seen[slots] == poll - 1) & ~went_down.any(axis=1)
        self._reconnects[slots[new & ~allocated]] += 1.0
        if new.any():
            parse = self._parse_time
            rows = np.flatnonzero(new)
            starts = [None if parse is None else parse(started[i]) for i in rows.tolist()]
            self._since[slots[rows]] = [math.nan if s is None else s for s in starts]
        self._connection[slots] = connection
        self._seen[slots] = poll
        self._node[slots] = node
        return Observation(slots, deltas, new, rated, self._since[slots])

    def observe(self, clientid: str, connection: int | None, values: Sequence[int | None],
                node: int, poll: int, started: str | None = None,
                ) -> tuple[list[int], bool, bool, float]:
        """One sighting (`observe_page` of a page of one): (increase per counter, new
        connection, rated, since)."""
        slots, allocated = self.slots([clientid])
        row = np.array([[ABSENT if v is None else v for v in values]], np.int64)
        seen = self.observe_page(slots, allocated, np.array([connection or 0], np.int64),
                                 np.array([connection is not None]), row,
                                 np.array([node], np.int64), poll, [started])
        return (seen.deltas[0].tolist(), bool(seen.new[0]), bool(seen.rated[0]),
                float(seen.since[0]))

    def reconnect_scores(self, slots: Ints) -> Floats:
        return self._reconnects[slots].astype(np.float64)

    def node_of(self, clientid: str) -> int | None:
        """Index of the node that last listed the client, if it is tracked."""
        slot = self._slots.get(clientid)
        return None if slot is None else int(self._node[slot])

    def reconnect_score(self, clientid: str) -> float:
        slot = self._slots.get(clientid)
        return 0.0 if slot is None else float(self._reconnects[slot])

    def sweep(self, poll: int, walked_nodes: Iterable[int]) -> int:
        """Forget clients the poll did not see on a node it walked completely; decay scores.

        Clients of a node that failed this poll are kept: they were not seen, not gone.
        """
        size = self._size
        live = np.zeros(size, np.bool_)
        tracked = np.fromiter(self._slots.values(), np.int64, len(self._slots))
        live[tracked] = True
        gone = live & (self._seen[:size] != poll) & np.isin(
            self._node[:size], np.fromiter(walked_nodes, np.int64))
        if gone.any():
            ids = list(self._slots)
            drop = gone[tracked]
            for index in np.flatnonzero(drop).tolist():
                self._free.append(self._slots.pop(ids[index]))
        self._reconnects[:size] *= np.float32(RECONNECT_DECAY)
        return int(gone.sum())

    def _grow(self, size: int) -> None:
        if size <= len(self._seen):
            return
        capacity = max(size, 2 * len(self._seen), 1024)

        def grown(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            bigger = np.zeros((capacity, *array.shape[1:]), array.dtype)
            bigger[:len(array)] = array
            return bigger

        self._connection = grown(self._connection)  # type: ignore[assignment]
        self._values = grown(self._values)  # type: ignore[assignment]
        self._seen = grown(self._seen)  # type: ignore[assignment]
        self._listed = grown(self._listed)  # type: ignore[assignment]
        self._node = grown(self._node)  # type: ignore[assignment]
        self._reconnects = grown(self._reconnects)  # type: ignore[assignment]
        self._since = grown(self._since)  # type: ignore[assignment]

    def _reset(self, slots: Ints) -> None:
        """A slot handed to a new client starts from nothing."""
        self._connection[slots] = 0
        self._values[slots] = 0
        self._seen[slots] = 0
        self._listed[slots] = 0
        self._node[slots] = 0
        self._reconnects[slots] = 0.0
        self._since[slots] = math.nan

    def nbytes(self) -> int:
        """Memory held: the arrays (their used part) plus the dict and its keys."""
        arrays: tuple[npt.NDArray[np.generic], ...] = (
            self._connection, self._values, self._seen, self._listed, self._node,
            self._reconnects, self._since)
        per_slot = sum(a[0:1].nbytes if len(a) else 0 for a in arrays)
        keys = sum(map(sys.getsizeof, self._slots))
        return per_slot * self._size + sys.getsizeof(self._slots) + keys
