"""Walk one node's client list (or the whole cluster's, for cursor listing) page by page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from exporter.api import ApiClient, Request, Response
from exporter.columnar import ArrowRows
from exporter.dialects import Dialect
from exporter.dialects.base import Page, send_listing
from exporter.dialects.paged import offline_row_check
from exporter.errors import ExporterError, WalkError
from exporter.records import ClientRecord

#: Receives each page's records as the walk goes (the poll's pipeline).
Deliver = Callable[[Sequence[ClientRecord]], Awaitable[None]]
#: Runs a page's decoding off the event loop (a thread: Arrow decodes without the interpreter
#: lock, `exporter.columnar`).
Offload = Callable[[Callable[[], Page]], Awaitable[Page]]


async def _here(decode: Callable[[], Page]) -> Page:
    return decode()


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
    #: Rows that arrived, undecodable ones and those we filter ourselves included.
    received: int = 0
    #: Pages Arrow decoded into columns (`exporter.columnar`); msgspec decoded the rest.
    columnar_pages: int = 0
    #: The rows EMQX said the listing holds (the last page's `meta.count`); None when a page
    #: gave no total (cursor listing, filters, a fuzzy filter): nothing to compare with.
    reported: int | None = None

    @property
    def unlisted(self) -> int | None:
        """Rows EMQX reported that never arrived (offset drift, a truncated listing)."""
        return None if self.reported is None else max(0, self.reported - self.received)


async def walk(client: ApiClient, dialect: Dialect, node: str | None, *, max_pages: int,
               deliver: Deliver, offload: Offload = _here) -> NodeWalk:
    """Every page until the last; raises on any failure (the caller drops the node's pages)."""
    result = NodeWalk(node)
    request: Request | None = dialect.list_request(node)
    offline_check = offline_row_check(dialect)
    # A dialect that completes rows after the walk (v3's queue figures) gets them held.
    held: list[ClientRecord] = []
    ahead = _Ahead(client, dialect)
    try:
        while request is not None:
            if result.pages >= max_pages:
                raise WalkError(node or "cluster", "page_limit",
                                f"more than max_pages={max_pages} pages; "
                                "raise max_pages or page_size")
            response, request = await ahead.take(request)
            if result.pages + 1 < max_pages:
                ahead.start(dialect.guess_next(response, request))
            page = await offload(partial(dialect.parse_list, response, request))
            counted = page.total is not None and page.total >= 0 and (
                result.pages == 0 or result.reported is not None)
            result.reported = page.total if counted else None
            result.received += len(page.records) + page.bad_rows + page.left_out
            if offline_check is not None:
                page.records = [r for r in page.records if r.connected is not False
                                or offline_check(r)]
            result.pages += 1
            result.columnar_pages += isinstance(page.records, ArrowRows)
            result.rows += len(page.records)
            result.bad_rows += page.bad_rows
            result.bad_values += page.bad_values
            result.notes.extend(page.notes)
            if dialect.holds_rows:
                held.extend(page.records)
            elif page.records:
                await deliver(page.records)
            request = page.next
    finally:
        await ahead.drop()
    extras = await dialect.after_walk(client, node, held, max_pages)
    result.bad_rows += extras.bad_rows
    result.bad_values += extras.bad_values
    result.soft_errors.extend(extras.soft_errors)
    if held:
        await deliver(held)
    return result


class _Ahead:
    """The next page's download, started while this one is decoded (`Dialect.guess_next`):
    still one request of a walk at a time, and none made twice."""

    def __init__(self, client: ApiClient, dialect: Dialect) -> None:
        self.client = client
        self.dialect = dialect
        self.request: Request | None = None
        self.task: asyncio.Task[tuple[Response, Request]] | None = None

    def start(self, request: Request | None) -> None:
        if request is not None:
            self.request = request
            self.task = asyncio.create_task(send_listing(self.client, self.dialect, request))

    async def take(self, request: Request) -> tuple[Response, Request]:
        """The answer to `request`: the download started ahead if it was for this request."""
        task, self.task = self.task, None
        if task is not None and self.request == request:
            return await task
        await self.drop(task)
        return await send_listing(self.client, self.dialect, request)

    async def drop(self, task: asyncio.Task[tuple[Response, Request]] | None = None) -> None:
        """Stop a download no page takes (a wrong guess, the walk's end or failure)."""
        task = task or self.task
        self.task = None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the answer to a page not taken is no error

