"""Shared decoding of page-numbered listings (`_page`/`page` + limit) for v3, v4 and v5."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import msgspec

from exporter.api import Request, Response
from exporter.columnar import ArrowDecoder
from exporter.dialects.base import (
    Dialect,
    Page,
    RowDecoder,
    decode,
    parse_version,
    require_json,
)
from exporter.errors import ApiError, DecodeError
from exporter.records import ClientRecord


class Meta(msgspec.Struct):
    """The `meta` object of any generation; every key is optional."""

    page: int | None = None
    limit: int | None = None
    count: int | None = None
    hasnext: bool | None = None
    cursor: str | None = None


class GenericPage(msgspec.Struct):
    """A listing decoded without types, for the slow path over rows with bad values."""

    data: list[Any] = []
    meta: Meta = msgspec.field(default_factory=Meta)
    code: int | str | None = None
    message: str | None = None


def page_decoders(record_cls: type[ClientRecord]) -> msgspec.json.Decoder[Any]:
    """A decoder of a whole listing into typed records."""
    typed = msgspec.defstruct(
        f"Page{record_cls.__name__}",
        [
            ("data", list[record_cls], msgspec.field(default_factory=list)),  # type: ignore[valid-type]
            ("meta", Meta, msgspec.field(default_factory=Meta)),
            ("code", int | str | None, None),
            ("message", str | None, None),
        ],
    )
    return msgspec.json.Decoder(typed)


_GENERIC = msgspec.json.Decoder(GenericPage)
_META = msgspec.json.Decoder(Meta)
_META_KEY = b'"meta":'


def peek_meta(body: bytes) -> Meta | None:
    """A listing's `meta`, read from the end of its body without decoding the rows; None
    unless it is the document's last key (EMQX writes it after `data`).

    The last `"meta":` whose object is followed by one `}` alone, the end of the document,
    is the top-level key: one nested in a row would be followed by the row's, the list's and
    the document's ends. Within a JSON string every quote is escaped, so no value is taken."""
    at = body.rfind(_META_KEY)
    if at < 1 or body[at - 1] not in b",{":
        return None
    tail = body[at + len(_META_KEY):].rstrip()
    if not tail.endswith(b"}"):
        return None
    try:
        return _META.decode(tail[:-1])
    except msgspec.DecodeError:  # a wrong type too (ValidationError is a DecodeError)
        return None


def decode_listing(
    response: Response, decoder: msgspec.json.Decoder[Any], rows: RowDecoder,
    arrow: ArrowDecoder | None = None,
) -> tuple[Sequence[ClientRecord], Meta, int | str | None, str | None, int, int]:
    """Decode a listing: (records, meta, code, message, bad rows, bad values).

    With `arrow`, into columns where Arrow takes the page as the typed decoder would
    (`exporter.columnar`); the records are then an `ArrowRows`."""
    require_json(response)
    if arrow is not None:
        columns = arrow.decode(response.body)
        if columns is not None:
            found, meta = columns
            return found, Meta(**meta), None, None, 0, 0
    try:
        page = decoder.decode(response.body)
        return page.data, page.meta, page.code, page.message, 0, 0
    except msgspec.ValidationError:
        pass  # some row has a wrong-typed value: redo this page slowly, row by row
    except msgspec.DecodeError as exc:
        raise DecodeError(response.endpoint, "bad_json",
                          f"{exc} ({len(response.body)} bytes)") from exc
    generic = decode(response, _GENERIC)
    records, bad_rows, bad_values = rows.lenient(generic.data)
    return records, generic.meta, generic.code, generic.message, bad_rows, bad_values


def check_envelope(response: Response, code: int | str | None, message: str | None) -> None:
    """v3/v4 report errors as HTTP 200 with a non-zero `code`."""
    if code not in (None, 0):
        raise ApiError(response.endpoint, response.status, code, message or "")


#: Filters EMQX applies itself, by API generation (v3 has none). v4 prefixes fuzzy ones with _.
_FILTER_NAMES = {
    "v4": {"username": "username", "conn_state": "conn_state",
           "like_clientid": "_like_clientid", "like_username": "_like_username"},
    "v5": {"username": "username", "conn_state": "conn_state",
           "like_clientid": "like_clientid", "like_username": "like_username"},
}


def filter_params(generation: str, filters: tuple[tuple[str, str], ...]) -> tuple[
        tuple[str, str], ...]:
    """Query parameters for the configured server-side filters; empty where unsupported."""
    names = _FILTER_NAMES.get(generation, {})
    return tuple((names[k], v) for k, v in filters if k in names)


def offline_row_check(dialect: Dialect) -> Callable[[ClientRecord], bool] | None:
    """For v5 5.6+ walks with server-side filters, a check of offline rows against them.

    EMQX appends offline durable sessions to `/clients` answers without applying the filters
    (REFERENCE.md §12.2), so a walk for `conn_state=connected` or one username would count
    them too. They are always offline, and rows EMQX did filter match already, so only
    offline rows are checked. None when there is nothing to check.
    """
    if (not dialect.filters or dialect.generation != "v5"
            or parse_version(dialect.version) < (5, 6, 0)):
        return None
    wanted = dict(dialect.filters)

    def matches(record: ClientRecord) -> bool:
        username = record.username or ""
        return (wanted.get("username", username) == username
                and wanted.get("conn_state", "disconnected") == "disconnected"
                and wanted.get("like_clientid", "") in record.clientid
                and wanted.get("like_username", "") in username)

    return matches


def with_param(request: Request, key: str, value: str) -> Request:
    """The same request with one query parameter set (added or replaced)."""
    params = (*tuple((k, v) for k, v in request.params if k != key), (key, value))
    return replace(request, params=params)


def without_param(request: Request, key: str) -> Request:
    """The same request without a query parameter."""
    return replace(request, params=tuple((k, v) for k, v in request.params if k != key))


def param(request: Request, key: str) -> str | None:
    for k, v in request.params:
        if k == key:
            return v
    return None


def next_page(
    request: Request, meta: Meta, got: int, page_key: str, limit: int,
) -> Request | None:
    """The next page, or None when this was the last.

    Stops on an empty page as well as on `hasnext: false`: v5's hasnext can be a false positive
    at a node boundary. Versions without hasnext (v3, v4.0, v5 < 5.0.15) stop on a short page or
    when the server's count is reached.
    """
    if got == 0:
        return None
    if meta.hasnext is not None:
        if not meta.hasnext:
            return None
    else:
        current = int(param(request, page_key) or "1")
        if got < limit or (meta.count is not None and meta.count >= 0
                           and current * limit >= meta.count):
            return None
    current = int(param(request, page_key) or "1")
    return with_param(request, page_key, str(current + 1))


def paged_result(records: Sequence[ClientRecord], meta: Meta, nxt: Request | None,
                 bad_rows: int, bad_values: int, left_out: int = 0) -> Page:
    return Page(records, nxt, bad_rows, bad_values, total=meta.count, left_out=left_out)

