"""A cluster's pipeline in a child process, so that a poll keeps both cores busy.

Downloads and JSON decoding stay in the exporter's process; de-duplication, counter state,
aggregation, distributions, selection and rendering (`exporter.pipeline`) run in one child
process per cluster. Records cross the pipe as msgpack (one C pass each way, fields at their
default left out), with their aggregate groups computed here; rendered chunks come back
pickled. Calls are made from the poller's pipeline thread, so the event loop never waits on
the pipe and calls keep their order. Pages go one way (`ONE_WAY`): the thread encodes the next
page while the worker works on this one, and the pipe holds it back when it runs ahead.

When the child dies (killed, out of memory), the call in flight raises `WorkerLostError`, that poll
fails as `internal`, and the next poll starts a new child: like a restarted exporter, it begins
from a baseline and its counters start again from 0 (Prometheus reads that as a counter reset).
"""

from __future__ import annotations

import multiprocessing
import pickle
import resource
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import msgspec
import structlog

from exporter.aggregate import GroupKey
from exporter.logs import configure_logging
from exporter.pipeline import Footprint, Pipeline, PipelineResult, PollRun
from exporter.records import ClientRecord, RecordSpec, type_of_spec
from exporter.schema import WorkerKind
from exporter.selection import RankedClient, SelectionSettings

log = structlog.get_logger(__name__)

# A fork server, started once and clean (no threads, no sockets, no event loop) with the
# pipeline's modules imported, forks each worker in milliseconds. (The parent's main module is
# not run again: `python -m exporter` is a package's __main__, which multiprocessing skips, and
# the installed script guards its entry point.)
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["exporter.worker"])


class WorkerLostError(RuntimeError):
    """The worker process exited or its pipe broke in the middle of a call."""


class WorkerFailedError(RuntimeError):
    """The pipeline raised in the worker process: a bug of ours, with where it happened."""


class Run(Protocol):
    """One poll's accumulation: what the poller feeds, page by page."""

    def add_page(self, walk_node: str | None, records: Sequence[ClientRecord]) -> None: ...

    def fail(self, nodes: Iterable[str]) -> None: ...

    def mark_unknown(self, clientids: Iterable[str]) -> None: ...

    def finish(self, walked: Sequence[str]) -> PipelineResult: ...


class PipelineHost(Protocol):
    """A cluster's pipeline wherever it runs: `Pipeline` itself, or `ProcessPipeline`."""

    selection: SelectionSettings

    @property
    def last_seen(self) -> Mapping[str, float]: ...

    def needed_fields(self) -> frozenset[str]: ...

    def start_walk(self, now: float) -> Run: ...

    def start_lookup(self, now: float,
                     node_totals: dict[str, tuple[int | None, int | None]]) -> Run: ...

    def remember_seen(self, seen: Mapping[str, float]) -> None: ...

    def rankings(self) -> dict[str, list[RankedClient]]: ...

    def footprint(self) -> Footprint: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Echo:
    """What the parent keeps of the child's state, refreshed by every finished poll."""

    last_seen: dict[str, float] = field(default_factory=dict)
    rankings: dict[str, list[RankedClient]] = field(default_factory=dict)
    footprint: Footprint = field(default_factory=lambda: Footprint(0, 0))


