"""Walk one node's client list (or the whole cluster's, for cursor listing) page by page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from exporter.api import ApiClient, Request
from exporter.dialects import Dialect
from exporter.dialects.paged import offline_row_check
from exporter.dialects.v3 import V3Dialect
from exporter.dialects.v5 import V5Base, send_asking_for_all_if_rejected
from exporter.errors import ExporterError, WalkError
from exporter.records import ClientRecord

#: Receives each page's records as the walk goes (the poll's pipeline).
Deliver = Callable[[list[ClientRecord]], Awaitable[None]]


@dataclass(slots=True)
class NodeWalk:
    """How one walk went; its records went to `deliver` page by page."""

    node: str | None
    pages: int = 0
    rows: int = 0
    bad_rows: int = 0
    bad_values: int = 0
    notes: list[str] = field(default_factory=list)
    #: Failures that cost some figures but not the walk (v3 session listing).
    soft_errors: list[ExporterError] = field(default_factory=list)


async def walk(client: ApiClient, dialect: Dialect, node: str | None, *, max_pages: int,
               deliver: Deliver) -> NodeWalk:
    """Every page until the last; raises on any failure (the caller drops the node's pages)."""
    result = NodeWalk(node)
    request: Request | None = dialect.list_request(node)
    offline_check = offline_row_check(dialect)
    # v3 keeps queue figures in a separate session listing: hold its rows until merged.
    held: list[ClientRecord] | None = [] if isinstance(dialect, V3Dialect) else None
    while request is not None:
        if result.pages >= max_pages:
            raise WalkError(node or "cluster", "page_limit",
                            f"more than max_pages={max_pages} pages; raise max_pages or page_size")
        if isinstance(dialect, V5Base):
            response, request = await send_asking_for_all_if_rejected(client, dialect, request)
        else:
            response = await client.send(request)
        page = dialect.parse_list(response, request)
        if offline_check is not None:
            page.records = [r for r in page.records if r.connected is not False
                            or offline_check(r)]
        result.pages += 1
        result.rows += len(page.records)
        result.bad_rows += page.bad_rows
        result.bad_values += page.bad_values
        result.notes.extend(page.notes)
        if held is not None:
            held.extend(page.records)
        elif page.records:
            await deliver(page.records)
        request = page.next
    if held is not None:
        if node is not None and isinstance(dialect, V3Dialect):
            await _merge_v3_sessions(client, dialect, node, held, result, max_pages)
        await deliver(held)
    return result


async def _merge_v3_sessions(client: ApiClient, dialect: V3Dialect, node: str,
                             records: list[ClientRecord], result: NodeWalk,
                             max_pages: int) -> None:
    """Copy queue figures from the session listing; a failure there costs only those figures."""
    by_id = {r.clientid: r for r in records}
    request: Request | None = dialect.sessions_request(node)
    pages = 0
    try:
        while request is not None and pages < max_pages:
            sessions, request, bad_rows, bad_values = dialect.parse_sessions(
                await client.send(request), request)
            result.bad_rows += bad_rows
            result.bad_values += bad_values
            pages += 1
            for session in sessions:
                record = by_id.get(session.client_id)
                if record is not None:
                    session.apply(record)
    except ExporterError as exc:
        result.soft_errors.append(exc)
