"""What handlers share: app and request keys, the page cache, and list-response helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emqx_simulator.auth import Authenticator
from emqx_simulator.cluster import SimCluster
from emqx_simulator.faults import RowFaults, apply_edits
from emqx_simulator.responses import encode, json_bytes


class PageCache:
    """Encoded list pages of a frozen cluster, up to a byte budget.

    Walks visit pages in a cycle, where least-recently-used eviction would never hit once the
    walk outgrows the budget; so the cache keeps the first pages that fit and stops there. A
    change to the cluster (a new generation) empties it.
    """

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._size = 0
        self._generation = -1
        self._pages: dict[tuple[Any, ...], bytes] = {}

    def get(self, key: tuple[Any, ...], generation: int) -> bytes | None:
        """The cached body of ``key`` at this cluster generation, if any."""
        if generation != self._generation:
            self._pages.clear()
            self._size, self._generation = 0, generation
        return self._pages.get(key)

    def put(self, key: tuple[Any, ...], generation: int, body: bytes) -> None:
        """Remember a body while the budget lasts."""
        if generation == self._generation and self._size + len(body) <= self._budget:
            self._pages[key] = body
            self._size += len(body)

    def __len__(self) -> int:
        return len(self._pages)


CLUSTER = web.AppKey("sim_cluster", SimCluster)
AUTH = web.AppKey("sim_auth", Authenticator)
PAGES = web.AppKey("sim_pages", PageCache)
ROW_FAULTS = web.RequestKey("sim_row_faults", RowFaults)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def row_faults(request: web.Request) -> RowFaults:
    """Row-level faults firing for this request (none outside the funnel)."""
    return request.get(ROW_FAULTS) or RowFaults()


def cached_json(request: web.Request, build: Callable[[], Any]) -> web.Response:
    """A JSON response, from the page cache when the cluster is frozen and no row fault fires.

    ``build`` returns the payload; ``RowFaults.edits`` are applied to its ``data`` list.
    """
    cluster = request.app[CLUSTER]
    faults = row_faults(request)
    cacheable = cluster.settings.frozen and not faults.active
    key = (request.path, tuple(sorted(request.query.items())))
    if cacheable:
        body = request.app[PAGES].get(key, cluster.generation)
        if body is not None:
            return json_bytes(body)
    payload = build()
    if faults.edits:
        rows = payload.get("data") if isinstance(payload, dict) else None
        if isinstance(rows, list):
            apply_edits(rows, faults.edits)
    body = encode(payload)
    if cacheable:
        request.app[PAGES].put(key, cluster.generation, body)
    return json_bytes(body)


def int_param(query: Any, name: str, default: int) -> int | None:
    """An integer query parameter (the last one when repeated), None when not an integer."""
    values = query.getall(name, [])
    if not values:
        return default
    text = values[-1].strip()
    if not text.lstrip("-").isdigit() or not text.isascii():
        return None
    return int(text)
