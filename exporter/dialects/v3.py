"""EMQX 3.x: `/api/v3/nodes/{node}/connections/`, plus queue figures from `/sessions/`.

v3 lists connections without a `connected` flag (a listed connection is online) and without
queue or inflight figures; those come from the per-node session listing, merged by client id.
"""

from __future__ import annotations

from typing import Any

import msgspec

from exporter.api import ApiClient, Request, Response
from exporter.dialects.base import WalkExtras, decode, parse_version, require_json
from exporter.dialects.legacy import LegacyDialect
from exporter.dialects.paged import GenericPage, Meta, check_envelope, next_page
from exporter.errors import DecodeError, ExporterError
from exporter.records import ClientRecord, Generation, Number, valid_value


class V3Session(msgspec.Struct, gc=False):
    """The queue-related part of a v3 session row."""

    client_id: str
    mqueue_len: Number | None = None
    max_mqueue: Number | None = None
    mqueue_dropped: Number | None = None
    inflight_len: Number | None = None
    max_inflight: Number | None = None
    awaiting_rel_len: Number | None = None
    max_awaiting_rel: Number | None = None
    subscriptions_count: Number | None = None
    max_subscriptions: Number | None = None
    expiry_interval: Number | None = None
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


def _session_value_ok(name: str, value: Any) -> bool:
    if name == "client_id":
        return isinstance(value, str)
    return valid_value("str" if name == "created_at" else "int", value)


def lenient_sessions(rows: list[Any]) -> tuple[list[V3Session], int, int]:
    """Session rows one by one, keeping the good values of a row with wrong-typed ones.

    Returns (sessions, rows skipped, values skipped); a row without a usable client id is
    skipped whole.
    """
    sessions: list[V3Session] = []
    bad_rows = bad_values = 0
    for row in rows:
        if not isinstance(row, dict) or not _session_value_ok("client_id", row.get("client_id")):
            bad_rows += 1
            continue
        good = {}
        for name in V3Session.__struct_fields__:
            if name in row:
                if _session_value_ok(name, row[name]):
                    good[name] = row[name]
                else:
                    bad_values += 1
        sessions.append(V3Session(**good))
    return sessions, bad_rows, bad_values


_GENERIC = msgspec.json.Decoder(GenericPage)


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
    holds_rows = True  # queue figures come from the session listing, merged after the walk

    def __init__(self, version: str | None = None, page_size: int | None = None,
                 attrs: frozenset[str] | None = None) -> None:
        super().__init__(version, page_size, attrs)
        self._sessions = msgspec.json.Decoder(_SessionPage)

    async def after_walk(self, client: ApiClient, node: str | None,
                         records: list[ClientRecord], max_pages: int) -> WalkExtras:
        """Copy queue figures from the node's session listing; a failure there costs only
        those figures."""
        extras = WalkExtras()
        if node is None:
            return extras
        by_id = {r.clientid: r for r in records}
        request: Request | None = self.sessions_request(node)
        pages = 0
        try:
            while request is not None and pages < max_pages:
                sessions, request, bad_rows, bad_values = self.parse_sessions(
                    await client.send(request), request)
                extras.bad_rows += bad_rows
                extras.bad_values += bad_values
                pages += 1
                for session in sessions:
                    record = by_id.get(session.client_id)
                    if record is not None:
                        session.apply(record)
        except ExporterError as exc:
            extras.soft_errors.append(exc)
        return extras

    def sessions_request(self, node: str) -> Request:
        return Request("GET", ("api", "v3", "nodes", node, "sessions", ""),
                       (("_page", "1"), ("_limit", str(self.page_size))), endpoint="sessions")

    def parse_sessions(self, response: Response, request: Request) -> tuple[
            list[V3Session], Request | None, int, int]:
        """A page of sessions: (sessions, next request, rows skipped, values skipped)."""
        require_json(response)
        try:
            page = self._sessions.decode(response.body)
        except msgspec.ValidationError:  # a subclass of DecodeError: first
            # A wrong-typed value in one row must not cost every row's queue figures.
            generic = decode(response, _GENERIC)  # bad_shape when the envelope itself is wrong
            check_envelope(response, generic.code, generic.message)
            sessions, bad_rows, bad_values = lenient_sessions(generic.data)
            self._drop_bad_expiry(sessions)
            return sessions, next_page(request, generic.meta, len(generic.data), "_page",
                                       self.page_size), bad_rows, bad_values
        except msgspec.DecodeError as exc:
            raise DecodeError(response.endpoint, "bad_json", str(exc)) from exc
        check_envelope(response, page.code, page.message)
        nxt = next_page(request, page.meta, len(page.data), "_page", self.page_size)
        self._drop_bad_expiry(page.data)
        return page.data, nxt, 0, 0

    def _drop_bad_expiry(self, sessions: list[V3Session]) -> None:
        """3.0-3.1 divide the expiry seconds by 1000 (fixed in 3.2.0, REFERENCE.md §12.5):
        what is left cannot be turned back, so it is not reported."""
        if (3, 0, 0) <= parse_version(self.version) < (3, 2, 0):
            for session in sessions:
                session.expiry_interval = None
