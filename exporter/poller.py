"""One cluster's poll: discover nodes, walk them concurrently, hand the clients to the pipeline."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from exporter.api import ApiClient, RetryPolicy
from exporter.auth import build_auth, follow_generation
from exporter.columnar import field_values
from exporter.config import ClusterSettings
from exporter.dialects import Detected, Dialect, NodeInfo
from exporter.dialects.base import Page
from exporter.dialects.discovery import DialectOptions, Discovery
from exporter.errors import AuthError, BackingOffError, ExporterError, InternalError
from exporter.health import CLUSTER, Health
from exporter.lookup import LookupResult, look_up
from exporter.pipeline import Pipeline, PipelineResult, PollRun
from exporter.records import ClientRecord, keep_bad_example, take_bad_example
from exporter.render import Rendered
from exporter.selfmetrics import ClusterStats
from exporter.sharding import ShardPlan, assign
from exporter.walker import NodeWalk, walk

T = TypeVar("T")

log = structlog.get_logger(__name__)

#: Polls walked per node after the cluster-wide cursor walk failed, before it is tried again
#: (sooner when every node answers again).
CURSOR_RETRY_POLLS = 10
#: How long the pipeline thread may hold the interpreter lock while the event loop waits for it
#: (Python's default is 5 ms): a scrape waits at most about this per turn.
PIPELINE_SWITCH_INTERVAL_S = 0.001
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
    #: Per walked node, rows EMQX reported that never arrived; a node is absent when its
    #: listing gave nothing to compare with (see `unlisted_rows`).
    unlisted: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No cluster-level error, and some node walked (or none to walk: an empty shard)."""
        if self.error is not None:
            return False
        idle = self.shard is not None and not self.shard.owned
        return idle or any(o.error is None for o in self.outcomes)


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
        #: Set to poll now rather than at the end of the interval (`retry_now`).
        self.wakeup = asyncio.Event()
        #: The last cluster-wide cursor walk failed and per-node page walks stand in for it;
        #: polls left before the cursor is tried again.
        self._cursor_failing = False
        self._cursor_retry_in = 0
        #: Sharded walks: the watched clients among the rows this replica kept in this poll.
        self._watched_seen: set[str] | None = None
        #: Nodes whose last listing missed rows EMQX reported (logged on change).
        self._incomplete: set[str] = set()
        # One thread per cluster runs the pipeline: pages are taken in in arrival order while
        # the event loop downloads the next ones. The two share one interpreter lock: a shorter
        # switch interval than Python's 5 ms lets a scrape in sooner while the pipeline works.
        self._worker = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"pipeline-{settings.name or 0}")
        sys.setswitchinterval(min(sys.getswitchinterval(), PIPELINE_SWITCH_INTERVAL_S))
        # Another decodes the pages: Arrow does so without the interpreter lock
        # (`exporter.columnar`), beside the download of the next page and the pipeline.
        self._decoder = ThreadPoolExecutor(max_workers=1,
                                           thread_name_prefix=f"decode-{settings.name or 0}")

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

    def retry_now(self) -> None:
        """After a reload: a credential rejected earlier is tried again at once, not after
        its pause (up to 30 minutes), as it may have been fixed."""
        if self.health.retry_credentials():
            log.info("credential_retry", cluster=self.label, hint="configuration reloaded")
            self.wakeup.set()

    async def close(self) -> None:
        await self.client.close()
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._decoder.shutdown(wait=False, cancel_futures=True)

    async def _on_worker(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    async def _decode(self, decode: Callable[[], Page]) -> Page:
        context = contextvars.copy_context()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._decoder, context.run, decode)
        finally:
            keep_bad_example(context)  # the walk's report names a bad row's client

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
            run = await self._look_up(dialect, mine, report.shard, report)
        else:
            run = await self._on_worker(self.pipeline.start_walk, report.started)
            seen = self._watched_seen = set() if report.shard.sharded else None
            await self._walk_all(dialect, mine, report.shard, report, run)
            if seen is not None and self.pipeline.selection.watch:
                await self._place_unseen(dialect, report.shard, run, seen, _sessions(mine))
        self._tally_walks(report)
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
        if not self.pipeline.selection.watch_only:
            report.unlisted = unlisted_rows(report.outcomes, report.nodes, result.listed,
                                            filtered=bool(dialect.filters))
            self._log_unlisted(report.unlisted)
        self.health.recovered(CLUSTER, self.clock())

    def _log_unlisted(self, unlisted: dict[str, int]) -> None:
        """One line when nodes start (or stop) missing rows EMQX reported; the gauge has the
        figures of every poll."""
        missing = {node: rows for node, rows in unlisted.items() if rows}
        if set(missing) == self._incomplete:
            return
        if missing:
            log.warning("listing_incomplete", cluster=self.label, unlisted=missing,
                        hint="EMQX reported more rows than its listing gave (offset drift "
                             "under churn, or rows lost): emqx_client_exporter_clients_unlisted")
        else:
            log.info("listing_complete", cluster=self.label)
        self._incomplete = set(missing)

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

    def _tally_walks(self, report: PollReport) -> None:
        """Count the completed walks' pages by decoder, and their rows and values dropped:
        one log line per poll at most for those, the counters have the rest."""
        # A cluster-wide (cursor) walk is shared by every node's outcome: count it once.
        walks = {id(o.walk): o.walk for o in report.outcomes
                 if o.walk is not None and o.error is None}
        for walked in walks.values():
            report.bad_rows += walked.bad_rows
            report.bad_values += walked.bad_values
            self.stats.count_pages(walked.columnar_pages, walked.pages - walked.columnar_pages)
        if report.bad_rows or report.bad_values:
            self.stats.count_error("bad_row", report.bad_rows)
            self.stats.count_error("bad_value", report.bad_values)
            example = next((o.bad_example for o in report.outcomes if o.bad_example), None)
            log.warning("bad_client_rows", cluster=self.label, rows_skipped=report.bad_rows,
                        values_dropped=report.bad_values, example_clientid=example,
                        hint="a value of the wrong type or out of range is dropped and counted "
                             "in api_errors_total{reason=\"bad_value\"}")

    async def _walk_all(self, dialect: Dialect, mine: list[NodeInfo], shard: ShardPlan,
                        report: PollReport, run: PollRun) -> None:
        """Walk this replica's nodes (`mine`); a stopped node is a failed outcome."""
        running = [n.name for n in mine if n.running]
        for n in mine:
            if not n.running:
                report.outcomes.append(NodeOutcome(n.name, error=_not_running(n)))
        if not running:
            return
        if not dialect.per_node:
            fallback = self.discovery.per_node_fallback()
            self._cursor_retry_in -= 1
            if not self._cursor_failing or fallback is None or self._cursor_retry_in <= 0:
                # Cursor listing without node=: one walk covers the cluster; records name their
                # node and the shard keeps its own nodes' rows (docs/sharding.md: why). Should
                # it fail, everything it delivered goes, rows of stopped nodes included.
                outcome = await self._walk_one(dialect, None, run, [n.name for n in mine], shard,
                                               track=False)
                if outcome.error is None or fallback is None or not _node_scoped(outcome.error):
                    self._cursor_walked(outcome.error)
                    report.outcomes.extend(
                        NodeOutcome(name, outcome.walk, outcome.error, outcome.seconds,
                                    bad_example=outcome.bad_example) for name in running)
                    return
                self._cursor_walked(outcome.error)
            # One node's RPC failure fails the whole cursor walk (EMQX: 500 NODE_DOWN): walk
            # each node by pages instead, so it costs that node's data only. Until every node
            # answers again, later polls start here rather than ask the cursor in vain.
            dialect = fallback
        limit = asyncio.Semaphore(self.settings.node_concurrency)

        async def bounded(name: str) -> NodeOutcome:
            async with limit:
                return await self._walk_one(dialect, name, run, shard.covered_by(name), shard)

        # A task group, not gather: when one walk raises (a bug), the others are cancelled
        # instead of feeding a poll that has already failed.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(bounded(n)) for n in running]
        report.outcomes.extend(task.result() for task in tasks)
        if (self._cursor_failing and not shard.sharded
                and all(t.result().error is None for t in tasks)):
            # Every node answers again: the next poll uses the cursor. (A shard cannot tell
            # when another shard's node recovers: it tries the cursor every few polls.)
            self._cursor_retry_in = 0

    def _cursor_walked(self, error: ExporterError | None) -> None:
        """Log once when the cluster-wide cursor walk starts failing, and once when it works
        again; a cluster-wide failure it cannot work around is the poll's (`health`)."""
        if error is None:
            if self._cursor_failing:
                log.info("cursor_walk_recovered", cluster=self.label)
            self._cursor_failing = False
            self.health.recovered(CLUSTER, self.clock())
        elif not _node_scoped(error) or self.discovery.per_node_fallback() is None:
            self.health.failed(CLUSTER, error, self.clock())
        else:
            if not self._cursor_failing:
                log.warning("cursor_walk_failed", cluster=self.label, reason=error.reason,
                            error=str(error),
                            hint="walking each node by pages until every node answers")
            self._cursor_failing = True
            self._cursor_retry_in = CURSOR_RETRY_POLLS

    async def _place_unseen(self, dialect: Dialect, shard: ShardPlan, run: PollRun,
                            seen: set[str], sessions: int | None) -> None:
        """Sharded walks: leave out watched clients this replica's rows did not have, unless
        it answers for clients no node has, and a lookup finds them nowhere (then 0)."""
        unseen = set(self.pipeline.selection.watch) - seen
        if not unseen:
            return
        if not shard.answers_for_unplaced:
            await self._on_worker(run.mark_unknown, unseen)
            return
        found: set[str] = set()

        async def collect(records: list[ClientRecord]) -> None:
            found.update(r.clientid for r in records)

        result = await look_up(self.client, dialect, sorted(unseen), collect,
                               self.pipeline.selection.lookup, sessions)
        for error in result.errors:
            self._count(error)
        await self._on_worker(run.mark_unknown, found | result.unknown)

    async def _look_up(self, dialect: Dialect, mine: list[NodeInfo], shard: ShardPlan,
                       report: PollReport) -> PollRun:
        """Watch-only: look the watched clients up; nodes are up when /nodes says running.

        The lookup comes first and the run starts after it: only then is it known whether
        `/nodes`' session counts hold (not while offline durable sessions exist)."""
        began = time.perf_counter()
        watch = self.pipeline.selection.watch
        found: set[str] = set()
        kept: list[ClientRecord] = []

        async def collect(records: list[ClientRecord]) -> None:
            found.update(r.clientid for r in records)
            kept.extend(shard.keep(None, records))

        result = LookupResult()
        if shard.owned:
            result = await look_up(self.client, dialect, sorted(watch), collect,
                                   self.pipeline.selection.lookup, _sessions(mine))
        totals = {n.name: (n.online, None if result.offline_durable else n.sessions)
                  for n in mine if n.running}
        run = await self._on_worker(self.pipeline.start_lookup, report.started, totals)
        if not shard.owned:
            await self._on_worker(run.mark_unknown, watch)  # not ours to say: left out
            return run
        if kept:
            await self._on_worker(run.add_page, None, kept)
        # Found on another replica's node: its owner exports it. Found nowhere: offline, said
        # by one replica only.
        elsewhere = found - {r.clientid for r in kept}
        unplaced = set() if shard.answers_for_unplaced else set(watch) - found
        await self._on_worker(run.mark_unknown, result.unknown | elsewhere | unplaced)
        for error in result.errors:
            self._count(error)
            self.health.failed("lookup", error, self.clock())
        if not result.errors:
            self.health.recovered("lookup", self.clock())
        seconds = time.perf_counter() - began
        report.outcomes.extend(
            NodeOutcome(n.name, NodeWalk(n.name, pages=result.requests, rows=result.found),
                        None if n.running else _not_running(n), seconds)
            for n in mine)
        return run

    async def _walk_one(self, dialect: Dialect, node: str | None, run: PollRun,
                        covers: list[str], shard: ShardPlan, *,
                        track: bool = True) -> NodeOutcome:
        """Walk one node (or, `node` None, the cluster); `track` False leaves the failure
        state (`health`) to the caller."""
        began = time.perf_counter()
        name = node or CLUSTER
        waiting = self.health.waiting(name, self.clock())
        if waiting is not None:
            await self._on_worker(run.fail, covers)
            return NodeOutcome(name, error=waiting)
        pending: deque[asyncio.Future[None]] = deque()
        take_bad_example()  # examples from an earlier walk in this task are not this walk's

        seen = self._watched_seen
        watch = self.pipeline.selection.watch

        async def deliver(records: Sequence[ClientRecord]) -> None:
            # The walk downloads ahead while the pipeline works, a bounded number of pages.
            if len(pending) >= PAGES_AHEAD:
                await pending.popleft()
            kept = shard.keep(node, records)
            if seen is not None and watch:
                seen.update(watch.intersection(field_values(kept, "clientid")))
            pending.append(asyncio.get_running_loop().run_in_executor(
                self._worker, run.add_page, node, kept))

        async def drain() -> None:
            while pending:
                await pending.popleft()

        try:
            result = await walk(self.client, dialect, node, max_pages=self.settings.max_pages,
                                deliver=deliver, offload=self._decode)
        except ExporterError as exc:
            await drain()
            await self._on_worker(run.fail, covers)
            self._count(exc)
            if track:
                self.health.failed(name, exc, self.clock())
            return NodeOutcome(name, error=exc, seconds=time.perf_counter() - began)
        await drain()
        if track:
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


