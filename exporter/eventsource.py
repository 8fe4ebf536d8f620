"""The MQTT subscription to one cluster's client events, reconnecting with back-off.

It runs as its own task on the exporter's event loop: counting a message is a dictionary
update (~10 us), so neither polling nor scrapes wait for it, and a broker that does not answer
costs nothing but a reconnect attempt every few seconds. Its health is `SubscriptionState`:
`events_up`, and each loss counted as a gap (events published meanwhile are missed, QoS 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from exporter.aggregate import Classifier
from exporter.api import build_ssl_context
from exporter.events import ClusterEvents, EventCounter, EventsCollector, EventsSettings

if TYPE_CHECKING:
    from exporter.config import Settings

log = structlog.get_logger(__name__)

#: Back-off between connection attempts: doubles from the first to the last, reset by a
#: subscription that came up. EMQX is never hammered by a failing subscriber.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
#: Seconds allowed for CONNECT/CONNACK and SUBSCRIBE/SUBACK.
HANDSHAKE_TIMEOUT_S = 10.0


class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue (its `queue_type` setting) that counts each message as paho
    hands it over instead of storing it: no task and no await per message (a task per message
    is what `Client.messages` costs, several times the counting itself). Nothing is ever
    queued, so iterating `messages` just waits for the connection to end."""

    handle: Callable[[str, bytes], None]

    def put_nowait(self, item: aiomqtt.Message) -> None:
        payload = item.payload
        self.handle(item.topic.value,
                    payload if isinstance(payload, bytes) else str(payload).encode())


def _counting_queue(handle: Callable[[str, bytes], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    return type("CountingQueue", (_CountingQueue,), {"handle": staticmethod(handle)})


class EventSubscription:
    """Subscribes one cluster's `EventsSettings.topic` and feeds every message to its counter."""

    def __init__(self, settings: EventsSettings, events: ClusterEvents, label: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.events = events
        self.label = label
        self.clock = clock
        self._tls: ssl.SSLContext | None = (
            build_ssl_context(settings.tls) if settings.tls is not None else None)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"events-{self.label}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.events.state.up = False

    async def run(self) -> None:
        """Subscribe, count, and on any loss reconnect after a growing pause; until cancelled."""
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await self._subscribe_once()
                error = "the broker ended the session"
            except aiomqtt.MqttError as exc:
                error = str(exc) or type(exc).__name__
            except (OSError, ssl.SSLError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug here must not end the subscription for good
                log.exception("events_crashed", cluster=self.label)
                error = f"internal: {type(exc).__name__}"
            state = self.events.state
            if state.up:
                delay = BACKOFF_FIRST_S
            state.went_down(error, self.clock())
            log.warning("events_subscription_down", cluster=self.label, error=error,
                        retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX_S, delay * 2)

    async def _subscribe_once(self) -> None:
        s = self.settings
        # clean_session: no session is kept between connections, so no queue builds up on
        # EMQX for an exporter that is away; QoS 0 so EMQX never waits for us.
        client = aiomqtt.Client(
            s.host, s.port, username=s.username, password=s.password, identifier=s.clientid,
            clean_session=True, keepalive=s.keepalive, timeout=HANDSHAKE_TIMEOUT_S,
            tls_context=self._tls, queue_type=_counting_queue(self.events.counter.handle))
        # aiomqtt leaves a half-open connection (and its reader) behind when cancelled in the
        # middle of CONNECT, so a stop waits for the handshake (bounded by its timeout) and
        # then leaves the connection cleanly.
        handshake = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.shield(handshake)
        except asyncio.CancelledError:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await handshake
                await client.__aexit__(None, None, None)
            raise
        try:
            await client.subscribe(s.topic, qos=0)
            self.events.state.came_up(self.clock())
            log.info("events_subscribed", cluster=self.label, host=s.host, port=s.port,
                     topic=s.topic)
            async for _ in client.messages:  # counted on arrival (_CountingQueue); ends with
                pass  # the connection, raising MqttError
        finally:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)


class EventSources:
    """Every cluster's events subscription, built from the settings, with its counts.

    `collector` is registered once with the self-metrics registry; subscriptions come and go
    with reloads. A cluster whose events settings, classes and watch list are unchanged keeps
    its subscription and counts across a reload.
    """

    def __init__(self, owned_nodes: Callable[[str], Sequence[str] | None],
                 clock: Callable[[], float] = time.time) -> None:
        #: The nodes a sharded replica covers, by cluster label (None: every node).
        self.owned_nodes = owned_nodes
        self.clock = clock
        self.collector = EventsCollector()
        self.subscriptions: dict[str, EventSubscription] = {}
        self._keys: dict[str, object] = {}
        self._running = False

    def configure(self, settings: Settings) -> list[EventSubscription]:
        """Match the subscriptions to `settings`; returns those retired (to be stopped)."""
        classifier = Classifier(settings.classes)
        watch = settings.per_client.selection.watch
        old, self.subscriptions = self.subscriptions, {}
        keys, self._keys = self._keys, {}
        for cluster in settings.clusters:
            if cluster.events is None:
                continue
            label = cluster.name or cluster.url
            key = (cluster.events, cluster.name, cluster.shard, settings.classes, watch)
            previous = old.get(label)
            if previous is not None and keys.get(label) == key:
                self.subscriptions[label] = old.pop(label)
            else:
                counter = EventCounter(classifier, watch, self._owner(label, cluster.shard))
                self.subscriptions[label] = EventSubscription(
                    cluster.events, ClusterEvents(cluster.name, counter), label, self.clock)
            self._keys[label] = key
        self.collector.clusters = [s.events for s in self.subscriptions.values()]
        return list(old.values())

    def _owner(self, label: str, shard: tuple[int, int]) -> Callable[[str], bool]:
        if shard[1] == 1:
            return lambda _node: True

        def owns(node: str) -> bool:
            nodes = self.owned_nodes(label)
            return nodes is not None and node in nodes
        return owns

    def start(self) -> None:
        self._running = True
        for subscription in self.subscriptions.values():
            subscription.start()

    async def apply(self, settings: Settings) -> None:
        for retired in self.configure(settings):
            await retired.stop()
        if self._running:
            self.start()

    async def stop(self) -> None:
        self._running = False
        for subscription in self.subscriptions.values():
            await subscription.stop()


def describe(subscription: EventSubscription | None) -> str:
    """The state of a cluster's events subscription in words, for the status page."""
    if subscription is None:
        return "off (no events: section)"
    s, state, counter = subscription.settings, subscription.events.state, \
        subscription.events.counter
    where = f"{s.topic} on {s.host}:{s.port}{' (TLS)' if s.tls else ''}"
    figures = (f"{counter.messages} messages, {counter.decode_errors} decode errors, "
               f"{state.gaps} gaps ({state.missed_seconds():.0f} s missed)")
    if state.up:
        return f"up: {where}; {figures}"
    error = f"; last error: {state.last_error}" if state.last_error else ""
    return f"DOWN (events are being missed): {where}; {figures}{error}"
