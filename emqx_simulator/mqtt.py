"""A minimal MQTT server: just what a subscriber to EMQX's `$SYS` client events needs.

MQTT 3.1.1 and 5 (the subset): CONNECT/CONNACK (optional username/password check), SUBSCRIBE/
SUBACK with `+` and `#` filters (granted QoS 0), UNSUBSCRIBE/UNSUBACK, PUBLISH QoS 0 from the
server, PINGREQ/PINGRESP, DISCONNECT, keepalive enforced (1.5 x), a second connection with the
same client id takes the first one over. Incoming PUBLISH is ignored. QoS 0 as in EMQX: a
subscriber whose socket buffer is full misses messages (counted in `dropped`).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

CONNECT, CONNACK, PUBLISH, SUBSCRIBE, SUBACK = 1, 2, 3, 8, 9
UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 10, 11, 12, 13, 14
#: A subscriber this far behind (bytes waiting in its socket buffer) misses messages.
MAX_BACKLOG = 8 * 1024 * 1024
MAX_PACKET = 1024 * 1024


class ProtocolError(Exception):
    """A packet this server does not understand: the connection is closed."""


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching; a wildcard in the first level does not match `$` topics."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels, wanted = topic.split("/"), topic_filter.split("/")
    for i, want in enumerate(wanted):
        if want == "#":
            return True
        if i >= len(levels) or (want != "+" and want != levels[i]):
            return False
    return len(levels) == len(wanted)


def _string(data: bytes, at: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("!H", data, at)
    end = at + 2 + length
    if end > len(data):
        raise ProtocolError("string runs past the packet")
    return data[at + 2:end].decode("utf-8"), end


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 21:
            raise ProtocolError("bad variable byte integer")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def packet(kind: int, body: bytes, flags: int = 0) -> bytes:
    return bytes((kind << 4 | flags,)) + _encode_varint(len(body)) + body


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


@dataclass(eq=False)
class Session:
    """One connected client."""

    clientid: str
    version: int  # 4: MQTT 3.1.1, 5: MQTT 5
    writer: asyncio.StreamWriter
    keepalive: int = 0
    filters: set[str] = field(default_factory=set)

    def send(self, data: bytes) -> bool:
        transport = self.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > MAX_BACKLOG:
            return False
        self.writer.write(data)
        return True


class MqttServer:
    """Serves MQTT on host:port; `publish` sends a QoS 0 message to every matching session."""

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self.password = password
        self.sessions: dict[str, Session] = {}
        self.published = 0
        self.dropped = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen (port 0: a free one) and return the port."""
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection; their handlers end on their own (asyncio
        streams report a cancelled handler task as an error)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    def kick(self, clientid: str) -> bool:
        """Close a client's connection (tests: the subscriber must reconnect)."""
        session = self.sessions.get(clientid)
        if session is None:
            return False
        session.writer.transport.abort()
        return True

    def publish(self, topic: str, payload: bytes) -> int:
        """Send to every session subscribed to a matching filter; returns how many got it."""
        self.published += 1
        sent = 0
        frames: dict[int, bytes] = {}
        for session in self.sessions.values():
            if not any(topic_matches(f, topic) for f in session.filters):
                continue
            frame = frames.get(session.version)
            if frame is None:
                props = b"\x00" if session.version == 5 else b""
                frame = frames[session.version] = packet(PUBLISH, _utf8(topic) + props + payload)
            if session.send(frame):
                sent += 1
            else:
                self.dropped += 1
        return sent

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        session: Session | None = None
        try:
            session = await self._connect(reader, writer)
            if session is not None:
                await self._loop(session, reader)
        except (ProtocolError, ConnectionError, asyncio.IncompleteReadError, TimeoutError,
                UnicodeDecodeError, struct.error) as exc:
            log.debug("mqtt_connection_closed", error=str(exc))
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            if session is not None and self.sessions.get(session.clientid) is session:
                del self.sessions[session.clientid]
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("bad remaining length")
        if length > MAX_PACKET:
            raise ProtocolError("packet too large")
        return first >> 4, first & 0x0F, await reader.readexactly(length)

    async def _connect(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> Session | None:
        kind, _flags, body = await asyncio.wait_for(self._read(reader), 10.0)
        if kind != CONNECT:
            raise ProtocolError("first packet is not CONNECT")
        name, at = _string(body, 0)
        version, flags = body[at], body[at + 1]
        (keepalive,) = struct.unpack_from("!H", body, at + 2)
        at += 4
        if name not in ("MQTT", "MQIsdp") or version not in (3, 4, 5):
            writer.write(packet(CONNACK, b"\x00\x01"))  # unacceptable protocol version
            return None
        if version == 5:
            length, at = _varint(body, at)
            at += length
        clientid, at = _string(body, at)
        if flags & 0x04:  # will: properties (v5), topic, payload
            if version == 5:
                length, at = _varint(body, at)
                at += length
            _topic, at = _string(body, at)
            (length,) = struct.unpack_from("!H", body, at)
            at += 2 + length
        username = password = None
        if flags & 0x80:
            username, at = _string(body, at)
        if flags & 0x40:
            (length,) = struct.unpack_from("!H", body, at)
            password = body[at + 2:at + 2 + length].decode()
        ok = self.username is None or (username, password) == (self.username, self.password)
        if not ok:
            code = 0x86 if version == 5 else 0x04  # bad user name or password
            writer.write(packet(CONNACK, b"\x00" + bytes((code,)) + (b"\x00" if version == 5
                                                                     else b"")))
            return None
        old = self.sessions.get(clientid)
        if old is not None:  # takeover: the new connection wins
            old.writer.transport.abort()
        session = Session(clientid or f"auto-{id(writer):x}", 5 if version == 5 else 4, writer,
                          keepalive)
        self.sessions[session.clientid] = session
        writer.write(packet(CONNACK, b"\x00\x00" + (b"\x00" if version == 5 else b"")))
        return session

    async def _loop(self, session: Session, reader: asyncio.StreamReader) -> None:
        limit = session.keepalive * 1.5 if session.keepalive else None
        v5 = session.version == 5
        while True:
            kind, _flags, body = await asyncio.wait_for(self._read(reader), limit)
            if kind == PINGREQ:
                session.send(packet(PINGRESP, b""))
            elif kind in (SUBSCRIBE, UNSUBSCRIBE):
                packet_id, at = body[:2], 2
                if v5:
                    length, at = _varint(body, at)
                    at += length
                codes = bytearray()
                while at < len(body):
                    topic_filter, at = _string(body, at)
                    if kind == SUBSCRIBE:
                        at += 1  # options: QoS 0 is granted whatever was asked
                        session.filters.add(topic_filter)
                    else:
                        session.filters.discard(topic_filter)
                    codes.append(0)
                if kind == SUBSCRIBE:
                    session.send(packet(SUBACK, packet_id + (b"\x00" if v5 else b"")
                                        + bytes(codes)))
                else:
                    session.send(packet(UNSUBACK, packet_id + (b"\x00" + bytes(codes)
                                                               if v5 else b"")))
            elif kind == DISCONNECT:
                return
            elif kind == PUBLISH:
                continue  # nothing here subscribes to clients' messages
            else:
                raise ProtocolError(f"unsupported packet type {kind}")
