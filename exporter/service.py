"""The running exporter: one poller per cluster, and the snapshot they publish together."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from exporter.aggregate import Classifier
from exporter.config import Settings
from exporter.persist import LastSeen, load_last_seen, save_last_seen
from exporter.pipeline import Pipeline
from exporter.poller import ClusterPoller, PollReport
from exporter.selfmetrics import ClusterStats, SelfMetrics
from exporter.snapshot import Format, Snapshot, compose, empty_snapshot, warm
from exporter.timeparse import TimeParser

log = structlog.get_logger(__name__)


class Exporter:
    """Owns the pollers, the self-metrics and the current snapshot."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = SelfMetrics(clock)
        self.snapshot: Snapshot = empty_snapshot()
        self.ready = False
        #: Formats scrapers asked gzipped; compressed right after each render, off the loop.
        #: Prometheus asks for gzipped OpenMetrics by default, so that one is always ready.
        self.wanted_gzip: set[Format] = {"openmetrics"}
        classifier = Classifier(settings.classes)
        self.pollers: list[ClusterPoller] = []
        for cluster in settings.clusters:
            const = (("cluster", cluster.name),) if cluster.name else ()
            pipeline = Pipeline(settings.per_client, settings.aggregate, classifier,
                                TimeParser(cluster.timezone), const,
                                settings.per_client.selection)
            stats = self.metrics.add_cluster(ClusterStats(cluster.name, cluster.interval))
            self.pollers.append(ClusterPoller(cluster, pipeline, stats, clock))
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_lock = asyncio.Lock()
        self._first_done: set[int] = set()
        self._state_file = settings.per_client.state_file
        self._saved: LastSeen = {}
        if self._state_file:
            self._saved = load_last_seen(self._state_file)
            watch = settings.per_client.selection.watch
            for poller in self.pollers:
                saved = self._saved.get(poller.label, {})
                poller.pipeline.last_seen.update(
                    {cid: ts for cid, ts in saved.items() if cid in watch})

    async def poll_all_once(self) -> list[PollReport]:
        """One poll of every cluster, then publish (used by `check` and tests)."""
        reports = await asyncio.gather(*(p.poll_once() for p in self.pollers))
        await self.publish()
        await self.save_state()
        return list(reports)

    async def save_state(self) -> None:
        """Persist watched clients' last-seen times when they changed (atomic write)."""
        if not self._state_file:
            return
        current = {p.label: dict(p.pipeline.last_seen) for p in self.pollers}
        if current == self._saved:
            return
        try:
            await asyncio.to_thread(save_last_seen, self._state_file, current)
        except OSError as exc:
            log.warning("state_file_not_written", path=self._state_file, error=str(exc))
            return
        self._saved = current

    async def publish(self) -> None:
        """Compose the clusters' latest renderings into a new snapshot and swap it in."""
        async with self._publish_lock:
            rendered = [p.rendered for p in self.pollers]
            created = self.clock()
            snapshot = await asyncio.to_thread(compose, rendered, created)
            await asyncio.to_thread(warm, snapshot, tuple(self.wanted_gzip))
            self.snapshot = snapshot
            if any(p.stats.up for p in self.pollers) and len(self._first_done) == len(
                    self.pollers):
                self.ready = True

    async def _run(self, index: int, poller: ClusterPoller) -> None:
        interval = poller.settings.interval
        while True:
            began = time.monotonic()
            try:
                await poller.poll_once()  # reports every failure itself, bugs included
                self._first_done.add(index)
                await self.publish()
                await self.save_state()
            except Exception:  # nothing may stop the polling
                # Only a bug in publishing gets here: counted, shown as down, logged.
                poller.stats.count_error("internal")
                poller.stats.up = False
                log.exception("publish_crashed", cluster=poller.label)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

    def start(self) -> None:
        for index, poller in enumerate(self.pollers):
            self._tasks.append(asyncio.create_task(self._run(index, poller),
                                                   name=f"poll-{poller.label}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for poller in self.pollers:
            await poller.close()
