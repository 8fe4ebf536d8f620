"""The simulated cluster: nodes, clients, their state over time, and test controls."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import msgspec

from emqx_simulator.durable import DurableSessions
from emqx_simulator.faults import Faults
from emqx_simulator.listing import ClientFilter, NodeSeq, compile_filter
from emqx_simulator.population import CHURN, OFFLINE, Population, node_name
from emqx_simulator.profile import Profile, ProfileFactory
from emqx_simulator.settings import Features, SimSettings, features_for
from emqx_simulator.traffic import last_connect, traffic
from emqx_simulator.wire import Dialect, RowShape, RowValues, Timeline

#: "sessions": every listed session (v4/v5 clients, v3 sessions); "connections": online only
#: (v3 connections have no connected flag and leave offline sessions out).
View = Literal["sessions", "connections"]

# Profiles are cached when the whole population fits (~1.35 KB a client with its wire values and
# timestamps), so repeated walks of up to ~130k clients skip the hashing (~60 instead of ~105 ms
# per 10k-row page); bigger populations are derived afresh on every read.
_PROFILE_CACHE_MAX = 131_072


class SimCluster:
    """A simulated EMQX cluster of ``settings.nodes`` nodes and ``settings.clients`` clients.

    Clients are derived from their index; only overrides (kicks, patches, explicit reconnects
    and disconnects, down nodes) are stored.
    """

    def __init__(self, settings: SimSettings, clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.features: Features = features_for(settings)
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self.start_ms = int(self._clock() * 1000)
        self.node_names: list[str] = [node_name(i) for i in range(settings.nodes)]
        self._node_ids = {name: i for i, name in enumerate(self.node_names)}
        self.faults = Faults()
        self.requests: collections.Counter[str] = collections.Counter()
        #: Channel-table rows EMQX would visit answering v5 list requests (a cost model:
        #: rows read up to the page's end, ``select_count`` scans, cursor continuations).
        self.rows_scanned = 0
        #: Rows v5 list requests returned (each formatted and encoded by EMQX).
        self.rows_returned = 0
        self.population = Population(settings)
        self._factory = ProfileFactory(self.population, settings.seed, self.start_ms)
        self.dialect = Dialect(self.features, settings.timezone, self.node_names)
        self.durable = DurableSessions(self.features, settings.durable_sessions, self.node_names,
                                       settings.timezone, self.start_ms,
                                       settings.expired_durable_sessions)
        self._profiles: dict[int, Profile] | None = (
            {} if settings.clients <= _PROFILE_CACHE_MAX else None
        )
        # Overrides, keyed by client index.
        self._gone: set[int] = set()  # kicked, or clean sessions that disconnected
        self._disconnected: dict[int, int] = {}  # persistent sessions offline since (ms)
        self._reconnected: dict[int, int] = {}  # connected anew at (ms)
        self._patches: dict[int, dict[str, Any]] = {}
        # Listing staleness (``settings.listing_refresh_s``): what the listing showed of each
        # patched client before its latest patch, when that patch came, and when a lookup
        # last refreshed a client's listed row.
        self._refresh_ms = int(settings.listing_refresh_s * 1000)
        self._listed_patches: dict[int, dict[str, Any]] = {}
        self._patched_at: dict[int, int] = {}
        self._looked_up_at: dict[int, int] = {}
        self._touched: set[int] = set()
        self._down: set[int] = set()
        #: Down nodes whose RPC fails while membership says running (a subset of _down).
        self.unreachable: set[int] = set()
        #: Bumped on every change of what the API lists (caches key on it).
        self.generation = 0
        #: Called on each connect and disconnect the controls cause: (event, client index,
        #: EMQX's disconnect reason or None); `emqx_simulator.events` publishes them.
        self.listeners: list[Callable[[str, int, str | None], None]] = []
        self._excluded: dict[tuple[int, View], list[int]] = {}
        self._filtered: collections.OrderedDict[tuple[Any, ...], list[list[int]]] = (
            collections.OrderedDict()
        )

    # -- time -------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The cluster's current time in epoch ms (fixed at the start when ``frozen``)."""
        return self.start_ms if self.settings.frozen else int(self._clock() * 1000)

    # -- nodes ------------------------------------------------------------------------------
    def node_id(self, name: str) -> int | None:
        """Index of a node name, None when the cluster has no such node."""
        return self._node_ids.get(name)

    def set_node_down(self, node: str, down: bool = True) -> None:
        """Stop (or restart) a node: a stopped node and its clients drop out of listings."""
        k = self._node_ids[node]
        if (k in self._down) != down:
            (self._down.add if down else self._down.discard)(k)
            if not down:
                self.unreachable.discard(k)
            self._changed()

    def set_node_unreachable(self, node: str, unreachable: bool = True) -> None:
        """A node the membership still counts as running while RPC to it fails (it just died,
        or hangs): it is down for listings, and v3/v4 ``/nodes`` list it as
        ``{"node": N, "error": "nodedown"}`` (``emqx_mgmt:list_nodes`` then ``format/2``,
        emqx_mgmt_api_nodes.erl@v4.4.19 L35-41) instead of leaving it out."""
        k = self._node_ids[node]
        (self.unreachable.add if unreachable else self.unreachable.discard)(k)
        self.set_node_down(node, unreachable)

    def down_nodes(self) -> frozenset[int]:
        """Indices of the stopped nodes."""
        return frozenset(self._down)

    def is_node_down(self, node: str) -> bool:
        """Whether the node is stopped."""
        return self._node_ids[node] in self._down

    def running_nodes(self, sort: bool) -> list[int]:
        """Running nodes, in name order when ``sort``, else in the order they were created."""
        ids = [k for k in range(len(self.node_names)) if k not in self._down]
        return sorted(ids, key=self.node_names.__getitem__) if sort else ids

    def listing_nodes(self) -> list[int]:
        """Running nodes in the order a cluster-wide list visits them: by name in EMQX 5
        (``mria:running_nodes`` is sorted) and from 4.4.15, by membership before."""
        f = self.features
        return self.running_nodes(sort=f.api == "v5" or f.version >= (4, 4, 15))

    def add_node_down(self, node: str) -> None:
        """Stop a node (same as ``set_node_down(node)``)."""
        self.set_node_down(node)

    def node_counts(self, k: int) -> tuple[int, int]:
        """(sessions, online connections) on node ``k`` now."""
        pop = self.population
        sessions = len(pop.members[k])
        online = pop.online_counts[k]
        for i in self._touched:
            if pop.node_of(i) != k:
                continue
            base_online = pop.status(i) != OFFLINE
            tl = self._timeline(i, self.profile(i), self.now_ms())
            sessions -= tl is None
            online += (tl is not None and tl[0]) - base_online
        return sessions, online

    # -- one client -------------------------------------------------------------------------
    def profile(self, index: int) -> Profile:
        """Fixed traits of a client."""
        cache = self._profiles
        if cache is None:
            return self._factory.profile(index)
        p = cache.get(index)
        if p is None:
            p = cache[index] = self._factory.profile(index)
        return p

    def _timeline(self, i: int, p: Profile, now: int) -> Timeline | None:
        """(online, connected_at, created_at, disconnected_at) of client i at ``now``."""
        if i not in self._touched:
            if p.status == OFFLINE:
                return (False, p.base_connected_ms, p.base_connected_ms, p.base_disconnected_ms)
            conn = p.base_connected_ms
            if p.status == CHURN:
                conn = last_connect(conn, p.churn_period_ms, now)
            return (True, conn, conn if p.clean_start else p.base_connected_ms, 0)
        if i in self._gone:
            return None
        fresh = self._reconnected.get(i)
        if fresh is None and p.status == OFFLINE:
            return (False, p.base_connected_ms, p.base_connected_ms, p.base_disconnected_ms)
        anchor = p.base_connected_ms if fresh is None else fresh
        offline_since = self._disconnected.get(i)
        ref = now if offline_since is None else offline_since
        conn = last_connect(anchor, p.churn_period_ms, ref) if p.status == CHURN else anchor
        created = conn if p.clean_start else anchor
        if offline_since is None:
            return (True, conn, created, 0)
        return (False, conn, created, offline_since)

    def _values(self, i: int, now: int) -> RowValues | None:
        p = self.profile(i)
        tl = self._timeline(i, p, now)
        if tl is None:
            return None
        tr = traffic(p, tl[1], tl[2], now if tl[0] else tl[3], tl[0])
        return self.dialect.build(p, tl, tr)

    def connected(self, index: int) -> bool:
        """Whether the client is connected now (False for offline sessions and gone clients)."""
        tl = self._timeline(index, self.profile(index), self.now_ms())
        return tl is not None and tl[0]

    def _index(self, clientid: str) -> int:
        index = self.population.index_of(clientid)
        if index is None:
            raise KeyError(f"no simulated client {clientid!r}")
        return index

    def row(self, clientid: str) -> dict[str, Any] | None:
        """The client as ``GET /clients/{id}`` returns it now, or None when it is not listed."""
        index = self.population.index_of(clientid)
        if index is None:
            k = self.durable.index_of(clientid)
            return None if k is None else self.durable.row(k)
        if self.population.node_of(index) in self._down:
            return None
        if self.features.api == "v3" and not self.connected(index):
            return None  # v3 looks up connections, and an offline session has none
        rows = self.dict_rows([index])
        if self._refresh_ms:
            self._looked_up_at[index] = self.now_ms()  # the lookup refreshes the listed row
        return rows[0] if rows else None

    # -- many clients -----------------------------------------------------------------------
    def rows(self, node: str | None = None) -> Iterator[dict[str, Any]]:
        """The clients the API would list now (one node or all), as full wire dicts.

        For v3 these are connection rows (online clients only); ``sessions`` gives v3 session
        rows. Order is the listing order of this version, node by node.
        """
        yield from self._iter_rows(node, "connections" if self.features.api == "v3" else "sessions")

    def sessions(self, node: str | None = None) -> Iterator[dict[str, Any]]:
        """v3 only: the rows ``/sessions`` lists (offline persistent sessions included)."""
        for seq in self._seqs_for(node, "sessions"):
            yield from self.sessions_of(seq.take(0, seq.size)[0])

    def sessions_of(self, indices: Iterable[int]) -> Iterator[dict[str, Any]]:
        """v3 only: session rows of these clients now."""
        shape, build = self.dialect.session, self.dialect.build_session
        if shape is None or build is None:
            raise ValueError("sessions exist in the v3 API only")
        now = self.now_ms()
        for i in indices:
            p = self.profile(i)
            tl = self._timeline(i, p, now)
            if tl is not None:
                tr = traffic(p, tl[1], tl[2], now if tl[0] else tl[3], tl[0])
                yield shape.as_dict(build(p, tl, tr))

    def _iter_rows(self, node: str | None, view: View) -> Iterator[dict[str, Any]]:
        for seq in self._seqs_for(node, view):
            indices = seq.take(0, seq.size)[0]
            for start in range(0, len(indices), 1000):
                yield from self.dict_rows(indices[start : start + 1000])

    def _seqs_for(self, node: str | None, view: View) -> list[NodeSeq]:
        if node is None:
            nodes = self.listing_nodes()
        else:
            k = self._node_ids[node]
            nodes = [] if k in self._down else [k]
        return self.seqs(nodes, view, None)

    def seqs(self, nodes: Iterable[int], view: View, flt: ClientFilter | None) -> list[NodeSeq]:
        """What each node lists for a query, in listing order of this version."""
        desc = self.features.descending
        members = self.population.members
        if flt is None or not flt.active:
            return [NodeSeq(k, members[k], desc, skip=self._excluded_ords(k, view)) for k in nodes]
        picks = self._filtered_ords(view, flt)
        return [NodeSeq(k, members[k], desc, picks=picks[k]) for k in nodes]

    def _ord(self, k: int, pos: int) -> int:
        return len(self.population.members[k]) - 1 - pos if self.features.descending else pos

    def _excluded_ords(self, k: int, view: View) -> list[int]:
        key = (k, view)
        cached = self._excluded.get(key)
        if cached is not None:
            return cached
        pop = self.population
        excluded: set[int] = set()
        for i in self._gone:
            node, pos = pop.position(i)
            if node == k:
                excluded.add(pos)
        if view == "connections":
            excluded.update(pop.offline_positions[k])
            for i in self._touched:
                node, pos = pop.position(i)
                if node == k and i not in self._gone:
                    (excluded.discard if self.connected(i) else excluded.add)(pos)
        result = sorted(self._ord(k, pos) for pos in excluded)
        self._excluded[key] = result
        return result

    def _filtered_ords(self, view: View, flt: ClientFilter) -> list[list[int]]:
        """Per node, the sorted ords matching ``flt`` (cached until something changes)."""
        key = (self.generation, view, flt)
        cached = self._filtered.get(key)
        if cached is not None:
            self._filtered.move_to_end(key)
            return cached
        pop = self.population
        match = compile_filter(flt, pop, self.connected, self.profile)
        picks: list[list[int]] = [[] for _ in pop.members]
        if flt.clientids:  # exact ids: direct lookups, no scan
            for cid in flt.clientids:
                i = pop.index_of(cid)
                if i is not None and match(i):
                    k, pos = pop.position(i)
                    picks[k].append(self._ord(k, pos))
            skip = {k: set(self._excluded_ords(k, view)) for k in range(len(picks))}
            picks = [sorted(set(p) - skip[k]) for k, p in enumerate(picks)]
        else:
            for k in range(len(pop.members)):
                seq = NodeSeq(k, pop.members[k], self.features.descending,
                              skip=self._excluded_ords(k, view))  # fmt: skip
                ords = range(len(pop.members[k]))
                skipped = set(seq.skip)
                picks[k] = [o for o in ords if o not in skipped and match(seq.at(o))]
        self._filtered[key] = picks
        if len(self._filtered) > 8:
            self._filtered.popitem(last=False)
        return picks

    def materialize(
        self, indices: Iterable[int], shape: RowShape | None = None
    ) -> list[msgspec.Struct | dict[str, Any]]:
        """Wire rows of these clients now, ready to encode: Structs, or dicts for patched ones."""
        if self._refresh_ms:
            return self._materialize_stale(indices, shape)
        # The hot loop of every list request: _values and _timeline are inlined for clients
        # without overrides, which saves ~1 us of a ~6 us row.
        now = self.now_ms()
        shape = self.dialect.client if shape is None else shape
        out: list[msgspec.Struct | dict[str, Any]] = []
        append, encodable = out.append, shape.encodable
        patches, touched, build = self._patches, self._touched, self.dialect.build
        cache = self._profiles if self._profiles is not None else {}
        profile = self.profile
        for i in indices:
            p = cache.get(i) or profile(i)
            if i in touched:
                tl = self._timeline(i, p, now)
                if tl is None:
                    continue
            elif p.status == OFFLINE:
                tl = (False, p.base_connected_ms, p.base_connected_ms, p.base_disconnected_ms)
            else:
                conn = p.base_connected_ms
                if p.status == CHURN:
                    conn = last_connect(conn, p.churn_period_ms, now)
                tl = (True, conn, conn if p.clean_start else p.base_connected_ms, 0)
            values = build(p, tl, traffic(p, tl[1], tl[2], now if tl[0] else tl[3], tl[0]))
            if i in patches:
                append(self._patched(values, patches[i], shape))
            else:
                append(encodable(values))
        return out

    def listed_as_of(self, index: int, now: int) -> int:
        """The moment a listing's row of this client shows (``listing_refresh_s``): its
        latest refresh, every period at a phase of its own, or its latest lookup."""
        period = self._refresh_ms
        phase = self.population.hash(index) % period
        refreshed = now - (now - phase) % period
        return max(refreshed, min(now, self._looked_up_at.get(index, 0)))

    def _materialize_stale(self, indices: Iterable[int],
                           shape: RowShape | None) -> list[msgspec.Struct | dict[str, Any]]:
        """Listing rows whose counters and patches are as of each row's last refresh, while
        connection state is current (EMQX updates the channel-info table on connect and
        disconnect, and the stats on a timer; recorded in observations.json: queued messages
        and sent counts showed in the listing ~15 s after a lookup showed them)."""
        now = self.now_ms()
        shape = self.dialect.client if shape is None else shape
        out: list[msgspec.Struct | dict[str, Any]] = []
        for i in indices:
            p = self.profile(i)
            tl = self._timeline(i, p, now)
            if tl is None:
                continue
            as_of = self.listed_as_of(i, now)
            ref = max(tl[1], as_of) if tl[0] else tl[3]
            values = self.dialect.build(p, tl, traffic(p, tl[1], tl[2], ref, tl[0]))
            patch = (self._listed_patches.get(i) if self._patched_at.get(i, 0) > as_of
                     else self._patches.get(i))
            out.append(shape.encodable(values) if patch is None
                       else self._patched(values, patch, shape))
        return out

    def dict_rows(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        """Full wire rows of these clients now, as dicts (patches applied)."""
        now = self.now_ms()
        full = self.dialect.client
        out: list[dict[str, Any]] = []
        for i in indices:
            values = self._values(i, now)
            if values is not None:
                patch = self._patches.get(i)
                row = full.as_dict(values) if patch is None else self._patched(values, patch, full)
                out.append(row)
        return out

    def _patched(self, values: RowValues, patch: dict[str, Any], shape: RowShape) -> dict[str, Any]:
        """A row with a patch applied; a ``fields=`` shape keeps only its fields."""
        row = self.dialect.client.as_dict(values)
        row.update(patch)
        if shape is self.dialect.client:
            return row
        return {k: row[k] for k in shape.fields if k in row}

    # -- test controls ----------------------------------------------------------------------
    def _changed(self) -> None:
        self.generation += 1
        self._excluded.clear()

    def kick(self, clientid: str) -> bool:
        """Kick a client (as DELETE does): it disappears. False when it was not listed."""
        index = self.population.index_of(clientid)
        if index is None or self.population.node_of(index) in self._down:
            return False
        if self._timeline(index, self.profile(index), self.now_ms()) is None:
            return False
        self._notify("disconnected", index, "kicked")
        self._gone.add(index)
        self._touched.add(index)
        self._changed()
        return True

    def reconnect(self, clientid: str) -> None:
        """(Re)connect a client now: new connected_at/created_at, counters from 0."""
        index = self._index(clientid)
        # A new connection with the same client id takes the old one over; 4.4 publishes no
        # disconnect for it (as recorded from the real 4.4.19).
        if self.listeners and self.features.api == "v5" and self.connected(index):
            self._notify("disconnected", index,
                         "discarded" if self.profile(index).clean_start else "takenover")
        self._gone.discard(index)
        self._disconnected.pop(index, None)
        self._reconnected[index] = self.now_ms()
        self._touched.add(index)
        self._changed()
        self._notify("connected", index, None)

    def disconnect(self, clientid: str) -> None:
        """Take a client offline: a persistent session stays listed (connected=false), a clean
        one disappears. No-op for clients already offline or gone."""
        index = self._index(clientid)
        p = self.profile(index)
        tl = self._timeline(index, p, self.now_ms())
        if tl is None or not tl[0]:
            return
        self._notify("disconnected", index, "normal")
        if p.expiry > 0:
            self._disconnected[index] = self.now_ms()
        else:
            self._gone.add(index)
        self._touched.add(index)
        self._changed()

    def _notify(self, event: str, index: int, reason: str | None) -> None:
        for listener in self.listeners:
            listener(event, index, reason)

    def patch(self, clientid: str, **wire_fields: Any) -> None:
        """Override wire fields of a client from now on, e.g. ``patch(cid, mqueue_len=990)``."""
        index = self._index(clientid)
        if self._refresh_ms:
            now = self.now_ms()
            if self._patched_at.get(index, 0) <= self.listed_as_of(index, now):
                # the listing caught up with the previous patch: that is what it shows now
                self._listed_patches[index] = dict(self._patches.get(index, {}))
            self._patched_at[index] = now
        self._patches.setdefault(index, {}).update(wire_fields)
        self._changed()

    def unpatch(self, clientid: str) -> None:
        """Drop the overrides of a client."""
        if self._patches.pop(self._index(clientid), None) is not None:
            self._changed()
