"""What EMQX 3.x and 4.x share: the `code` envelope, `_page`/`_limit`, array lookups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from exporter.api import ApiClient, Request, Response
from exporter.dialects.base import (
    BatchLookup,
    ListingKind,
    NodeInfo,
    Page,
    RowDecoder,
    WalkExtras,
    decode,
)
from exporter.dialects.nodes import parse_enveloped_nodes
from exporter.dialects.paged import (
    check_envelope,
    decode_listing,
    next_page,
    page_decoders,
    paged_result,
)
from exporter.errors import ApiError
from exporter.records import ClientRecord, Generation, record_type

#: No cap on `_limit` in v3/v4; 10000 is their own default (`max_row_limit`).
DEFAULT_PAGE_SIZE = 10_000


class LegacyDialect:
    """Paths differ per generation; envelope, paging and lookups do not."""

    name: str
    generation: Generation
    per_node = True
    listing_kind: ListingKind = "page"
    holds_rows = False
    #: Path of the per-node listing after /api/vN/nodes/{node}/ (v3 ends it with a slash).
    listing: tuple[str, ...]
    lookup_path: tuple[str, ...]
    endpoint: str
    connected_default: bool | None = None

    def __init__(self, version: str | None = None, page_size: int | None = None,
                 attrs: frozenset[str] | None = None) -> None:
        self.version = version
        self.page_size = page_size or DEFAULT_PAGE_SIZE
        self.filters: tuple[tuple[str, str], ...] = ()
        full = record_type(self.generation, connected_default=self.connected_default)
        listed = record_type(self.generation, connected_default=self.connected_default,
                             only=attrs) if attrs else full
        self._pages = page_decoders(listed)
        self._rows = RowDecoder(listed, self.generation)
        self._lookup: msgspec.json.Decoder[Any] = msgspec.json.Decoder(msgspec.defstruct(
            f"Lookup{self.generation}",
            [("code", int | str | None, None), ("message", str | None, None),
             ("data", list[full], msgspec.field(default_factory=list))]))  # type: ignore[valid-type]

    @property
    def batch_lookup(self) -> BatchLookup | None:
        return None  # no repeated `clientid=` before v5: one lookup per client

    def fields_rejected(self, request: Request, error: ApiError) -> Request | None:
        return None  # v3/v4 listings take no `fields=`

    async def after_walk(self, client: ApiClient, node: str | None,
                         records: list[ClientRecord], max_pages: int) -> WalkExtras:
        return WalkExtras()

    @property
    def _api(self) -> tuple[str, str]:
        return ("api", self.generation)

    def nodes_request(self) -> Request:
        return Request("GET", (*self._api, "nodes"), endpoint="nodes")

    def parse_nodes(self, response: Response) -> list[NodeInfo]:
        return parse_enveloped_nodes(response,
                                     connections_are_sessions=self.generation != "v3")

    def list_request(self, node: str | None) -> Request:
        where = (*self._api, "nodes", node) if node else self._api
        return Request("GET", (*where, *self.listing),
                       (("_page", "1"), ("_limit", str(self.page_size)), *self.filters),
                       endpoint=self.endpoint)

    def parse_list(self, response: Response, request: Request) -> Page:
        records, meta, code, message, bad_rows, bad_values = decode_listing(
            response, self._pages, self._rows)
        check_envelope(response, code, message)
        normalize_usernames(records)
        nxt = next_page(request, meta, len(records) + bad_rows, "_page", self.page_size)
        return paged_result(records, meta, nxt, bad_rows, bad_values)

    def guess_next(self, response: Response, request: Request) -> Request | None:
        return None  # decoded with the interpreter lock held: nothing to overlap

    def lookup_request(self, clientid: str) -> Request:
        # One path segment, percent-encoded once by the request funnel: minirest hands the
        # handler the raw segment and the handler decodes it once (REFERENCE.md §12.3; a real
        # 4.4.19 finds `factory%2Fline1%2Fdev7` and answers no client for the id encoded twice).
        return Request("GET", (*self._api, *self.lookup_path, clientid),
                       endpoint=self.lookup_path[0].rstrip("s"))

    def parse_lookup(self, response: Response) -> ClientRecord | None:
        answer = decode(response, self._lookup)
        if answer.code == 112:  # not_found (before 4.1 a missing client was an error)
            return None
        check_envelope(response, answer.code, answer.message)
        record: ClientRecord | None = answer.data[0] if answer.data else None
        if record is not None:
            normalize_usernames([record])
        return record


def normalize_usernames(records: Sequence[ClientRecord]) -> None:
    """v3/v4 write a client without a username as `"undefined"` (the Erlang atom): make it
    None, so allow/deny, class rules and labels see "no username" (REFERENCE.md §12.10)."""
    for record in records:
        if record.username == "undefined":
            record.username = None
