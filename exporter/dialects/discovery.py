"""Keep one cluster's dialect matched to its nodes: detect it, and follow upgrades.

Each poll starts by listing the nodes. The dialect in use lists them while it can; a 404 means
the API moved (an upgrade to another generation) and the generation is detected again. The
dialect is rebuilt when the generation or the lowest running node's version changes, since
paging, fields and quirks follow the oldest node of a rolling upgrade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog

from exporter.api import ApiClient
from exporter.dialects import ApiChoice, Detected, ListingChoice, detect, make_dialect
from exporter.dialects.base import Dialect, NodeInfo, parse_version
from exporter.errors import ApiError
from exporter.records import Generation

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DialectOptions:
    """What a dialect is built with besides its generation and version (validated settings)."""

    #: An ApiChoice: `auto` detects the generation, `v3`..`v5` forces one.
    api: str = "auto"
    #: A ListingChoice: v5 `page` or `cursor` listing, or `auto` by version.
    listing: str = "auto"
    page_size: int | None = None
    filters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Discovered:
    """One discovery: the nodes, the dialect adopted for them, and what detection found when
    it had to run."""

    nodes: list[NodeInfo]
    dialect: Dialect
    detected: Detected | None = None


class Discovery:
    """The dialect of one cluster, kept up to date from `/nodes` on every poll."""

    def __init__(self, client: ApiClient, options: DialectOptions,
                 fields: Callable[[], frozenset[str]], label: str = "") -> None:
        self.client = client
        self.options = options
        #: The record fields in use now (the pipeline's): asked for when a dialect is built.
        self.fields = fields
        self.label = label
        self.dialect: Dialect | None = None
        #: The lowest version of the running nodes, as last seen.
        self.version: str | None = None
        self._per_node: Dialect | None = None

    async def discover(self) -> Discovered:
        """The nodes, with the dialect adopted for them; raises when `/nodes` fails."""
        if self.dialect is not None:
            try:
                nodes = self.dialect.parse_nodes(
                    await self.client.send(self.dialect.nodes_request()))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                self.dialect = None  # the API moved (an upgrade?): detect again
            else:
                return Discovered(nodes, self._adopt(nodes))
        detected = await detect(self.client, cast(ApiChoice, self.options.api))
        self.dialect = None
        return Discovered(detected.nodes, self._adopt(detected.nodes, detected.generation),
                          detected)

    def per_node_fallback(self) -> Dialect | None:
        """A page-listing dialect that walks one node at a time, for when the cluster-wide
        listing in use (clients_v2 without `node=`) fails as a whole because one node's RPC
        does; None when the dialect in use walks per node already."""
        dialect = self.dialect
        if dialect is None or dialect.per_node:
            return None
        if self._per_node is None or self._per_node.version != dialect.version:
            self._per_node = make_dialect(
                dialect.generation, dialect.version, listing="page",
                page_size=self.options.page_size, attrs=self.fields(),
                filters=self.options.filters)
        return self._per_node

    def _adopt(self, nodes: list[NodeInfo], generation: Generation | None = None) -> Dialect:
        """(Re)build the dialect when the generation or the lowest node version changed."""
        versions = [n.version for n in nodes if n.running and n.version]
        version = min(versions, key=parse_version) if versions else self.version
        if self.dialect is not None and version == self.version:
            return self.dialect
        gen = generation or (self.dialect.generation if self.dialect else "v5")
        dialect = make_dialect(gen, version, listing=cast(ListingChoice, self.options.listing),
                               page_size=self.options.page_size, attrs=self.fields(),
                               filters=self.options.filters)
        if version != self.version:
            log.info("emqx_detected", cluster=self.label, version=version,
                     dialect=dialect.name, nodes=len(nodes))
        self.dialect, self.version = dialect, version
        return dialect
