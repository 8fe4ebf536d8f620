"""EMQX 3.x: `/api/v3/nodes/{node}/connections/`, plus queue figures from `/sessions/`.

v3 lists connections without a `connected` flag (a listed connection is online) and without
queue or inflight figures; those come from the per-node session listing, merged by client id.
"""

from __future__ import annotations

import msgspec

from exporter.api import Request, Response
from exporter.dialects.base import NodeInfo, Page, RowDecoder, decode, require_json
from exporter.dialects.nodes import parse_enveloped_nodes
from exporter.dialects.paged import (
    Meta,
    check_envelope,
    decode_listing,
    next_page,
    page_decoders,
    paged_result,
)
from exporter.errors import DecodeError
from exporter.records import ClientRecord, Generation, record_type

DEFAULT_PAGE_SIZE = 10_000

_RECORD = record_type("v3", connected_default=True)


class V3Session(msgspec.Struct, gc=False):
    """The queue-related part of a v3 session row."""

    client_id: str
    mqueue_len: int | None = None
    max_mqueue: int | None = None
    mqueue_dropped: int | None = None
    inflight_len: int | None = None
    max_inflight: int | None = None
    awaiting_rel_len: int | None = None
    max_awaiting_rel: int | None = None
    subscriptions_count: int | None = None
    max_subscriptions: int | None = None
    expiry_interval: int | None = None
    created_at: str | None = None

    def apply(self, record: ClientRecord) -> None:
        """Copy the session's figures onto the connection's record."""
        record.mqueue_len = self.mqueue_len
        record.mqueue_max = self.max_mqueue
        record.mqueue_dropped = self.mqueue_dropped
        record.inflight = self.inflight_len
        record.inflight_max = self.max_inflight
        record.awaiting_rel = self.awaiting_rel_len
        record.awaiting_rel_max = self.max_awaiting_rel
        record.subscriptions = self.subscriptions_count
        record.subscriptions_max = self.max_subscriptions
        record.expiry_interval = self.expiry_interval
        record.created_at = self.created_at


class _SessionPage(msgspec.Struct):
    data: list[V3Session] = []
    meta: Meta = msgspec.field(default_factory=Meta)
    code: int | str | None = None
    message: str | None = None


class _Lookup(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    data: list[_RECORD] = []  # type: ignore[valid-type]


class V3Dialect:
    """EMQX 3.0 to 3.4; `/connections/` without a node lists only the answering node."""

    name = "v3"
    generation: Generation = "v3"
    per_node = True

    def __init__(self, version: str | None = None, page_size: int | None = None,
                 attrs: frozenset[str] | None = None) -> None:
        self.version = version
        self.page_size = page_size or DEFAULT_PAGE_SIZE
        listed = record_type("v3", connected_default=True, only=attrs) if attrs else _RECORD
        self._pages = page_decoders(listed)
        self._rows = RowDecoder(listed, "v3")
        self._sessions = msgspec.json.Decoder(_SessionPage)
        self._lookup = msgspec.json.Decoder(_Lookup)

    def nodes_request(self) -> Request:
        return Request("GET", ("api", "v3", "nodes"), endpoint="nodes")

    def parse_nodes(self, response: Response) -> list[NodeInfo]:
        return parse_enveloped_nodes(response)

    def list_request(self, node: str | None) -> Request:
        path = ("api", "v3", "nodes", node, "connections", "") if node else (
            "api", "v3", "connections", "")
        return Request("GET", path, (("_page", "1"), ("_limit", str(self.page_size))),
                       endpoint="connections")

    def parse_list(self, response: Response, request: Request) -> Page:
        records, meta, code, message, bad_rows, bad_values = decode_listing(
            response, self._pages, self._rows)
        check_envelope(response, code, message)
        nxt = next_page(request, meta, len(records) + bad_rows, "_page", self.page_size)
        return paged_result(records, meta, nxt, bad_rows, bad_values)

    def sessions_request(self, node: str) -> Request:
        return Request("GET", ("api", "v3", "nodes", node, "sessions", ""),
                       (("_page", "1"), ("_limit", str(self.page_size))), endpoint="sessions")

    def parse_sessions(self, response: Response,
                       request: Request) -> tuple[list[V3Session], Request | None]:
        require_json(response)
        try:
            page = self._sessions.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodeError(response.endpoint, "bad_json", str(exc)) from exc
        check_envelope(response, page.code, page.message)
        return page.data, next_page(request, page.meta, len(page.data), "_page", self.page_size)

    def lookup_request(self, clientid: str) -> Request:
        return Request("GET", ("api", "v3", "connections", clientid), endpoint="connection")

    def parse_lookup(self, response: Response) -> ClientRecord | None:
        answer = decode(response, self._lookup)
        if answer.code == 112:
            return None
        check_envelope(response, answer.code, answer.message)
        return answer.data[0] if answer.data else None
