"""EMQX 5.x/6.x: `/api/v5/clients` (page/limit, `fields=`) and `/api/v5/clients_v2` (cursor)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import structlog

from exporter.api import ApiClient, Request, Response
from exporter.columnar import ArrowDecoder, ArrowRows
from exporter.dialects.base import (
    BatchLookup,
    ListingKind,
    NodeInfo,
    Page,
    RowDecoder,
    WalkExtras,
    decode,
    parse_version,
)
from exporter.dialects.nodes import parse_bare_nodes
from exporter.dialects.paged import (
    Meta,
    decode_listing,
    next_page,
    page_decoders,
    paged_result,
    param,
    peek_meta,
    with_param,
    without_param,
)
from exporter.errors import ApiError
from exporter.records import (
    ALL_FIELDS,
    ClientRecord,
    Generation,
    durable_queue,
    live_sessions,
    record_type,
    v5_fields_param,
    v5_unread,
)

log = structlog.get_logger(__name__)

_RECORD = record_type("v5")


def max_page_size(version: tuple[int, int, int]) -> int:
    """Largest `limit`: 1000 before 5.5.0, 10000 from 5.5.0."""
    return 10_000 if version >= (5, 5, 0) else 1_000


def cursor_is_reliable(version: tuple[int, int, int]) -> bool:
    """`/clients_v2` exists from 5.7.0 but timed out on large clusters until the fix in
    5.8.9, e5.9.2, e5.10.2 and 6.0.1 (REFERENCE.md §12.7)."""
    return ((5, 8, 9) <= version < (5, 9, 0)
            or (5, 9, 2) <= version < (5, 10, 0)
            or (5, 10, 2) <= version < (6, 0, 0)
            or version >= (6, 0, 1))


def cursor_has_node_filter(version: tuple[int, int, int]) -> bool:
    """`node=` on `/clients_v2` arrived in 6.1.2 and 6.2.1 (not in 6.0.3, e5.10.4 or 6.2.0:
    REFERENCE.md §1.4, §12.7); elsewhere it is ignored and a per-node walk would list the
    whole cluster once per node."""
    return (6, 1, 2) <= version < (6, 2, 0) or version >= (6, 2, 1)


def expiry_in_milliseconds(version: tuple[int, int, int]) -> bool:
    """5.0.0-5.0.13 report `expiry_interval` in ms; the `div 1000` arrived in 5.0.14
    (`emqx_mgmt_api_clients.erl`@v5.0.14 L874, L945-946)."""
    return (5, 0, 0) <= version < (5, 0, 14)


class V5Base:
    generation: Generation = "v5"
    holds_rows = False

    def __init__(self, version: str | None = None, page_size: int | None = None,
                 attrs: frozenset[str] | None = None) -> None:
        self.version = version
        parsed = parse_version(version)
        self.page_size = min(page_size or max_page_size(parsed), max_page_size(parsed))
        self._parsed_version = parsed
        self.filters: tuple[tuple[str, str], ...] = ()
        unread = v5_unread(parsed)
        if unread:
            attrs = (attrs or ALL_FIELDS) - unread
        listed = record_type("v5", only=attrs) if attrs else _RECORD
        self._pages = page_decoders(listed)
        self._arrow = ArrowDecoder(listed)
        self._rows = RowDecoder(listed, "v5")
        self._one = msgspec.json.Decoder(
            record_type("v5", only=ALL_FIELDS - unread) if unread else _RECORD)
        self._expiry_ms = expiry_in_milliseconds(parsed)
        #: `fields=` of page listings and clientid lookups; None asks for every field.
        self.fields = v5_fields_param(parsed, attrs) if attrs else None

    @property
    def batch_lookup(self) -> BatchLookup | None:
        """Itself from 5.6, which takes repeated `clientid=` filters."""
        return self if self._parsed_version >= (5, 6, 0) else None

    def fields_rejected(self, request: Request, error: ApiError) -> Request | None:
        """Should EMQX reject our `fields=` with 400 (a build whose enum lacks one of our names,
        REFERENCE.md §12.1), ask again without it, and leave it out from now on."""
        if error.status != 400 or param(request, "fields") is None:
            return None
        log.warning("v5_fields_rejected", error=str(error),
                    hint="asking for all fields from now on")
        self.fields = None
        return without_param(request, "fields")

    async def after_walk(self, client: ApiClient, node: str | None,
                         records: list[ClientRecord], max_pages: int) -> WalkExtras:
        return WalkExtras()

    def nodes_request(self) -> Request:
        return Request("GET", ("api", "v5", "nodes"), endpoint="nodes")

    def parse_nodes(self, response: Response) -> list[NodeInfo]:
        return parse_bare_nodes(response)

    def lookup_request(self, clientid: str) -> Request:
        # One path segment whatever the id holds: the client encodes `/` too (cowboy decodes
        # each segment once, REFERENCE.md §12.3).
        return Request("GET", ("api", "v5", "clients", clientid), endpoint="client")

    def guess_next(self, response: Response, request: Request) -> Request | None:
        meta = peek_meta(response.body)
        return None if meta is None else self._next(request, meta, listed=True)

    def _next(self, request: Request, meta: Meta, *, listed: bool) -> Request | None:
        """The page after this one; `listed`: it had rows."""
        raise NotImplementedError

    def parse_lookup(self, response: Response) -> ClientRecord | None:
        record: ClientRecord = decode(response, self._one)
        records = self._normalize([record])
        return records[0] if records else None

    def lookup_list_request(self, clientids: list[str]) -> Request:
        """`GET /clients?clientid=..&clientid=..` (5.6+): one request for many ids."""
        params: list[tuple[str, str]] = [("limit", str(self.page_size))]
        if self.fields:
            params.append(("fields", ",".join(self.fields)))
        params.append(("page", "1"))
        params.extend(("clientid", c) for c in clientids)
        return Request("GET", ("api", "v5", "clients"), tuple(params),
                       endpoint="clients_lookup")

    def parse_page(self, response: Response, request: Request, *,
                   columnar: bool = False) -> Page:
        """A page of the page-numbered `/clients` listing; `columnar`: as columns where
        Arrow can (`exporter.columnar`), for a walk's pipeline."""
        records, meta, _, _, bad_rows, bad_values = decode_listing(
            response, self._pages, self._rows, self._arrow if columnar else None)
        listed = len(records) + bad_rows  # paging counts every row, expired ones too
        records = self._normalize(records)
        nxt = next_page(request, meta, listed, "page", self.page_size)
        return paged_result(records, meta, nxt, bad_rows, bad_values,
                            left_out=listed - bad_rows - len(records))

    def _normalize(self, records: Sequence[ClientRecord]) -> Sequence[ClientRecord]:
        """The rows that are sessions, with figures in the exporter's units: expired durable
        sessions left out, durable ones without a queue figure, expiry in seconds."""
        if isinstance(records, ArrowRows):
            return records.sessions(self._expiry_ms)
        records = live_sessions(records)
        durable_queue(records)
        if self._expiry_ms:
            for record in records:
                if record.expiry_interval:
                    record.expiry_interval //= 1000
        return records


