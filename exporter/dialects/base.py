"""What every API generation's dialect provides, and helpers they share."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import msgspec

from exporter.api import ApiClient, Request, Response
from exporter.errors import ApiError, DecodeError, ExporterError
from exporter.records import ClientRecord, Generation, lenient_record


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A cluster node as `/nodes` lists it, with its totals where the version reports them.

    None means the version does not report the figure (REFERENCE.md §12.4): unknown, not 0.
    """

    name: str
    running: bool
    version: str | None = None
    #: Live MQTT connections: `live_connections` (4.4.19+, 5.1+), or v3's `connections`.
    online: int | None = None
    #: Sessions, disconnected persistent ones included: `connections` in v4 and v5.
    sessions: int | None = None
    #: Why the node's state is unknown (v4 lists a node its RPC failed for as `{"node": N,
    #: "error": R}`, REFERENCE.md §13.4); None when `/nodes` gave its state.
    error: str | None = None


@dataclass(slots=True)
class Page:
    """One decoded page of a client listing."""

    records: Sequence[ClientRecord]
    next: Request | None
    bad_rows: int = 0
    bad_values: int = 0
    #: The server's own total, when it gives one (to detect truncated walks); -1 or None: unknown.
    total: int | None = None
    notes: list[str] = field(default_factory=list)
    #: Rows that arrived but are left out on purpose (5.7+ expired durable sessions): they count
    #: against `total` as received, not as rows the listing lost.
    left_out: int = 0


#: How a dialect lists clients: numbered pages, or a cursor from page to page.
ListingKind = Literal["page", "cursor"]


@dataclass(slots=True)
class WalkExtras:
    """What a dialect's after-walk step adds to the walk's tally."""

    bad_rows: int = 0
    bad_values: int = 0
    #: Failures that cost some figures but not the walk (v3 session listing).
    soft_errors: list[ExporterError] = field(default_factory=list)


class BatchLookup(Protocol):
    """Looks many clients up in one listing request (repeated `clientid=`, EMQX 5.6+)."""

    def lookup_list_request(self, clientids: list[str]) -> Request: ...

    def parse_page(self, response: Response, request: Request) -> Page: ...


class Dialect(Protocol):
    """One API generation's paths, paging and decoding, yielding normalized records.

    Callers (walker, lookups, poller, CLI) use only what is declared here.
    """

    name: str            # "v3", "v4", "v5", "v5-cursor": shown in `check` and build_info
    generation: Generation
    #: The EMQX version the dialect was built for (the lowest running node's); None: unknown.
    version: str | None
    listing_kind: ListingKind
    per_node: bool       # False: one walk covers the whole cluster (cursor without node=)
    #: Server-side filters sent with every listing (empty where the generation has none).
    filters: tuple[tuple[str, str], ...]
    #: True when a walk must hold its rows until `after_walk` completed them (v3).
    holds_rows: bool

    @property
    def batch_lookup(self) -> BatchLookup | None:
        """The batched lookup this version supports; None: one request per client."""
        ...

    def nodes_request(self) -> Request: ...

    def parse_nodes(self, response: Response) -> list[NodeInfo]: ...

    def list_request(self, node: str | None) -> Request: ...

    def parse_list(self, response: Response, request: Request) -> Page: ...

    def guess_next(self, response: Response, request: Request) -> Request | None:
        """The request that will follow this listing page, read cheaply before the page is
        decoded (so that it downloads meanwhile); None when not known that way. A guess:
        `parse_list`'s `Page.next` decides."""
        ...

    def lookup_request(self, clientid: str) -> Request: ...

    def parse_lookup(self, response: Response) -> ClientRecord | None: ...

    def fields_rejected(self, request: Request, error: ApiError) -> Request | None:
        """The request to send again when `error` rejected the fields it asked for (and ask
        for every field from now on); None when the error stands."""
        ...

    async def after_walk(self, client: ApiClient, node: str | None,
                         records: list[ClientRecord], max_pages: int) -> WalkExtras:
        """Complete a node's held records once its listing is walked (v3: queue figures)."""
        ...


async def send_listing(client: ApiClient, dialect: Dialect,
                       request: Request) -> tuple[Response, Request]:
    """Send a listing or lookup, again without the fields the dialect asked for should EMQX
    reject them; returns the answer and the request it answers."""
    try:
        return await client.send(request), request
    except ApiError as exc:
        retry = dialect.fields_rejected(request, exc)
        if retry is None:
            raise
        return await client.send(retry), retry


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str | None) -> tuple[int, int, int]:
    """`"e5.10.2"` → (5, 10, 2); unknown → (0, 0, 0)."""
    if not text:
        return (0, 0, 0)
    match = _VERSION.search(text)
    if match is None:
        return (0, 0, 0)
    return (int(match[1]), int(match[2]), int(match[3] or 0))


def require_json(response: Response) -> None:
    """Reject bodies that are certainly not EMQX JSON, such as a proxy's HTML error page."""
    kind = response.content_type
    if "html" in kind:
        raise DecodeError(response.endpoint, "html_page",
                          f"HTTP {response.status} answered with an HTML page, not JSON")


T = TypeVar("T")


def decode(response: Response, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode a JSON body with a typed decoder; map failures to DecodeError."""
    require_json(response)
    try:
        return decoder.decode(response.body)
    except msgspec.ValidationError as exc:
        raise DecodeError(response.endpoint, "bad_shape", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(response.endpoint, "bad_json",
                          f"{exc} ({len(response.body)} bytes)") from exc


class RowDecoder:
    """Decode a list of client rows fast, falling back to row-by-row leniency on bad values."""

    def __init__(self, record_cls: type[ClientRecord], generation: Generation) -> None:
        self.record_cls = record_cls
        self.generation = generation

    def lenient(self, rows: list[Any]) -> tuple[list[ClientRecord], int, int]:
        """Records from generic rows; returns (records, bad rows, bad values)."""
        records: list[ClientRecord] = []
        bad_rows = bad_values = 0
        for row in rows:
            result = lenient_record(self.record_cls, self.generation, row)
            if result.record is None:
                bad_rows += 1
            else:
                records.append(result.record)
            bad_values += len(result.bad_values) if result.record is not None else 0
        return records, bad_rows, bad_values
