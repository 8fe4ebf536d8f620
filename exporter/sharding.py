"""Which EMQX nodes a replica polls (`--shard INDEX/COUNT`), and which listed rows are its own.

N replicas split one cluster by node so that every node, and every client, is exported by
exactly one of them and `sum` over replicas is the cluster's figure:

- Assignment is balanced: the node names `/nodes` lists are sorted and dealt out in turn, so
  with n nodes and N shards each shard owns ⌊n/N⌋ or ⌈n/N⌉ of them (a hash modulo N can leave
  a shard with none and another with all). Every replica reads the same `/nodes`, so they agree.
- A walk may list rows of nodes it was not asked for: EMQX 5.6+ appends offline durable sessions
  to every `/clients` answer whatever `node=` says, and a cluster-wide cursor walk lists every
  node. A row is kept only by the walk of the running node it names; a row that names no running
  node (a durable session in 5.6, one last connected to a node that left, or to a node that is
  stopped now: EMQX keeps listing those, REFERENCE.md §13.2) belongs to the "anchor", the first
  running node by name, so it is still counted exactly once.
- A replica that owns no node is healthy: it has nothing to poll, which is not a failure.
- A watched client is exported only by the replica that owns its node; the others cannot vouch
  for it and leave it out (never 0). A watched client found on no node is reported (offline,
  0) by one replica only: the owner of the anchor, which looks such clients up to be sure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import eq

from exporter.columnar import field_values, select_rows
from exporter.dialects.base import NodeInfo
from exporter.records import ClientRecord

#: `--shard` when not given: one replica owns everything.
WHOLE: tuple[int, int] = (0, 1)


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """One poll's share of a cluster for one replica."""

    #: Names of every listed node, sorted (the same list on every replica).
    all_nodes: tuple[str, ...]
    #: The nodes this replica owns, in name order.
    owned: tuple[str, ...]
    #: First running node by name: owner of rows that name no running node (None: none running).
    anchor: str | None
    sharded: bool
    #: The running nodes: a row naming another node belongs to the anchor.
    running: tuple[str, ...] = ()
    # Sets of the above, for membership tests on every listed row.
    _known: frozenset[str] = frozenset()
    _mine: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_known", frozenset(self.running))
        object.__setattr__(self, "_mine", frozenset(self.owned))

    @property
    def answers_for_unplaced(self) -> bool:
        """Whether this replica reports watched clients that no node has: the anchor's owner
        (every replica when not sharded)."""
        return not self.sharded or (self.anchor is not None and self.anchor in self._mine)

    def owns(self, node: str) -> bool:
        return node in self._mine

    def mine(self, nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
        """The listed nodes this replica owns, in the order listed."""
        return [n for n in nodes if n.name in self._mine]

    def owner_of_row(self, row_node: str | None) -> str | None:
        """The node a listed row counts for: its own node when that runs, else the anchor.
        `keep` applies this rule, written out for speed."""
        if row_node is not None and row_node in self._known:
            return row_node
        return self.anchor

    def keep(self, walk_node: str | None,
             records: Sequence[ClientRecord]) -> Sequence[ClientRecord]:
        """The rows of one page this replica exports.

        `walk_node` is the node a per-node walk asked for, None for a cluster-wide walk. A
        per-node walk keeps the rows of its node (and the anchor's walk keeps rows of no running
        node); a cluster-wide walk keeps the rows of the nodes this replica owns (and those of
        no running node if it owns the anchor).
        """
        known = self._known
        if walk_node is None and not self.sharded:
            return records
        nodes = field_values(records, "node")
        if walk_node is None:
            mine, anchor_mine = self._mine, self.anchor in self._mine
            return select_rows(records, [(n in mine and n in known)
                                         or (anchor_mine and (n is None or n not in known))
                                         for n in nodes])
        if nodes.count(walk_node) == len(nodes):
            return records  # the common case: every row names the node walked
        if walk_node == self.anchor:
            return select_rows(records, [n is None or n == walk_node or n not in known
                                         for n in nodes])
        # Rows without a node in a per-node walk of v3/v4 do not occur (their rows name it).
        return select_rows(records, list(map(eq, nodes, repeat(walk_node))))

    def covered_by(self, walk_node: str) -> list[str]:
        """The nodes whose rows a per-node walk of `walk_node` keeps: its own, and for the
        anchor every node that is not running (dropped together should that walk fail)."""
        if walk_node != self.anchor:
            return [walk_node]
        return [walk_node, *(n for n in self.all_nodes if n not in self._known)]


def assign(nodes: Sequence[NodeInfo], shard: tuple[int, int] = WHOLE) -> ShardPlan:
    """This replica's nodes: sorted names dealt out round-robin, shard INDEX takes every
    COUNT-th one starting at INDEX."""
    index, count = shard
    names = tuple(sorted({n.name for n in nodes}))
    running = sorted(n.name for n in nodes if n.running)
    return ShardPlan(all_nodes=names, owned=names[index::count],
                     anchor=running[0] if running else None, sharded=count > 1,
                     running=tuple(running))
