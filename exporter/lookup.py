"""Watch-only polling: look the watched clients up directly instead of walking the cluster.

API work grows with the watch list, not with the cluster: EMQX 5.6+ takes repeated
`clientid=` filters, batched so no request line exceeds 4 KiB; older versions get one
`GET /clients/{id}` per watched client, a bounded number at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from exporter.api import ApiClient, Request
from exporter.dialects import Dialect
from exporter.dialects.base import BatchLookup, send_listing
from exporter.errors import ApiError, ExporterError
from exporter.records import ClientRecord

#: Longest request line (method, path, query, HTTP version) a batch may produce.
MAX_REQUEST_LINE = 4096
#: Single-client lookups in flight at once, for versions without the clientid filter.
LOOKUP_CONCURRENCY = 8
#: `lookup: auto` batches only while the cluster holds at most this many sessions. Measured on
#: the real EMQX 5.8.9 (`python -m bench.emqx_cost`, docs/performance.md "Cost to EMQX"): a
#: batched request scans the whole channel table (its CPU grows with the cluster: ~58 ms for
#: 3000 sessions, ~118 ms for 9000), a `GET /clients/{id}` does not (~1 ms each), so 100 ids
#: cost EMQX less batched at 3000 sessions and less one by one at 9000; 5000 stays below the
#: crossing.
BATCH_MAX_SESSIONS = 5000


def use_batches(mode: str, batch_lookup: BatchLookup | None, sessions: int | None) -> bool:
    """Whether to look clients up with batched `clientid=` filters: where the version has
    them and `mode` asks, or (`auto`) the cluster is known to be small enough."""
    if batch_lookup is None or mode == "single":
        return False
    if mode == "batched":
        return True
    return sessions is not None and sessions <= BATCH_MAX_SESSIONS


@dataclass(slots=True)
class LookupResult:
    found: int = 0
    #: Watched ids whose lookup failed: their state is unknown, not offline.
    unknown: set[str] = field(default_factory=set)
    errors: list[ExporterError] = field(default_factory=list)
    requests: int = 0
    #: An answer listed an offline durable session (5.6+ appends them to every page-listing
    #: answer): `/nodes` `connections` leaves those out, so it is not the sessions figure.
    offline_durable: bool = False


def batches(clientids: Sequence[str], base_line: int) -> Iterator[list[str]]:
    """Split ids so that `base_line` plus `&clientid=<id>` for each stays within the limit."""
    batch: list[str] = []
    length = base_line
    for clientid in clientids:
        extra = len("&clientid=") + len(quote(clientid, safe=""))
        if batch and length + extra > MAX_REQUEST_LINE:
            yield batch
            batch, length = [], base_line
        batch.append(clientid)
        length += extra
    if batch:
        yield batch


async def look_up(client: ApiClient, dialect: Dialect, clientids: Sequence[str],
                  deliver: Callable[[list[ClientRecord]], Awaitable[None]],
                  mode: str = "batched", sessions: int | None = None) -> LookupResult:
    """Find the watched clients; each batch or lookup that fails marks its ids unknown.
    `mode` and the cluster's `sessions` choose batches or single lookups (`use_batches`)."""
    result = LookupResult()
    ids = sorted(set(clientids))
    batch_lookup = dialect.batch_lookup
    if batch_lookup is not None and use_batches(mode, batch_lookup, sessions):
        await _filtered(client, dialect, batch_lookup, ids, deliver, result)
    else:
        await _one_by_one(client, dialect, ids, deliver, result)
    return result


async def _filtered(client: ApiClient, dialect: Dialect, batch_lookup: BatchLookup,
                    ids: list[str], deliver: Callable[[list[ClientRecord]], Awaitable[None]],
                    result: LookupResult) -> None:
    first = batch_lookup.lookup_list_request([])
    # "GET /api/v5/clients?limit=..&fields=..&page=N HTTP/1.1", with room for a long page.
    base_line = (len("GET /api/v5/clients?") + len(" HTTP/1.1") + len("&page=9999")
                 + sum(len(k) + len(quote(v, safe=",")) + 2 for k, v in first.params))
    for batch in batches(ids, base_line):
        try:
            await _one_batch(client, dialect, batch_lookup, batch, deliver, result)
        except ExporterError as exc:
            result.errors.append(exc)
            result.unknown.update(batch)


async def _one_batch(client: ApiClient, dialect: Dialect, batch_lookup: BatchLookup,
                     batch: list[str], deliver: Callable[[list[ClientRecord]], Awaitable[None]],
                     result: LookupResult) -> None:
    request: Request | None = batch_lookup.lookup_list_request(batch)
    missing = set(batch)
    while request is not None and missing:
        response, request = await send_listing(client, dialect, request)
        result.requests += 1
        page = batch_lookup.parse_page(response, request)
        if not result.offline_durable:
            result.offline_durable = any(r.durable and r.connected is False
                                         for r in page.records)
        # Offline durable sessions come with every answer, asked for or not (REFERENCE.md
        # §12.2): keep the asked ids only.
        records = [r for r in page.records if r.clientid in missing]
        missing.difference_update(r.clientid for r in records)
        result.found += len(records)
        if records:
            await deliver(records)
        request = page.next


async def _one_by_one(client: ApiClient, dialect: Dialect, ids: list[str],
                      deliver: Callable[[list[ClientRecord]], Awaitable[None]],
                      result: LookupResult) -> None:
    limit = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def one(clientid: str) -> ClientRecord | None:
        async with limit:
            result.requests += 1
            try:
                return dialect.parse_lookup(await client.send(dialect.lookup_request(clientid)))
            except ApiError as exc:
                if exc.status == 404:
                    return None  # v5: CLIENTID_NOT_FOUND
                result.errors.append(exc)
            except ExporterError as exc:
                result.errors.append(exc)
            result.unknown.add(clientid)
            return None

    found = [r for r in await asyncio.gather(*(one(c) for c in ids)) if r is not None]
    result.found += len(found)
    if found:
        await deliver(found)
