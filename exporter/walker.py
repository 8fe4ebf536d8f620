"""Walk one node's client list (or the whole cluster's, for cursor listing) page by page."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from exporter.api import ApiClient, Request
from exporter.dialects import Dialect
from exporter.dialects.v3 import V3Dialect
from exporter.errors import ApiError, ExporterError, WalkError
from exporter.records import ClientRecord

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class NodeWalk:
    """The clients one walk found, de-duplicated by client id, and how the walk went."""

    node: str | None
    records: dict[str, ClientRecord] = field(default_factory=dict)
    pages: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    bad_values: int = 0
    notes: list[str] = field(default_factory=list)
    #: Failures that cost some figures but not the walk (v3 session listing).
    soft_errors: list[ExporterError] = field(default_factory=list)


def _keep(existing: ClientRecord, candidate: ClientRecord) -> ClientRecord:
    """Of two rows for one client id, the live and newest connection wins."""
    if (existing.connected is False) != (candidate.connected is False):
        return existing if existing.connected is not False else candidate
    if (candidate.connected_at or "") > (existing.connected_at or ""):
        return candidate
    return existing


async def walk(client: ApiClient, dialect: Dialect, node: str | None, *,
               max_pages: int) -> NodeWalk:
    """Every page until the last; raises on any failure, so partial walks are never used."""
    result = NodeWalk(node)
    request: Request | None = dialect.list_request(node)
    retried_without_fields = False
    while request is not None:
        if result.pages >= max_pages:
            raise WalkError(node or "cluster", "page_limit",
                            f"more than max_pages={max_pages} pages; raise max_pages or page_size")
        try:
            response = await client.send(request)
        except ApiError as exc:
            # Our `fields=` list may name a field this build's enum lacks: ask for all, once.
            if (exc.status == 400 and result.pages == 0 and not retried_without_fields
                    and getattr(dialect, "fields", None)):
                log.warning("v5_fields_rejected", node=node, error=str(exc),
                            hint="asking for all fields from now on")
                dialect.drop_fields()  # type: ignore[attr-defined]
                retried_without_fields = True
                request = dialect.list_request(node)
                continue
            raise
        page = dialect.parse_list(response, request)
        result.pages += 1
        result.bad_rows += page.bad_rows
        result.bad_values += page.bad_values
        result.notes.extend(page.notes)
        records = result.records
        for record in page.records:
            previous = records.get(record.clientid)
            if previous is None:
                records[record.clientid] = record
            else:
                result.duplicates += 1
                records[record.clientid] = _keep(previous, record)
        request = page.next
    if node is not None and isinstance(dialect, V3Dialect):
        await _merge_v3_sessions(client, dialect, node, result, max_pages)
    return result


async def _merge_v3_sessions(client: ApiClient, dialect: V3Dialect, node: str, result: NodeWalk,
                             max_pages: int) -> None:
    """v3 keeps queue figures in the session listing; merge them in when it answers.

    A failing session listing costs the queue figures, not the node's connections.
    """
    request: Request | None = dialect.sessions_request(node)
    pages = 0
    try:
        while request is not None and pages < max_pages:
            sessions, request = dialect.parse_sessions(await client.send(request), request)
            pages += 1
            for session in sessions:
                record = result.records.get(session.client_id)
                if record is not None:
                    session.apply(record)
    except ExporterError as exc:
        result.soft_errors.append(exc)


def merge_nodes(walks: list[NodeWalk]) -> tuple[list[ClientRecord], int]:
    """All clients of all walks, one per client id; returns (records, cross-node duplicates).

    A client taken over by another node mid-poll can be listed by both; exporting both would
    give Prometheus two samples for one series.
    """
    if len(walks) == 1:
        return list(walks[0].records.values()), 0
    merged: dict[str, ClientRecord] = {}
    duplicates = 0
    for w in walks:
        for clientid, record in w.records.items():
            previous = merged.get(clientid)
            if previous is None:
                merged[clientid] = record
            else:
                duplicates += 1
                merged[clientid] = _keep(previous, record)
    return list(merged.values()), duplicates
