"""Which clients a list request returns, in order: filters, node sequences, pages, cursors.

A node's clients sit in a fixed array sorted by client id. A query sees that array in listing
order (ascending, or descending like EMQX 5.5+'s ``ets:select_reverse``) minus a few excluded
positions (kicked clients, or offline sessions for v3 connections), or as an explicit list of
matching positions when filtered. "ord" below is a position in listing order; a rank counts
only the listed entries. Cost is O(rows returned + log N) per request.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from emqx_simulator.population import Population
from emqx_simulator.profile import Profile


class NodeSeq:
    """The clients one node lists for one query, in listing order."""

    __slots__ = ("_n", "descending", "members", "node", "picks", "size", "skip")

    def __init__(
        self,
        node: int,
        members: array[int],
        descending: bool,
        skip: Sequence[int] = (),
        picks: Sequence[int] | None = None,
    ) -> None:
        self.node = node
        self.members = members
        self.descending = descending
        self._n = len(members)
        #: Sorted ords left out (unfiltered view).
        self.skip = skip
        #: Sorted ords included (filtered view); None means "all but skip".
        self.picks = picks
        self.size = len(picks) if picks is not None else self._n - len(skip)

    def _slice(self, lo: int, hi: int) -> Sequence[int]:
        """Client indices at ords [lo, hi)."""
        n = self._n
        if self.descending:
            return self.members[n - hi : n - lo][::-1]
        return self.members[lo:hi]

    def at(self, o: int) -> int:
        """Client index at ord ``o``."""
        return self.members[self._n - 1 - o] if self.descending else self.members[o]

    def _ord_of_rank(self, rank: int) -> int:
        """Ord of the listed entry with this rank (unfiltered view)."""
        skip, o = self.skip, rank
        while True:  # fixed point: rank + number of skipped ords at or before o
            nxt = rank + bisect_right(skip, o)
            if nxt == o:
                return o
            o = nxt

    def take(self, ord_from: int, count: int) -> tuple[list[int], int]:
        """Up to ``count`` client indices listed at ords >= ord_from, and the ord to resume at."""
        out: list[int] = []
        if count <= 0:
            return out, ord_from
        if self.picks is not None:
            picks = self.picks
            j = bisect_left(picks, ord_from)
            chosen = picks[j : j + count]
            out.extend(self.at(o) for o in chosen)
            return out, (chosen[-1] + 1 if chosen else max(ord_from, self._n))
        skip, n, o = self.skip, self._n, ord_from
        j, ns, need = bisect_left(skip, o), len(skip), count
        while need > 0 and o < n:
            nxt = skip[j] if j < ns else n
            if nxt == o:
                j += 1
                o += 1
                continue
            end = min(nxt, o + need)
            out.extend(self._slice(o, end))
            need -= end - o
            o = end
        return out, o

    def take_ranks(self, start: int, count: int) -> list[int]:
        """Client indices of the listed entries with ranks [start, start + count)."""
        if start >= self.size or count <= 0:
            return []
        if self.picks is not None:
            return [self.at(o) for o in self.picks[start : start + count]]
        return self.take(self._ord_of_rank(start), count)[0]


def page_window(seqs: Sequence[NodeSeq], start: int, count: int) -> list[int]:
    """Client indices of ranks [start, start + count) over the nodes in order (page paging)."""
    out: list[int] = []
    for seq in seqs:
        if count <= 0:
            break
        if start >= seq.size:
            start -= seq.size
            continue
        rows = seq.take_ranks(start, count)
        out.extend(rows)
        count -= len(rows)
        start = 0
    return out


def v5_hasnext(sizes: Sequence[int], start: int, limit: int) -> bool:
    """``meta.hasnext`` of EMQX 5.0.15+ page ``start // limit + 1``.

    EMQX reads each node in ``ets:select_reverse`` chunks of ``limit`` rows and answers
    ``overflow orelse not complete``: a page that ends exactly where a chunk ends says
    ``true`` even when nothing follows, and the next page is empty (emqx_mgmt_api.erl).
    """
    end = start + limit
    before = 0
    for k, size in enumerate(sizes):
        if before + size >= end:  # the page's last row is on node k
            local = end - 1 - before
            chunk = local // limit
            chunk_len = min(limit, size - chunk * limit)
            collected = max(0, before + chunk * limit - start)
            overflow = (limit - collected) < chunk_len
            complete = chunk_len < limit and k == len(sizes) - 1
            return overflow or not complete
        before += size
    return False


@dataclass(frozen=True)
class CursorPage:
    """One ``/clients_v2`` page: client indices and where the next page starts (None: done)."""

    indices: list[int]
    next_cursor: tuple[int, int] | None


def cursor_page(
    seqs: Sequence[NodeSeq], node_pos: int, ord_from: int, limit: int, long_pages: bool
) -> CursorPage:
    """A ``/clients_v2`` page starting at ord ``ord_from`` of the ``node_pos``-th node.

    Like EMQX, each node is read with a limit of the rows still missing; a node that yields
    fewer is done and the next one is read. A node that yields exactly the rows asked for keeps
    a continuation even when it has nothing more, so the cursor can lead to an empty page. With
    ``long_pages`` (5.7/5.8) a later node is read with the full limit, so pages may be longer.
    """
    out: list[int] = []
    while node_pos < len(seqs):
        want = limit if long_pages and out else limit - len(out)
        rows, resume = seqs[node_pos].take(ord_from, want)
        out.extend(rows)
        if len(rows) == want:  # the node may have more: keep its continuation
            return CursorPage(out, (node_pos, resume))
        node_pos, ord_from = node_pos + 1, 0
        if len(out) >= limit:
            break
    return CursorPage(out, (node_pos, 0) if node_pos < len(seqs) else None)


# -- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientFilter:
    """Conditions of one list request; empty fields do not filter."""

    clientids: tuple[str, ...] = ()
    usernames: tuple[str, ...] = ()
    conn_state: str | None = None
    ip_address: str | None = None
    clean_start: bool | None = None
    proto_ver: int | None = None
    like_clientid: str | None = None
    like_username: str | None = None
    #: v4.1-4.3.11 treat ``_like_*`` as regular expressions, later versions as substrings.
    like_regex: bool = False

    @property
    def active(self) -> bool:
        """True when any condition is set."""
        return self != ClientFilter(like_regex=self.like_regex)

    @property
    def fuzzy(self) -> bool:
        """True when a ``like`` condition is set (v5 then omits ``meta.count``)."""
        return self.like_clientid is not None or self.like_username is not None


def _like(pattern: str, regex: bool) -> Callable[[str], bool]:
    if regex:
        compiled = re.compile(pattern)
        return lambda value: compiled.search(value) is not None
    return lambda value: pattern in value


def compile_filter(
    flt: ClientFilter,
    population: Population,
    connected: Callable[[int], bool],
    profile: Callable[[int], Profile],
) -> Callable[[int], bool]:
    """A predicate over client indices; cheap conditions run before costly ones."""
    checks: list[Callable[[int], bool]] = []
    if flt.clientids:
        wanted = frozenset(flt.clientids)
        checks.append(lambda i: population.clientid(i) in wanted)
    if flt.like_clientid is not None:
        like_id = _like(flt.like_clientid, flt.like_regex)
        checks.append(lambda i: like_id(population.clientid(i)))
    if flt.usernames:
        names = frozenset(flt.usernames)
        checks.append(lambda i: population.username(i) in names)
    if flt.like_username is not None:
        like_user = _like(flt.like_username, flt.like_regex)
        checks.append(lambda i: like_user(population.username(i) or ""))
    if flt.conn_state is not None:
        if flt.conn_state not in ("connected", "disconnected"):
            return lambda i: False  # "idle" (never simulated) or an unknown state
        want_connected = flt.conn_state == "connected"
        checks.append(lambda i: connected(i) == want_connected)
    if flt.ip_address is not None:
        ip = flt.ip_address
        checks.append(lambda i: profile(i).ip == ip)
    if flt.clean_start is not None:
        clean = flt.clean_start
        checks.append(lambda i: profile(i).clean_start == clean)
    if flt.proto_ver is not None:
        ver = flt.proto_ver
        checks.append(lambda i: profile(i).proto_ver == ver)
    return lambda i: all(check(i) for check in checks)


# -- /clients_v2 cursors ----------------------------------------------------------------------
#
# EMQX's cursor is ``base62(term_to_binary([1, Type, #{NodeIdx, EtsContinuation}]))``:
# stateless, replayable, and rejected with 400 "bad cursor" when it does not decode or names a
# node index beyond the running nodes. These carry the same facts in JSON.

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = {c: i for i, c in enumerate(_ALPHABET)}
_VERSION = 1


def encode_cursor(node_pos: int, ord_pos: int) -> str:
    """Cursor text for resuming at ``ord_pos`` of the ``node_pos``-th running node."""
    raw = msgspec.json.encode([_VERSION, node_pos + 1, ord_pos])
    number = int.from_bytes(raw, "big")
    digits: list[str] = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def decode_cursor(text: str) -> tuple[int, int] | None:
    """(node position, ord) of a cursor, or None when it is not one of ours."""
    if not text or len(text) > 64 or any(c not in _DIGITS for c in text):
        return None
    number = 0
    for c in text:
        number = number * 62 + _DIGITS[c]
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    try:
        value = msgspec.json.decode(raw, type=tuple[int, int, int])
    except msgspec.DecodeError:
        return None
    version, node_idx, ord_pos = value
    if version != _VERSION or node_idx < 1 or ord_pos < 0:
        return None
    return node_idx - 1, ord_pos