def unlisted_rows(outcomes: list[NodeOutcome], nodes: list[NodeInfo], listed: dict[str, int],
                  *, filtered: bool) -> dict[str, int]:
    """Per node walked, the rows EMQX reported minus those that arrived, at least 0.

    What EMQX reports: the listing's own total where it gives one (v3/v4 per-node `count`,
    v5 `meta.count`, which both count offline sessions, as the rows do, REFERENCE.md §2); for
    cursor listing (no total) the node's sessions in `/nodes`, compared with the rows kept for
    the node, unless filters make the listing a subset. Absent where neither exists.
    """
    info = {n.name: n for n in nodes}
    out: dict[str, int] = {}
    for o in outcomes:
        if o.error is not None or o.walk is None or not o.node:
            continue
        gap = o.walk.unlisted
        if gap is None and not filtered and o.node in info:
            sessions = info[o.node].sessions
            if sessions is not None:
                gap = max(0, sessions - listed.get(o.node, 0))
        if gap is not None:
            out[o.node] = gap
    return out


def _sessions(nodes: list[NodeInfo]) -> int | None:
    """The cluster's sessions by `/nodes` (running nodes), which choose how lookups are made;
    None when a node's count is unknown."""
    counts = [n.sessions for n in nodes if n.running]
    return None if None in counts else sum(c for c in counts if c is not None)


def _node_scoped(error: ExporterError) -> bool:
    """Whether a cluster-wide walk's failure may be one node's, so that walking the nodes one
    by one can save the others: not a rejected credential or a request to slow down."""
    return not isinstance(error, AuthError | BackingOffError) and error.reason != "rate_limited"


def _not_running(node: NodeInfo) -> ExporterError:
    """Why a node is not walked: stopped, or (v4) its state is unknown."""
    if node.error is not None:
        return ExporterError(f"node state unknown: EMQX answered {node.error!r} for it")
    return ExporterError("node stopped")


def _first_cause(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
