"""The simulated client population: who exists, on which node, derived from (seed, index).

Nothing per client is stored except one small array of member indices per node (4 bytes a
client), so a million clients cost a few megabytes. Everything else about a client is a pure
function of its index and the seed.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator

from emqx_simulator.settings import CLIENT_GROUPS, SimSettings

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15

#: Shares of the username groups (sensor, gateway, app) out of 256.
_GROUP_EDGES = (128, 208)

# Status flags of the base population (before overrides).
ONLINE = 0
OFFLINE = 1  # a disconnected persistent session, listed with connected=false
CHURN = 2  # reconnects periodically


def mix64(x: int) -> int:
    """SplitMix64 finalizer: a cheap, well-spread 64-bit hash of ``x``."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def node_name(i: int) -> str:
    """Name of the i-th node: ``emqx@10.0.0.1``, ``emqx@10.0.0.2``, ..."""
    return f"emqx@10.0.{i // 250}.{i % 250 + 1}"


class Population:
    """Client ids, node membership and base status of every simulated client."""

    def __init__(self, settings: SimSettings) -> None:
        self.size = settings.clients
        self.n_nodes = settings.nodes
        self.prefix = settings.client_prefix
        self.class_prefixes = settings.class_prefixes
        self._base = mix64(settings.seed * 0xD1B54A32D192ED03 + 0x5851F42D4C957F2D)
        self._offline_edge = round(settings.offline_sessions * 65536)
        self._churn_edge = self._offline_edge + round(settings.churn * 65536)
        #: Per node: client indices sorted ascending by client id.
        self.members: list[array[int]] = [array("I") for _ in range(self.n_nodes)]
        #: Per node: positions in ``members`` of clients that are offline sessions at the start.
        self.offline_positions: list[array[int]] = [array("I") for _ in range(self.n_nodes)]
        #: Per node: how many clients start online (connected).
        self.online_counts: list[int] = [0] * self.n_nodes
        self._build()

    def _build(self) -> None:
        # One pass over all indices, the only O(N) work: ~0.4 s for a million clients.
        members = self.members
        n, base, edge = self.n_nodes, self._base, self._offline_edge
        appends = [m.append for m in members]
        for i in range(self.size):
            h = mix64(base + i * _GOLDEN)
            appends[h % n](i)
        if self.class_prefixes or self.size > 10**7:
            # Only then does client-id order differ from index order.
            for k, m in enumerate(members):
                members[k] = array("I", sorted(m, key=self.clientid))
        for k, m in enumerate(members):
            positions = self.offline_positions[k]
            for pos, i in enumerate(m):
                if (mix64(base + i * _GOLDEN) >> 16) & 0xFFFF < edge:
                    positions.append(pos)
            self.online_counts[k] = len(m) - len(positions)

    # -- per-client facts ---------------------------------------------------------------------
    def hash(self, index: int) -> int:
        """The 64-bit hash of a client (node, status, group and username bits)."""
        return mix64(self._base + index * _GOLDEN)

    def node_of(self, index: int) -> int:
        """Index of the node that holds the client."""
        return self.hash(index) % self.n_nodes

    def status(self, index: int) -> int:
        """Base status: ONLINE, OFFLINE or CHURN."""
        return self.status_of_hash(self.hash(index))

    def status_of_hash(self, h: int) -> int:
        """Base status (ONLINE, OFFLINE or CHURN) from a client's hash."""
        u = (h >> 16) & 0xFFFF
        if u < self._offline_edge:
            return OFFLINE
        return CHURN if u < self._churn_edge else ONLINE

    @staticmethod
    def group_of_hash(h: int) -> str:
        """Username group (sensor, gateway or app) from a client's hash."""
        g = (h >> 32) & 0xFF
        return CLIENT_GROUPS[0 if g < _GROUP_EDGES[0] else 1 if g < _GROUP_EDGES[1] else 2]

    @staticmethod
    def username_of_hash(h: int) -> str | None:
        """Username (e.g. ``gateway-3``) from a client's hash; ~3 % connect without one."""
        if (h >> 43) & 0x1F == 0:
            return None
        return f"{Population.group_of_hash(h)}-{(h >> 40) & 0x7}"

    def clientid_of_hash(self, index: int, h: int) -> str:
        """Client id of an index whose hash is known."""
        if self.class_prefixes:
            return f"{self.group_of_hash(h)}-{index:07d}"
        return f"{self.prefix}-{index:07d}"

    def group(self, index: int) -> str:
        """Username group of the client: sensor, gateway or app."""
        return self.group_of_hash(self.hash(index))

    def username(self, index: int) -> str | None:
        """Username, e.g. ``gateway-3``; about 3 % of clients connect without one."""
        return self.username_of_hash(self.hash(index))

    def clientid(self, index: int) -> str:
        """Client id of an index: ``client-0000042`` (``gateway-0000042`` with class prefixes)."""
        if self.class_prefixes:
            return f"{self.group(index)}-{index:07d}"
        return f"{self.prefix}-{index:07d}"

    def index_of(self, clientid: str) -> int | None:
        """Index of a client id, or None when no simulated client has that id."""
        head, sep, digits = clientid.rpartition("-")
        if not sep or not digits.isascii() or not digits.isdigit():
            return None
        index = int(digits)
        if index >= self.size or f"{index:07d}" != digits:
            return None
        expected = self.group(index) if self.class_prefixes else self.prefix
        return index if head == expected else None

    def position(self, index: int) -> tuple[int, int]:
        """(node, position in that node's ``members``) of a client."""
        node = self.node_of(index)
        members = self.members[node]
        if self.class_prefixes or self.size > 10**7:
            pos = bisect_left(members, self.clientid(index), key=self.clientid)
        else:
            pos = bisect_left(members, index)
        return node, pos

    def iter_indices(self) -> Iterator[int]:
        """All client indices, node by node."""
        for members in self.members:
            yield from members
