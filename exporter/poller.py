"""One cluster's poll: discover nodes, walk them concurrently, hand the clients to the pipeline."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from exporter.api import ApiClient, RetryPolicy
from exporter.auth import build_auth, follow_generation
from exporter.config import ClusterSettings
from exporter.dialects import Detected, Dialect, NodeInfo
from exporter.dialects.discovery import DialectOptions, Discovery
from exporter.errors import ExporterError, InternalError
from exporter.health import CLUSTER, Health
from exporter.lookup import look_up
from exporter.pipeline import PipelineResult
from exporter.records import ClientRecord, take_bad_example
from exporter.render import Rendered
from exporter.selfmetrics import ClusterStats
from exporter.sharding import ShardPlan, assign
from exporter.walker import NodeWalk, walk
from exporter.worker import PipelineHost, Run

T = TypeVar("T")

log = structlog.get_logger(__name__)

#: Pages of one walk handed to the pipeline and not yet taken in, at most: enough for the
#: download of the next page to overlap the pipeline's work, few enough to bound memory.
PAGES_AHEAD = 2


@dataclass(slots=True)
class NodeOutcome:
    node: str
    walk: NodeWalk | None = None
    error: ExporterError | None = None
    seconds: float = 0.0
    clients: int = 0
    #: A client id whose row lost a value in this walk (for the log line).
    bad_example: str | None = None


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
    #: The dialect's name and API generation ("v5-cursor", "v5"); empty until /nodes answered.
    dialect: str = ""
    generation: str = ""
    nodes: list[NodeInfo] = field(default_factory=list)
    #: This replica's share of the nodes (`--shard`); None until /nodes answered.
    shard: ShardPlan | None = None
    outcomes: list[NodeOutcome] = field(default_factory=list)
    clients: int = 0
    duplicates: int = 0
    result: PipelineResult | None = None
    error: ExporterError | None = None
    bad_rows: int = 0
    bad_values: int = 0

    @property
    def ok(self) -> bool:
        """No cluster-level error, and some node walked (or none to walk: an empty shard)."""
        if self.error is not None:
            return False
        idle = self.shard is not None and not self.shard.owned
        return idle or any(o.error is None for o in self.outcomes)


class ClusterPoller:
    """Polls one cluster on its interval; keeps the last rendering of its families."""

    def __init__(self, settings: ClusterSettings, pipeline: PipelineHost, stats: ClusterStats,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.stats = stats
        self.clock = clock
        self.client = ApiClient(
            settings.url, build_auth(settings), timeout=settings.timeout,
            retry=RetryPolicy(retries=settings.retries), tls=settings.tls,
            connections=settings.node_concurrency + 2, observer=stats.observe_request,
            max_body=settings.max_body_bytes)
        self.discovery = Discovery(
            self.client,
            DialectOptions(api=settings.api, listing=settings.listing,
                           page_size=settings.page_size, filters=settings.filters),
            fields=pipeline.needed_fields, label=self.label)
        self.rendered: Rendered = {}
        self.health = Health(self.label, settings.interval)
        #: Nodes of this replica's share seen by the last discovery: their `node_up` goes to
        #: 0, not away, when a later poll cannot even list them.
        self.known_nodes: list[str] = []
        #: The last poll's report and each node's last failure ("" for the whole poll).
        self.last_report: PollReport | None = None
        self.last_failures: dict[str, ErrorNote] = {}
        # One thread per cluster calls the pipeline (`exporter.worker`: in a worker process,
        # or in this thread): pages are processed in arrival order while the event loop
        # downloads the next ones, and scrapes stay responsive.
        self._worker = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"pipeline-{settings.name or 0}")

    @property
    def label(self) -> str:
        return self.settings.name or self.settings.url

    @property
    def dialect(self) -> Dialect | None:
        """The dialect in use; None until the first discovery."""
        return self.discovery.dialect

    @property
    def version(self) -> str | None:
        """The lowest EMQX version among the running nodes, as last seen."""
        return self.discovery.version

    async def close(self) -> None:
        await self.client.close()
        self._worker.shutdown(wait=False, cancel_futures=True)
        self.pipeline.close()

    async def _on_worker(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    async def poll_once(self) -> PollReport:
        """One complete poll; never raises: any failure, a bug of ours too, lands in the report."""
        report = PollReport(started=self.clock())
        began = time.perf_counter()
        waiting = self.health.waiting(CLUSTER, report.started)
        if waiting is not None:
            report.error = waiting  # EMQX asked us to wait, or the login is backing off
            return self._finish(report, began)
        try:
            await self._poll(report)
        except ExporterError as exc:
            report.error = exc
            self._count(exc)
            self.health.failed(CLUSTER, exc, self.clock())
        except Exception as exc:  # a bug of ours fails this poll, not the loop
            error = InternalError(_first_cause(exc))
            report.error = error
            self._count(error)
            self.health.failed(CLUSTER, error, self.clock())
        return self._finish(report, began)

    async def _poll(self, report: PollReport) -> None:
        """Discover, walk, finish; raises on a cluster-level failure."""
        discovered = await self.discovery.discover()
        dialect = discovered.dialect
        follow_generation(self.client.auth, dialect.generation)
        nodes = discovered.nodes
        report.detected = discovered.detected
        report.nodes = nodes
        report.dialect = dialect.name
        report.generation = dialect.generation
        report.shard = assign(nodes, self.settings.shard)
        mine = report.shard.mine(nodes)
        self.known_nodes = [n.name for n in mine]
        if self.pipeline.selection.watch_only:
            totals = {n.name: (n.online, n.sessions) for n in mine if n.running}
            run = await self._on_worker(self.pipeline.start_lookup, report.started, totals)
            await self._look_up(dialect, mine, report.shard, report, run)
        else:
            run = await self._on_worker(self.pipeline.start_walk, report.started)
            await self._walk_all(dialect, mine, report.shard, report, run)
        self._log_bad_rows(report)
        if not report.ok:
            # Every node failed and was counted already; the poll fails with the first cause.
            failed = [o.error for o in report.outcomes if o.error is not None]
            report.error = failed[0] if failed else ExporterError("no node to walk")
            await self._on_worker(run.finish, [])
            return
        walked = sorted(o.node for o in report.outcomes if o.error is None and o.node)
        result = await self._on_worker(run.finish, walked)
        report.result = result
        report.clients = result.clients
        report.duplicates = result.duplicates
        for outcome in report.outcomes:
            outcome.clients = result.listed.get(outcome.node, 0)
        self.health.recovered(CLUSTER, self.clock())

    def _finish(self, report: PollReport, began: float) -> PollReport:
        report.duration = time.perf_counter() - began
        self._remember(report)
        served = report.result if report.ok else None
        self.rendered = served.rendered if served is not None else {}
        self.stats.record(report, known_nodes=self.known_nodes,
                          api=self.dialect.name if self.dialect is not None else None,
                          emqx_version=self.version, now=self.clock())
        return report

    def _count(self, error: ExporterError) -> None:
        self.stats.count_error(error.reason)

    def _log_bad_rows(self, report: PollReport) -> None:
        """One line per poll at most for rows and values dropped; the counters have the rest."""
        # A cluster-wide (cursor) walk is shared by every node's outcome: count it once.
        walks = {id(o.walk): o.walk for o in report.outcomes
                 if o.walk is not None and o.error is None}
        for walked in walks.values():
            report.bad_rows += walked.bad_rows
            report.bad_values += walked.bad_values
        if report.bad_rows or report.bad_values:
            self.stats.count_error("bad_row", report.bad_rows)
            self.stats.count_error("bad_value", report.bad_values)
            example = next((o.bad_example for o in report.outcomes if o.bad_example), None)
            log.warning("bad_client_rows", cluster=self.label, rows_skipped=report.bad_rows,
                        values_dropped=report.bad_values, example_clientid=example,
                        hint="a value of the wrong type or out of range is dropped and counted "
                             "in api_errors_total{reason=\"bad_value\"}")

    async def _walk_all(self, dialect: Dialect, mine: list[NodeInfo], shard: ShardPlan,
                        report: PollReport, run: Run) -> None:
        """Walk this replica's nodes (`mine`); a stopped node is a failed outcome."""
        running = [n.name for n in mine if n.running]
        for n in mine:
            if not n.running:
                report.outcomes.append(NodeOutcome(n.name, error=ExporterError("node stopped")))
        if not running:
            return
        if not dialect.per_node:
            # Cursor listing without node=: one walk covers the cluster; records name their node
            # and the shard keeps its own nodes' rows (README "Sharding" says why not per node).
            outcome = await self._walk_one(dialect, None, run, running, shard)
            report.outcomes.extend(NodeOutcome(name, outcome.walk, outcome.error, outcome.seconds,
                                               bad_example=outcome.bad_example)
                                   for name in running)
            return
        limit = asyncio.Semaphore(self.settings.node_concurrency)

        async def bounded(name: str) -> NodeOutcome:
            async with limit:
                return await self._walk_one(dialect, name, run, [name], shard)

        # A task group, not gather: when one walk raises (a bug), the others are cancelled
        # instead of feeding a poll that has already failed.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(bounded(n)) for n in running]
        report.outcomes.extend(task.result() for task in tasks)

    async def _look_up(self, dialect: Dialect, mine: list[NodeInfo], shard: ShardPlan,
                       report: PollReport, run: Run) -> None:
        """Watch-only: look the watched clients up; nodes are up when /nodes says running."""
        began = time.perf_counter()
        if not shard.owned:
            return

        async def deliver(records: list[ClientRecord]) -> None:
            await self._on_worker(run.add_page, None, shard.keep(None, records))

        counts = [n.sessions for n in mine if n.running]
        sessions = None if None in counts else sum(c for c in counts if c is not None)
        result = await look_up(self.client, dialect, sorted(self.pipeline.selection.watch),
                               deliver, self.pipeline.selection.lookup, sessions)
        await self._on_worker(run.mark_unknown, result.unknown)
        for error in result.errors:
            self._count(error)
            self.health.failed("lookup", error, self.clock())
        if not result.errors:
            self.health.recovered("lookup", self.clock())
        seconds = time.perf_counter() - began
        report.outcomes.extend(
            NodeOutcome(n.name, NodeWalk(n.name, pages=result.requests, rows=result.found),
                        None if n.running else ExporterError("node stopped"), seconds)
            for n in mine)

    async def _walk_one(self, dialect: Dialect, node: str | None, run: Run,
                        covers: list[str], shard: ShardPlan) -> NodeOutcome:
        began = time.perf_counter()
        name = node or "cluster"
        waiting = self.health.waiting(name, self.clock())
        if waiting is not None:
            await self._on_worker(run.fail, covers)
            return NodeOutcome(name, error=waiting)
        pending: deque[asyncio.Future[None]] = deque()
        take_bad_example()  # examples from an earlier walk in this task are not this walk's

        async def deliver(records: list[ClientRecord]) -> None:
            # The walk downloads ahead while the pipeline works, a bounded number of pages.
            if len(pending) >= PAGES_AHEAD:
                await pending.popleft()
            pending.append(asyncio.get_running_loop().run_in_executor(
                self._worker, run.add_page, node, shard.keep(node, records)))

        async def drain() -> None:
            while pending:
                await pending.popleft()

        try:
            result = await walk(self.client, dialect, node, max_pages=self.settings.max_pages,
                                deliver=deliver)
        except ExporterError as exc:
            await drain()
            await self._on_worker(run.fail, covers)
            self._count(exc)
            self.health.failed(name, exc, self.clock())
            return NodeOutcome(name, error=exc, seconds=time.perf_counter() - began)
        await drain()
        self.health.recovered(name, self.clock())
        sessions = f"{name}/sessions"
        for soft in result.soft_errors:
            self._count(soft)
            self.health.failed(sessions, soft, self.clock())
        if not result.soft_errors:
            self.health.recovered(sessions, self.clock())
        for note in set(result.notes):
            log.info("listing_quirk", cluster=self.label, node=name, quirk=note)
        return NodeOutcome(name, result, seconds=time.perf_counter() - began,
                           bad_example=take_bad_example())

    def _remember(self, report: PollReport) -> None:
        self.last_report = report
        failures = [(o.node, o.error) for o in report.outcomes if o.error is not None]
        if report.error is not None:
            failures.append(("", report.error))
        for node, error in failures:
            self.last_failures[node] = ErrorNote(error.reason, str(error), report.started)


def _first_cause(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