class ProcessPipeline:
    """The parent's handle on a pipeline running in a worker process.

    Only the poller's pipeline thread calls `start_walk`, `start_lookup` and the run's methods;
    the rest reads or queues what the parent keeps, so the event loop can use it without
    waiting on the child.
    """

    def __init__(self, factory: Callable[[], Pipeline], *, log_level: str = "info",
                 log_format: str = "console", label: str = "") -> None:
        self._factory = factory
        self._logging = (log_level, log_format)
        self._label = label
        # Settings-only reads answer from a local, never-fed copy of the pipeline; its
        # aggregator gives each page's groups here, on the core the worker leaves idle.
        local = factory()
        self.selection = local.selection
        self._needed = local.needed_fields()
        self._group_keys = local.aggregator.keys
        self._echo = _Echo()
        #: Last-seen times to hand to the child with the next poll (restored or reloaded).
        self._seen_pending: dict[str, float] = {}
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self._encoder = msgspec.msgpack.Encoder()
        #: Workers started again after one was lost.
        self.restarts = 0
        #: A call already failed because the worker was lost (so `start` does not fail again).
        self._lost_reported = False

    @property
    def pid(self) -> int | None:
        """The worker process's id; None until the first poll starts it, and after close."""
        return None if self._process is None else self._process.pid

    @property
    def last_seen(self) -> Mapping[str, float]:
        return self._echo.last_seen

    def needed_fields(self) -> frozenset[str]:
        return self._needed

    def remember_seen(self, seen: Mapping[str, float]) -> None:
        self._echo.last_seen.update(seen)
        self._seen_pending.update(seen)

    def rankings(self) -> dict[str, list[RankedClient]]:
        return self._echo.rankings

    def footprint(self) -> Footprint:
        return self._echo.footprint

    def describe(self) -> str:
        if self._process is None:
            return "worker process, not started yet"
        peak = self._echo.footprint.worker_peak_rss_bytes
        memory = f", peak {peak / 2**20:.0f} MiB" if peak else ""
        return (f"worker process {self._process.pid} (started again {self.restarts} times"
                f"{memory})")

    def start_walk(self, now: float) -> ProcessRun:
        """Begin a walking poll in the worker (started, or started again, first if needed)."""
        return self._start("start_walk", now)

    def start_lookup(self, now: float,
                     node_totals: dict[str, tuple[int | None, int | None]]) -> ProcessRun:
        """Begin a watch-only poll in the worker."""
        return self._start("start_lookup", now, node_totals)

    def _start(self, op: str, *args: Any) -> ProcessRun:
        if self._process is None:
            self._spawn()
        elif not self._process.is_alive():
            # Found dead between polls: this poll fails (once per death), the next one gets
            # the new worker started here.
            reported, message = self._lost_reported, self._lost()
            self._spawn()
            if not reported:
                raise WorkerLostError(message)
        if self._seen_pending:
            self.call("remember_seen", self._seen_pending)
            self._seen_pending = {}
        self.call(op, *args)
        return ProcessRun(self)

    def call(self, op: str, *args: Any) -> Any:
        """One round trip to the worker; raises WorkerLostError or WorkerFailedError (also
        for a failure of a page `send` earlier in the poll)."""
        self.send(op, *args)
        connection = self._connection
        assert connection is not None  # send raised otherwise
        try:
            # Pickle only between this process and its own child, over a private pipe.
            status, value = pickle.loads(connection.recv_bytes())  # noqa: S301
        except (EOFError, OSError) as exc:
            self._lost_reported = True
            raise WorkerLostError(self._lost()) from exc
        if status == "error":
            raise WorkerFailedError(value)
        return value

    def send(self, op: str, *args: Any) -> None:
        """A call the worker does not answer (`ONE_WAY`): the sender goes on to the next page
        while the worker works on this one; the pipe holds back a sender that runs ahead."""
        connection = self._connection
        if connection is None:
            raise WorkerLostError("the pipeline worker is not running")
        try:
            connection.send_bytes(pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            self._lost_reported = True
            raise WorkerLostError(self._lost()) from exc

    def encode(self, records: Sequence[ClientRecord]) -> Iterator[tuple[RecordSpec | None, bytes]]:
        """Records as msgpack, one piece per run of records of one class (the worker joins
        them back into one page: a page is the unit its sums are added in)."""
        runs: Iterator[tuple[type[ClientRecord], Iterator[ClientRecord]]] = groupby(
            records, key=type)
        for cls, members in runs:
            yield cls.spec, self._encoder.encode(list(members))

    def encode_keys(self, records: Sequence[ClientRecord]) -> tuple[list[GroupKey], bytes] | None:
        """The records' aggregate groups as (distinct groups, one byte per record naming its
        group); None when a page has more groups than a byte can name (the worker computes
        them then)."""
        keys = self._group_keys(records)
        groups = list(dict.fromkeys(keys))
        if len(groups) > 256:
            return None
        number = {group: i for i, group in enumerate(groups)}
        return groups, bytes(map(number.__getitem__, keys))

    def finished(self, result: PipelineResult, echo: _Echo) -> PipelineResult:
        self._echo = echo
        return result

    def close(self) -> None:
        process, connection = self._process, self._connection
        self._process, self._connection = None, None
        if connection is not None:
            connection.close()  # the worker reads the end of its input and exits
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()

    def _spawn(self) -> None:
        if self._process is not None:
            self.restarts += 1
            log.warning("pipeline_worker_restarted", cluster=self._label,
                        exit_code=self._process.exitcode,
                        hint="the worker's counters start again from a baseline")
            # What the lost child knew of watched clients goes to the new one.
            self._seen_pending = {**self._echo.last_seen, **self._seen_pending}
            self.close()
        self._lost_reported = False
        ours, theirs = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(target=_serve, name=f"pipeline {self._label}",
                                   args=(theirs, self._factory, *self._logging), daemon=True)
        process.start()
        theirs.close()
        self._process, self._connection = process, ours

    def _lost(self) -> str:
        process = self._process
        if process is not None:
            process.join(1)
        code = None if process is None else process.exitcode
        return f"the pipeline worker process exited (exit code {code})"


class ProcessRun:
    """A poll under way in the worker process; mirrors `PollRun`'s interface."""

    def __init__(self, host: ProcessPipeline) -> None:
        self._host = host

    def add_page(self, walk_node: str | None, records: Sequence[ClientRecord]) -> None:
        self._host.send("add_page", walk_node, list(self._host.encode(records)),
                        self._host.encode_keys(records))

    def fail(self, nodes: Iterable[str]) -> None:
        self._host.call("fail", list(nodes))

    def mark_unknown(self, clientids: Iterable[str]) -> None:
        self._host.call("mark_unknown", set(clientids))

    def finish(self, walked: Sequence[str]) -> PipelineResult:
        result, echo = self._host.call("finish", list(walked))
        return self._host.finished(result, echo)


# --- the child's side ----------------------------------------------------------------------

#: Calls the worker does not answer; a failure is told with the answer to the next call.
ONE_WAY = frozenset({"add_page"})


class _Worker:
    """Carries out the parent's calls on the pipeline it owns."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.run: PollRun | None = None
        self._decoders: dict[RecordSpec | None, msgspec.msgpack.Decoder[Any]] = {}

    def handle(self, op: str, args: tuple[Any, ...]) -> Any:
        if op == "start_walk":
            self.run = self.pipeline.start_walk(*args)
            return None
        if op == "start_lookup":
            self.run = self.pipeline.start_lookup(*args)
            return None
        if op == "remember_seen":
            self.pipeline.remember_seen(*args)
            return None
        run = self.run
        if run is None:
            raise RuntimeError(f"{op} without a poll started")
        if op == "add_page":
            walk_node, pieces, grouped = args
            records: list[ClientRecord] = []
            for spec, payload in pieces:
                records += self._decoder(spec).decode(payload)
            keys = None if grouped is None else list(map(grouped[0].__getitem__, grouped[1]))
            run.add_page(walk_node, records, keys)
            return None
        if op == "fail":
            run.fail(*args)
            return None
        if op == "mark_unknown":
            run.mark_unknown(*args)
            return None
        if op == "finish":
            result = run.finish(*args)
            self.run = None
            return result, self._echo()
        raise RuntimeError(f"unknown call {op!r}")

    def _decoder(self, spec: RecordSpec | None) -> msgspec.msgpack.Decoder[Any]:
        decoder = self._decoders.get(spec)
        if decoder is None:
            cls = type_of_spec(spec)
            decoder = self._decoders[spec] = msgspec.msgpack.Decoder(list[cls])  # type: ignore[valid-type]
        return decoder

    def _echo(self) -> _Echo:
        pipeline = self.pipeline
        state = pipeline.footprint()
        return _Echo(dict(pipeline.last_seen), pipeline.rankings(), Footprint(
            state.state_bytes, state.clients,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def _serve(connection: Connection, factory: Callable[[], Pipeline], log_level: str,
           log_format: str) -> None:
    """The worker process: answer calls until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the exporter's; it stops us
    configure_logging(log_level, log_format)
    worker = _Worker(factory())
    #: The first failure of a one-way call in this poll, told with the next answer.
    failure: str | None = None
    while True:
        try:
            op, args = pickle.loads(connection.recv_bytes())  # noqa: S301 (our parent)
        except (EOFError, OSError):
            return  # the exporter closed the pipe or is gone
        if op in ONE_WAY:
            if failure is None:  # after a failure the poll is lost: skip its pages
                try:
                    worker.handle(op, args)
                except Exception as exc:
                    failure = _describe(exc)
            continue
        if op.startswith("start_"):
            failure = None
        try:
            if failure is not None:
                reply: tuple[str, Any] = ("error", failure)
            else:
                reply = ("ok", worker.handle(op, args))
        except Exception as exc:  # reported to the parent: its poll fails as internal
            reply = ("error", _describe(exc))
        connection.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


def _describe(exc: Exception) -> str:
    """`Type: message at file:line`, the line being where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def host(kind: WorkerKind, factory: Callable[[], Pipeline], *, log_level: str,
         log_format: str, label: str) -> PipelineHost:
    """The pipeline of one cluster, in a worker process or in this one."""
    if kind == "thread":
        return factory()
    return ProcessPipeline(factory, log_level=log_level, log_format=log_format, label=label)
