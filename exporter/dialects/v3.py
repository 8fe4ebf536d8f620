"""EMQX 3.x: `/api/v3/nodes/{node}/connections/`, plus queue figures from `/sessions/`.

v3 lists connections without a `connected` flag (a listed connection is online) and without
queue or inflight figures; those come from the per-node session listing, merged by client id.
"""

from __future__ import annotations

import msgspec

from exporter.api import Request, Response
from exporter.dialects.base import require_json
from exporter.dialects.legacy import LegacyDialect
from exporter.dialects.paged import Meta, check_envelope, next_page
from exporter.errors import DecodeError
from exporter.records import ClientRecord, Generation


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


class V3Dialect(LegacyDialect):
    """EMQX 3.0 to 3.4; `/connections/` without a node lists only the answering node."""

    name = "v3"
    generation: Generation = "v3"
    listing = ("connections", "")
    lookup_path = ("connections",)
    endpoint = "connections"
    connected_default = True  # no `connected` flag: a listed connection is online

    def __init__(self, version: str | None = None, page_size: int | None = None,
                 attrs: frozenset[str] | None = None) -> None:
        super().__init__(version, page_size, attrs)
        self._sessions = msgspec.json.Decoder(_SessionPage)

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
