"""API generations: choose and detect the dialect that lists a cluster's clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from exporter.api import ApiClient
from exporter.dialects.base import Dialect, NodeInfo, Page, parse_version
from exporter.dialects.paged import filter_params
from exporter.dialects.v4 import V4Dialect
from exporter.dialects.v5 import V5CursorDialect, V5PageDialect, cursor_is_reliable
from exporter.errors import ApiError, DecodeError, ExporterError

ApiChoice = Literal["auto", "v3", "v4", "v5"]
ListingChoice = Literal["auto", "page", "cursor"]

__all__ = ["Detected", "Dialect", "NodeInfo", "Page", "detect", "make_dialect", "parse_version"]


@dataclass(frozen=True, slots=True)
class Detected:
    """What `/nodes` told us: the generation, EMQX's version and the nodes."""

    generation: Literal["v3", "v4", "v5"]
    version: str | None
    nodes: list[NodeInfo]


def make_dialect(
    generation: Literal["v3", "v4", "v5"],
    version: str | None,
    *,
    listing: ListingChoice = "auto",
    page_size: int | None = None,
    attrs: frozenset[str] | None = None,
    filters: tuple[tuple[str, str], ...] = (),
) -> Dialect:
    """The dialect for a generation and version; `listing` forces page or cursor listing on v5.

    `attrs` names the record fields in use: listings decode only those, and v5.6+ page
    listings ask EMQX for only those (`fields=`).
    """
    if generation == "v3":
        from exporter.dialects.v3 import V3Dialect

        return V3Dialect(version, page_size, attrs)  # v3 has no server-side filters
    dialect: V4Dialect | V5CursorDialect | V5PageDialect
    if generation == "v4":
        dialect = V4Dialect(version, page_size, attrs)
    elif listing == "cursor" or (listing == "auto" and cursor_is_reliable(parse_version(version))):
        dialect = V5CursorDialect(version, page_size, attrs)
    else:
        dialect = V5PageDialect(version, page_size, attrs)
    dialect.filters = filter_params(generation, filters)
    return dialect


_PROBES: tuple[Literal["v5", "v4", "v3"], ...] = ("v5", "v4", "v3")


async def detect(client: ApiClient, forced: ApiChoice = "auto") -> Detected:
    """Find the API generation from `/nodes` (newest first), or read `/nodes` of a forced one."""
    candidates = _PROBES if forced == "auto" else (forced,)
    last_error: ExporterError | None = None
    for generation in candidates:
        probe = make_dialect(generation, None)
        try:
            response = await client.send(probe.nodes_request())
            nodes = probe.parse_nodes(response)
        except (ApiError, DecodeError) as exc:
            # Another generation answers 404 (or, behind some proxies, an HTML page). A 401
            # from a route that exists is final: detection must not hide an auth problem.
            if isinstance(exc, ApiError) and exc.status not in (404, 405):
                raise
            last_error = exc
            continue
        version = next((n.version for n in nodes if n.version), None)
        return Detected(generation, version, nodes)
    assert last_error is not None
    raise last_error
