"""One cluster's poll: discover nodes, walk them concurrently, hand the clients to the pipeline."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from exporter.api import ApiClient, Auth, BasicAuth, BearerLogin, RetryPolicy
from exporter.config import ClusterSettings
from exporter.dialects import Detected, Dialect, NodeInfo, detect, make_dialect, parse_version
from exporter.errors import ApiError, ExporterError
from exporter.lookup import look_up
from exporter.pipeline import Pipeline, PipelineResult, PollRun
from exporter.records import ClientRecord
from exporter.render import Rendered
from exporter.selfmetrics import ClusterStats
from exporter.walker import NodeWalk, walk

T = TypeVar("T")

log = structlog.get_logger(__name__)


def build_auth(settings: ClusterSettings) -> Auth | None:
    """API key (Basic) when given, else a user: v5 logs in for a bearer token, v3/v4 use Basic."""
    if settings.api_key and settings.api_secret is not None:
        kind = "API key" if settings.api in ("auto", "v5") else "application id and secret"
        return BasicAuth(settings.api_key, settings.api_secret, kind)
    if settings.username and settings.password is not None:
        if settings.api in ("v3", "v4"):
            return BasicAuth(settings.username, settings.password, "dashboard user")
        return BearerLogin(settings.username, settings.password)
    return None


def in_shard(node: str, shard: tuple[int, int]) -> bool:
    """Stable assignment of nodes to replicas: crc32 of the name, modulo the shard count."""
    index, count = shard
    return count == 1 or zlib.crc32(node.encode()) % count == index


@dataclass(slots=True)
class NodeOutcome:
    node: str
    walk: NodeWalk | None = None
    error: ExporterError | None = None
    seconds: float = 0.0
    clients: int = 0


@dataclass(frozen=True, slots=True)
class ErrorNote:
    """The last failure of a node (or of the whole poll), for the status page."""

    reason: str
    message: str
    at: float


@dataclass(slots=True)
class PollReport:
    """What one poll did; `check` prints it, the service publishes its rendering."""

    started: float
    duration: float = 0.0
    detected: Detected | None = None
    dialect: str = ""
    nodes: list[NodeInfo] = field(default_factory=list)
    outcomes: list[NodeOutcome] = field(default_factory=list)
    clients: int = 0
    duplicates: int = 0
    result: PipelineResult | None = None
    error: ExporterError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and any(o.error is None for o in self.outcomes)


class ClusterPoller:
    """Polls one cluster on its interval; keeps the last rendering of its families."""

    def __init__(self, settings: ClusterSettings, pipeline: Pipeline, stats: ClusterStats,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.stats = stats
        self.clock = clock
        self.client = ApiClient(
            settings.url, build_auth(settings), timeout=settings.timeout,
            retry=RetryPolicy(retries=settings.retries), tls=settings.tls,
            connections=settings.node_concurrency + 2, observer=stats.observe_request)
        self.dialect: Dialect | None = None
        self.version: str | None = None
        self.rendered: Rendered = {}
        self._last_errors: dict[str, str] = {}
        #: The last poll's report and each node's last failure ("" for the whole poll).
        self.last_report: PollReport | None = None
        self.last_failures: dict[str, ErrorNote] = {}
        # One worker thread per cluster runs the pipeline: pages are processed in arrival
        # order while the event loop downloads the next ones, and scrapes stay responsive.
        self._worker = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"pipeline-{settings.name or 0}")

    @property
    def label(self) -> str:
        return self.settings.name or self.settings.url

    async def close(self) -> None:
        await self.client.close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def _on_worker(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    async def _discover(self, report: PollReport) -> list[NodeInfo]:
        if self.dialect is not None:
            try:
                nodes = self.dialect.parse_nodes(await self.client.send(
                    self.dialect.nodes_request()))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                self.dialect = None  # the API moved (an upgrade?): detect again
            else:
                self._adopt(nodes)
                return nodes
        detected = await detect(self.client, self.settings.api)  # type: ignore[arg-type]
        report.detected = detected
        self.dialect = None
        self._adopt(detected.nodes, detected.generation)
        return detected.nodes

    def _adopt(self, nodes: list[NodeInfo], generation: str | None = None) -> None:
        """(Re)build the dialect when the generation or the lowest node version changed."""
        versions = [n.version for n in nodes if n.running and n.version]
        version = min(versions, key=parse_version) if versions else self.version
        if self.dialect is not None and version == self.version:
            return
        gen = generation or (self.dialect.generation if self.dialect else "v5")
        auth = self.client.auth
        if isinstance(auth, BasicAuth) and self.settings.api_key:
            # An API key on v5 is an application id and secret on v3/v4: name it as EMQX does.
            auth.kind = "API key" if gen == "v5" else "application id and secret"
        self.dialect = make_dialect(gen, version, listing=self.settings.listing,  # type: ignore[arg-type]
                                    page_size=self.settings.page_size,
                                    attrs=self.pipeline.needed_fields(),
                                    filters=self.settings.filters)
        if version != self.version:
            log.info("emqx_detected", cluster=self.label, version=version,
                     dialect=self.dialect.name, nodes=len(nodes))
        self.version = version

    async def poll_once(self) -> PollReport:
        """One complete poll; never raises an ExporterError (it lands in the report)."""
        report = PollReport(started=self.clock())
        began = time.perf_counter()
        try:
            nodes = await self._discover(report)
            assert self.dialect is not None
            report.nodes = nodes
            report.dialect = self.dialect.name
            run = await self._on_worker(self.pipeline.start, report.started)
            if self.pipeline.selection.watch_only:
                await self._look_up(self.dialect, nodes, report, run)
            else:
                await self._walk_all(self.dialect, nodes, report, run)
            if not report.ok:
                # Every node failed and was counted already; the poll fails with the first cause.
                failed = [o.error for o in report.outcomes if o.error is not None]
                report.error = failed[0] if failed else ExporterError("no node to walk")
                self._note_error("cluster", report.error, count=False)
                await self._on_worker(run.finish, [])
                return self._finish(report, began)
            walked = sorted(o.node for o in report.outcomes if o.error is None and o.node)
            result = await self._on_worker(run.finish, walked)
            report.result = result
            report.clients = result.clients
            report.duplicates = result.duplicates
            for outcome in report.outcomes:
                outcome.clients = result.listed.get(outcome.node, 0)
        except ExporterError as exc:
            report.error = exc
            self._note_error("cluster", exc)
        return self._finish(report, began)

    def _finish(self, report: PollReport, began: float) -> PollReport:
        report.duration = time.perf_counter() - began
        self._record(report)
        return report

    async def _walk_all(self, dialect: Dialect, nodes: list[NodeInfo], report: PollReport,
                        run: PollRun) -> None:
        mine = [n for n in nodes if in_shard(n.name, self.settings.shard)]
        running = [n.name for n in mine if n.running]
        for n in mine:
            if not n.running:
                report.outcomes.append(NodeOutcome(n.name, error=ExporterError("node stopped")))
        if not dialect.per_node:
            # Cursor listing without node=: one walk covers the cluster; records name their node.
            outcome = await self._walk_one(dialect, None, run, running)
            report.outcomes.extend(NodeOutcome(name, outcome.walk, outcome.error, outcome.seconds)
                                   for name in running)
            return
        limit = asyncio.Semaphore(self.settings.node_concurrency)

        async def bounded(name: str) -> NodeOutcome:
            async with limit:
                return await self._walk_one(dialect, name, run, [name])

        report.outcomes.extend(await asyncio.gather(*(bounded(n) for n in running)))

    async def _look_up(self, dialect: Dialect, nodes: list[NodeInfo], report: PollReport,
                       run: PollRun) -> None:
        """Watch-only: look the watched clients up; nodes are up when /nodes says running."""
        began = time.perf_counter()
        run.lookup = True
        run.node_totals = {n.name: (n.live_connections or 0, n.connections or 0)
                           for n in nodes if n.running and in_shard(n.name, self.settings.shard)}

        async def deliver(records: list[ClientRecord]) -> None:
            await self._on_worker(run.add_page, None, records)

        result = await look_up(self.client, dialect, sorted(self.pipeline.selection.watch),
                               deliver, self.pipeline.needed_fields())
        run.unknown = result.unknown
        for error in result.errors:
            self._note_error("lookup", error)
        seconds = time.perf_counter() - began
        for n in nodes:
            if in_shard(n.name, self.settings.shard):
                report.outcomes.append(NodeOutcome(
                    n.name, NodeWalk(n.name, pages=result.requests, rows=result.found),
                    None if n.running else ExporterError("node stopped"), seconds))

    async def _walk_one(self, dialect: Dialect, node: str | None, run: PollRun,
                        covers: list[str]) -> NodeOutcome:
        began = time.perf_counter()
        name = node or "cluster"
        pending: asyncio.Future[None] | None = None

        async def deliver(records: list[ClientRecord]) -> None:
            # At most one page per walk waits for the worker: bounded memory, overlapped work.
            nonlocal pending
            if pending is not None:
                await pending
            pending = asyncio.get_running_loop().run_in_executor(
                self._worker, run.add_page, node, records)

        try:
            result = await walk(self.client, dialect, node, max_pages=self.settings.max_pages,
                                deliver=deliver)
        except ExporterError as exc:
            if pending is not None:
                await pending
            await self._on_worker(run.fail, covers)
            self._note_error(name, exc)
            return NodeOutcome(name, error=exc, seconds=time.perf_counter() - began)
        if pending is not None:
            await pending
        if self._last_errors.pop(name, None) is not None:
            log.info("node_walk_recovered", cluster=self.label, node=name)
        for soft in result.soft_errors:
            self._note_error(f"{name}/sessions", soft)
        for note in set(result.notes):
            log.info("listing_quirk", cluster=self.label, node=name, quirk=note)
        if result.bad_rows or result.bad_values:
            self.stats.count_error("bad_row", result.bad_rows)
            self.stats.count_error("bad_value", result.bad_values)
            log.warning("bad_client_rows", cluster=self.label, node=name,
                        rows_skipped=result.bad_rows, values_skipped=result.bad_values)
        return NodeOutcome(name, result, seconds=time.perf_counter() - began)

    def _note_error(self, where: str, exc: ExporterError, *, count: bool = True) -> None:
        """Count every failure; log it once, not again while the same error repeats."""
        if count:
            self.stats.count_error(exc.reason)
        text = str(exc)
        if self._last_errors.get(where) == text:
            return
        self._last_errors[where] = text
        log.warning("poll_failed" if where == "cluster" else "node_walk_failed",
                    cluster=self.label, node=where, reason=exc.reason, error=text)

    def _record(self, report: PollReport) -> None:
        self._remember(report)
        s = self.stats
        s.polled = True
        s.poll_duration = report.duration
        s.up = report.ok
        s.node_up = {o.node: o.error is None for o in report.outcomes if o.node}
        s.clients_listed = {o.node: o.clients for o in report.outcomes
                            if o.error is None and o.node}
        s.duplicates += report.duplicates
        if self.dialect is not None:
            s.api = self.dialect.name
        s.emqx_version = self.version or ""
        if report.ok and report.result is not None:
            s.last_success = self.clock()
            if self._last_errors.pop("cluster", None) is not None:
                log.info("poll_recovered", cluster=self.label)
            self.rendered = report.result.rendered
            s.series = {"per_client": report.result.per_client_series,
                        "aggregate": report.result.aggregate_series}
            s.series_dropped = report.result.series_dropped
        elif report.error is not None:
            self.rendered = {}
            s.series = {"per_client": 0, "aggregate": 0}

    def _remember(self, report: PollReport) -> None:
        self.last_report = report
        failures = [(o.node, o.error) for o in report.outcomes if o.error is not None]
        if report.error is not None:
            failures.append(("", report.error))
        for node, error in failures:
            self.last_failures[node] = ErrorNote(error.reason, str(error), report.started)
