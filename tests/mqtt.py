"""Real MQTT clients for the real-broker tests (paho-mqtt 2.x, its network loop in a thread).

Each `MqttClient` is one device: connect with a client id, clean start or a persistent session,
subscribe, publish, acknowledge or hold QoS 1 messages, disconnect cleanly or drop the socket
without DISCONNECT (a crash), and see the messages it got. Every wait has a deadline.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.realbroker import Broker

WAIT_S = 20.0


class MqttClient:
    """One MQTT connection to a real broker."""

    def __init__(self, broker: Broker, clientid: str, *, username: str | None = None,
                 password: str | None = None, clean_start: bool = True,
                 session_expiry_s: int = 0, keepalive_s: int = 60, protocol: int = 5,
                 manual_ack: bool = False) -> None:
        self.broker = broker
        self.clientid = clientid
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.protocol = (MQTTProtocolVersion.MQTTv5 if protocol == 5
                         else MQTTProtocolVersion.MQTTv311)
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self.connect_code: Any = None
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=clientid,
                                  protocol=self.protocol,
                                  clean_session=None if protocol == 5 else clean_start,
                                  manual_ack=manual_ack,
                                  # a device kicked or taken over stays away: paho would
                                  # otherwise reconnect it and cause events of its own
                                  reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, code: Any, _p: Any) -> None:
        self.connect_code = code
        self._disconnected.clear()
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, _code: Any, _p: Any) -> None:
        self._connected.clear()
        self._disconnected.set()

    def connect(self) -> MqttClient:
        """Connect and wait for CONNACK; fail if the broker refused."""
        properties = None
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry_s
        self.client.connect(self.broker.mqtt_host, self.broker.mqtt_port,
                            keepalive=self.keepalive_s,
                            clean_start=self.clean_start if self.protocol
                            == MQTTProtocolVersion.MQTTv5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                            properties=properties)
        self.client.loop_start()
        if not self._connected.wait(WAIT_S):
            raise TimeoutError(f"{self.clientid}: no CONNACK within {WAIT_S} s")
        if getattr(self.connect_code, "is_failure", False):
            raise ConnectionError(f"{self.clientid}: broker refused: {self.connect_code}")
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic, qos=qos)
        if not done.wait(WAIT_S):
            raise TimeoutError(f"{self.clientid}: no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1/2) or it was sent (QoS 0)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT_S)

    def publish_many(self, topic: str, count: int, qos: int = 1) -> None:
        """Publish `count` messages back to back; wait until the broker took the last one."""
        infos = [self.client.publish(topic, b"%d" % i, qos=qos) for i in range(count)]
        for info in infos:
            info.wait_for_publish(WAIT_S)

    def receive(self, timeout: float = WAIT_S) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def disconnect(self) -> None:
        """A clean DISCONNECT (reason `normal` on the broker)."""
        self.client.disconnect()
        self._disconnected.wait(WAIT_S)
        self.client.loop_stop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a device that lost power or network."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def pause(self) -> None:
        """Stop the network loop with the socket open: no PINGREQ, so keepalive expires."""
        self.client.loop_stop()

    def leave(self) -> None:
        """Go away whatever the state: disconnect if connected, else (or failing that) drop."""
        try:
            if self.connected:
                self.disconnect()
            else:
                self.drop()
        except (OSError, TimeoutError):
            self.drop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()


@contextmanager
def devices(broker: Broker, clientids: list[str], **options: Any) -> Iterator[list[MqttClient]]:
    """Connected clients for `clientids`; every one is disconnected (or dropped) at the end."""
    clients: list[MqttClient] = []
    try:
        for clientid in clientids:
            clients.append(MqttClient(broker, clientid, **options).connect())  # noqa: PERF401 - each joins before the next connects, for the finally
        yield clients
    finally:
        for client in clients:
            client.leave()
