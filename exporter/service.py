"""The running exporter: one poller per cluster, and the snapshot they publish together."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from exporter.aggregate import Classifier
from exporter.config import ClusterSettings, Settings
from exporter.eventsource import EventSources
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
        self.pollers: list[ClusterPoller] = [self._new_poller(c, settings, classifier)
                                             for c in settings.clusters]
        self._tasks: dict[ClusterPoller, asyncio.Task[None]] = {}
        #: EMQX's client events where `events:` is configured; beside polling, never in its way.
        self.events = EventSources(self._owned_nodes, clock)
        self.events.configure(settings)
        self.metrics.registry.register(self.events.collector)
        self._publish_lock = asyncio.Lock()
        self._first_done: set[ClusterPoller] = set()
        self._state_file = settings.per_client.state_file
        self._saved: LastSeen = {}
        if self._state_file:
            self._saved = load_last_seen(self._state_file)
            watch = settings.per_client.selection.watch
            for poller in self.pollers:
                saved = self._saved.get(poller.label, {})
                poller.pipeline.remember_seen(
                    {cid: ts for cid, ts in saved.items() if cid in watch})

    def _owned_nodes(self, label: str) -> list[str] | None:
        """The nodes this replica's share covers in a cluster, as its last discovery saw."""
        poller = next((p for p in self.pollers if p.label == label), None)
        return None if poller is None else poller.known_nodes

    async def poll_all_once(self) -> list[PollReport]:
        """One poll of every cluster, then publish (used by `check` and tests)."""
        reports = await asyncio.gather(*(p.poll_once() for p in self.pollers))
        self._first_done.update(self.pollers)  # as the poll loop records: readiness needs it
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
            if any(p.stats.up for p in self.pollers) and self._first_done.issuperset(
                    self.pollers):
                self.ready = True

    async def _run(self, poller: ClusterPoller) -> None:
        interval = poller.settings.interval
        while True:
            began = time.monotonic()
            try:
                await poller.poll_once()  # reports every failure itself, bugs included
                self._first_done.add(poller)
                await self.publish()
                await self.save_state()
            except Exception:  # nothing may stop the polling
                # Only a bug in publishing gets here: counted, shown as down, logged.
                poller.stats.count_error("internal")
                poller.stats.up = False
                log.exception("publish_crashed", cluster=poller.label)
            # Sleep out the interval, unless a reload asks for a poll now (`retry_now`).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poller.wakeup.wait(),
                                       max(0.0, interval - (time.monotonic() - began)))
            poller.wakeup.clear()

    def _new_poller(self, cluster: ClusterSettings, settings: Settings, classifier: Classifier,
                    stats: ClusterStats | None = None) -> ClusterPoller:
        const = (("cluster", cluster.name),) if cluster.name else ()
        pipeline = Pipeline(settings.per_client, settings.aggregate, classifier,
                            TimeParser(cluster.timezone), const, settings.per_client.selection,
                            label=cluster.name or cluster.url)
        if stats is None:
            stats = ClusterStats(cluster.name, cluster.interval)
        stats.interval = cluster.interval
        return ClusterPoller(cluster, pipeline, self.metrics.add_cluster(stats), self.clock)

    async def apply(self, settings: Settings) -> None:
        """Switch to reloaded settings without dropping the served snapshot.

        A cluster whose settings (and the shared per-client, aggregate and class settings) are
        unchanged keeps its poller, its state and its schedule. A changed one gets a new poller
        that serves the old one's last rendering and counters until its own first poll.
        """
        shared = (settings.per_client, settings.aggregate, settings.classes)
        same_shared = shared == (self.settings.per_client, self.settings.aggregate,
                                 self.settings.classes)
        classifier = Classifier(settings.classes)
        old = {p.label: p for p in self.pollers}
        self.metrics.clusters.clear()
        pollers = []
        for cluster in settings.clusters:
            previous = old.get(cluster.name or cluster.url)
            if previous is not None and same_shared and previous.settings == cluster:
                self.metrics.add_cluster(previous.stats)
                previous.retry_now()
                pollers.append(previous)
                continue
            poller = self._new_poller(cluster, settings, classifier,
                                      previous.stats if previous else None)
            if previous is not None:
                poller.rendered = previous.rendered
                watch = settings.per_client.selection.watch
                poller.pipeline.remember_seen({cid: ts for cid, ts in
                                               previous.pipeline.last_seen.items()
                                               if cid in watch})
            pollers.append(poller)
        retired = [p for p in self.pollers if p not in pollers]
        running = bool(self._tasks)
        for poller in retired:
            await self._stop_task(poller)
            await poller.close()
            self._first_done.discard(poller)
        self.settings = settings
        self.pollers = pollers
        self._state_file = settings.per_client.state_file
        if running:
            self.start()
        await self.events.apply(settings)
        await self.publish()  # a removed cluster's series go now, the others stay
        kept = sum(p in old.values() for p in pollers)
        log.info("settings_applied", kept=kept, rebuilt=len(pollers) - kept, removed=len(retired))

    def start(self) -> None:
        """Start polling every cluster that is not polling yet, and the events subscriptions."""
        self.events.start()
        for poller in self.pollers:
            if poller not in self._tasks:
                self._tasks[poller] = asyncio.create_task(self._run(poller),
                                                          name=f"poll-{poller.label}")

    async def _stop_task(self, poller: ClusterPoller) -> None:
        task = self._tasks.pop(poller, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        await self.events.stop()
        for poller in list(self._tasks):
            self._tasks[poller].cancel()
        for poller in list(self._tasks):
            await self._stop_task(poller)
        for poller in self.pollers:
            await poller.close()