class V5PageDialect(V5Base):
    """`GET /api/v5/clients?node=N&page=P&limit=L[&fields=...]`, walked per node."""

    name = "v5"
    listing_kind: ListingKind = "page"
    per_node = True

    def list_request(self, node: str | None) -> Request:
        params: list[tuple[str, str]] = []
        if node:
            params.append(("node", node))
        params += [("page", "1"), ("limit", str(self.page_size))]
        if self.fields:
            params.append(("fields", ",".join(self.fields)))
        params.extend(self.filters)
        return Request("GET", ("api", "v5", "clients"), tuple(params), endpoint="clients")

    def parse_list(self, response: Response, request: Request) -> Page:
        return self.parse_page(response, request, columnar=True)

    def _next(self, request: Request, meta: Meta, *, listed: bool) -> Request | None:
        if meta.hasnext is None:  # the page's length decides (before 5.0.15): not known yet
            return None
        return next_page(request, meta, int(listed), "page", self.page_size)


class V5CursorDialect(V5Base):
    """`GET /api/v5/clients_v2?limit=L[&node=N][&cursor=C]`: O(limit) per page, no offset drift.

    Tolerates what released versions do: an empty last page, pages longer than `limit` (5.8.x),
    and a cursor on the last page that leads only to an empty page.
    """

    name = "v5-cursor"
    listing_kind: ListingKind = "cursor"

    def __init__(self, version: str | None = None, page_size: int | None = None,
                 attrs: frozenset[str] | None = None) -> None:
        super().__init__(version, page_size, attrs)
        self.per_node = cursor_has_node_filter(self._parsed_version)

    def list_request(self, node: str | None) -> Request:
        params: list[tuple[str, str]] = [("limit", str(self.page_size))]
        if node and self.per_node:
            params.append(("node", node))
        params.extend(self.filters)
        return Request("GET", ("api", "v5", "clients_v2"), tuple(params), endpoint="clients_v2")

    def parse_list(self, response: Response, request: Request) -> Page:
        records, meta, _, _, bad_rows, bad_values = decode_listing(
            response, self._pages, self._rows, self._arrow)
        listed = bool(records or bad_rows)  # a page of expired sessions only is not the end
        page = Page(self._normalize(records), self._next(request, meta, listed=listed),
                    bad_rows, bad_values)
        if listed and meta.hasnext is not False and meta.cursor and page.next is None:
            page.notes.append("repeated_cursor")
        return page

    def _next(self, request: Request, meta: Meta, *, listed: bool) -> Request | None:
        cursor = meta.cursor
        if not cursor or not listed or meta.hasnext is False:  # 5.7.x sends hasnext too
            return None
        if cursor == param(request, "cursor"):  # a phantom cursor would loop forever
            return None
        return with_param(request, "cursor", cursor)
