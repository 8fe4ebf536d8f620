"""EMQX 4.x: `/api/v4`, `_page`/`_limit`, a `code` envelope with errors inside HTTP 200."""

from __future__ import annotations

import msgspec

from exporter.api import Request, Response
from exporter.dialects.base import NodeInfo, Page, RowDecoder, decode
from exporter.dialects.nodes import parse_enveloped_nodes
from exporter.dialects.paged import (
    check_envelope,
    decode_listing,
    next_page,
    page_decoders,
    paged_result,
)
from exporter.records import ClientRecord, Generation, record_type

#: v4 has no cap on `_limit`; 10000 is its own default (`management.max_row_limit`).
DEFAULT_PAGE_SIZE = 10_000

_RECORD = record_type("v4")


class _Lookup(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    data: list[_RECORD] = []  # type: ignore[valid-type]


class V4Dialect:
    """EMQX 4.0 to 4.4. Always walks `/nodes/{node}/clients`: 4.0's `/clients` lists one
    node only."""

    name = "v4"
    generation: Generation = "v4"
    per_node = True

    def __init__(self, version: str | None = None, page_size: int | None = None,
                 attrs: frozenset[str] | None = None) -> None:
        self.version = version
        self.page_size = page_size or DEFAULT_PAGE_SIZE
        self.filters: tuple[tuple[str, str], ...] = ()
        listed = record_type("v4", only=attrs) if attrs else _RECORD
        self._pages = page_decoders(listed)
        self._rows = RowDecoder(listed, "v4")
        self._lookup = msgspec.json.Decoder(_Lookup)

    def nodes_request(self) -> Request:
        return Request("GET", ("api", "v4", "nodes"), endpoint="nodes")

    def parse_nodes(self, response: Response) -> list[NodeInfo]:
        return parse_enveloped_nodes(response)

    def list_request(self, node: str | None) -> Request:
        path = ("api", "v4", "nodes", node, "clients") if node else ("api", "v4", "clients")
        return Request("GET", path, (("_page", "1"), ("_limit", str(self.page_size)),
                                     *self.filters), endpoint="clients")

    def parse_list(self, response: Response, request: Request) -> Page:
        records, meta, code, message, bad_rows, bad_values = decode_listing(
            response, self._pages, self._rows)
        check_envelope(response, code, message)
        nxt = next_page(request, meta, len(records) + bad_rows, "_page", self.page_size)
        return paged_result(records, meta, nxt, bad_rows, bad_values)

    def lookup_request(self, clientid: str) -> Request:
        return Request("GET", ("api", "v4", "clients", clientid), endpoint="client")

    def parse_lookup(self, response: Response) -> ClientRecord | None:
        answer = decode(response, self._lookup)
        if answer.code == 112:  # not_found (before 4.1 a missing client was an error)
            return None
        check_envelope(response, answer.code, answer.message)
        return answer.data[0] if answer.data else None
