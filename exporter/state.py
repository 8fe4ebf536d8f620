"""Compact per-client counter state that keeps aggregate counters monotonic across reconnects.

EMQX's per-client counters belong to one connection and restart at zero when the client
reconnects. For every tracked client this keeps the connection's identity and the last value
of each counter in flat arrays (about 200 bytes per client with the dict entry), so a poll
can add each client's increase since the last poll, or a new connection's full value.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import itemgetter, sub

#: Counter fields tracked per client, in this order in every delta list.
COUNTER_FIELDS: tuple[str, ...] = (
    "received_bytes", "sent_bytes", "received_messages", "sent_messages", "mqueue_dropped",
    "received_dropped", "received_dropped_await_pubrel_timeout",
    "sent_dropped", "sent_dropped_expired", "sent_dropped_queue_full", "sent_dropped_too_large",
)
WIDTH = len(COUNTER_FIELDS)
#: The increases of a client whose counters did not move, or that has no rate yet (shared:
#: never written to).
NO_INCREASE: list[int] = [0] * WIDTH
#: Each poll multiplies a client's reconnect score by this before adding its new connections,
#: so the score is a reconnect count over roughly the last ten polls.
RECONNECT_DECAY = 0.9


class CounterState:
    """Last counter values per client id, packed in arrays indexed by a slot number."""

    def __init__(self, parse_time: Callable[[str | None], float | None] | None = None) -> None:
        #: Reads a connection's start time; parsed once per connection, not once per poll.
        self._parse_time = parse_time
        self._slots: dict[str, int] = {}
        self._free: list[int] = []
        self._connection = array("q")       # hash of connected_at (or created_at)
        self._values = array("q")           # WIDTH counters per slot
        self._seen = array("l")             # poll serial that last saw the client
        self._node = array("l")             # index of the node that last listed it
        self._reconnects = array("f")       # decayed count of new connections
        self._since = array("d")            # when the connection started, Unix time (NaN: unknown)
        self._print = array("q")            # fingerprint of the row last observed (`quiet`)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, clientid: str) -> bool:
        return clientid in self._slots

    def quiet(self, clientids: Sequence[str], fingerprints: Sequence[int]) -> list[int]:
        """Each client's slot when its row is the one `observe` saw last (same fingerprint:
        same connection, same counters), else -1. Such a client has nothing to add, and
        `touch` records the sighting instead of `observe`: most of a fleet, found a page
        at a time with C passes.

        A fingerprint is a 64-bit hash of the row's connection fields and counters; two
        different rows share one with a chance of about 2**-64 per client and poll.
        """
        if not self._slots or not clientids:
            return [-1] * len(clientids)
        slots = list(map(self._slots.get, clientids, repeat(-1)))
        if len(slots) == 1:
            stored: Sequence[int] = (self._print[slots[0]],)
        else:
            stored = itemgetter(*slots)(self._print)  # -1 reads the last slot: masked below
        return [slot if slot >= 0 and seen == now else -1
                for slot, seen, now in zip(slots, stored, fingerprints, strict=True)]

    def touch(self, slot: int, node: int, poll: int) -> tuple[bool, float]:
        """Record the sighting of a `quiet` client; returns (rated, since) as `observe` does
        (its increases are all 0, and its connection is not new)."""
        seen = self._seen
        rated = seen[slot] == poll - 1
        seen[slot] = poll
        self._node[slot] = node
        return rated, self._since[slot]

    def observe(self, clientid: str, connection: int | None, values: Sequence[int | None],
                node: int, poll: int, started: str | None = None,
                fingerprint: int = 0) -> tuple[list[int], bool, bool, float]:
        """Record a sighting; return (increase per counter, new connection, rated, since).

        A new connection adds its full value; so does a counter that went down without a new
        connection (EMQX restarted the process): a lower bound is better than a negative step.
        `rated` says the increase is one poll interval's worth, so it makes a rate: the client
        was seen on the same connection by the previous poll. `since` is when the connection
        started (from `started`, read when the connection is new; NaN: unknown).
        """
        slot = self._slots.get(clientid)
        if slot is not None:
            self._print[slot] = fingerprint
        if connection is None:
            # A row without its connection time (absent, or a wrong-typed value dropped) cannot
            # say it is a new connection: taken as the one last seen, so its counters are not
            # added again in full (a counter that went down still counts as a restart).
            connection = self._connection[slot] if slot is not None else 0
        if slot is not None and self._connection[slot] == connection and None not in values:
            # The common case, in C: the same connection and every counter present.
            present: list[int] = list(values)  # type: ignore[arg-type]
            stored = self._values
            base = slot * WIDTH
            last = stored[base:base + WIDTH].tolist()
            went_down = False
            if present == last:
                deltas = [0] * WIDTH  # an idle client, most of a fleet: nothing to write back
            else:
                deltas = list(map(sub, present, last))
                went_down = min(deltas) < 0  # a restart: handled one counter at a time below
                if not went_down:
                    stored[base:base + WIDTH] = array("q", present)
            if not went_down:
                seen = self._seen
                rated = seen[slot] == poll - 1
                seen[slot] = poll
                self._node[slot] = node
                return deltas, False, rated, self._since[slot]
        if slot is None:
            slot = self._allocate(clientid)
            self._print[slot] = fingerprint
            new = True
            rated = False
        else:
            new = self._connection[slot] != connection
            rated = not new and self._seen[slot] == poll - 1
            if new:
                self._reconnects[slot] += 1.0
        if new:
            since = self._parse_time(started) if self._parse_time is not None else None
            self._since[slot] = math.nan if since is None else since
        self._connection[slot] = connection
        self._seen[slot] = poll
        self._node[slot] = node
        stored = self._values
        base = slot * WIDTH
        if new and None not in values:
            full: Sequence[int] = values  # type: ignore[assignment]
            stored[base:base + WIDTH] = array("q", full)
            return list(full), new, rated, self._since[slot]
        deltas = [0] * WIDTH
        for i, value in enumerate(values):
            if value is None:
                if new:
                    stored[base + i] = 0
                continue
            previous = stored[base + i]
            if value < previous:
                rated = False  # the counter restarted: its increase spans an unknown time
            deltas[i] = value if (new or value < previous) else value - previous
            stored[base + i] = value
        return deltas, new, rated, self._since[slot]

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
        walked = set(walked_nodes)
        gone = [cid for cid, slot in self._slots.items()
                if self._seen[slot] != poll and self._node[slot] in walked]
        for cid in gone:
            self._free.append(self._slots.pop(cid))
        scores = self._reconnects
        for slot in self._slots.values():
            scores[slot] *= RECONNECT_DECAY
        return len(gone)

    def _allocate(self, clientid: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._reconnects[slot] = 0.0
        else:
            slot = len(self._connection)
            self._connection.append(0)
            self._values.extend([0] * WIDTH)
            self._seen.append(0)
            self._node.append(0)
            self._reconnects.append(0.0)
            self._since.append(math.nan)
            self._print.append(0)
        self._slots[clientid] = slot
        return slot

    def nbytes(self) -> int:
        """Approximate memory held: the arrays plus the dict and its keys."""
        import sys

        arrays = sum(a.itemsize * len(a) for a in (
            self._connection, self._values, self._seen, self._node, self._reconnects,
            self._since, self._print))
        keys = sum(sys.getsizeof(k) for k in self._slots)
        return arrays + sys.getsizeof(self._slots) + keys + 28 * len(self._slots)
