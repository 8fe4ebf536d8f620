"""Decoding `/nodes` answers of every generation."""

from __future__ import annotations

from typing import Any

import msgspec

from exporter.api import Response
from exporter.dialects.base import NodeInfo, decode
from exporter.dialects.paged import check_envelope
from exporter.errors import DecodeError
from exporter.records import valid_number


class _Node(msgspec.Struct):
    node: str | None = None
    name: str | None = None  # v3 calls it `name` (and `node` in the list only)
    node_status: str | None = None
    version: str | None = None
    connections: Any = None
    live_connections: Any = None
    error: Any = None  # v4: the node's RPC failed; its state is unknown


class _Envelope(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    data: list[_Node] = []


_BARE = msgspec.json.Decoder(list[_Node])
_ENVELOPED = msgspec.json.Decoder(_Envelope)


def _count(value: Any) -> int | None:
    return value if valid_number(value) else None


def _info(node: _Node, endpoint: str, connections_are_sessions: bool) -> NodeInfo:
    name = node.node or node.name
    if not name:
        raise DecodeError(endpoint, "bad_shape", "a node without a name")
    if node.error is not None and node.node_status is None:
        # v4 lists a node whose RPC failed as `{"node": N, "error": R}` (REFERENCE.md §13.4):
        # its state is unknown, so it is not walked and its figures are unknown.
        return NodeInfo(name=name, running=False, error=str(node.error)[:200])
    status = (node.node_status or "running").lower()
    connections = _count(node.connections)
    # v3 counts its connection table (live connections); v4 and v5 count the channel table,
    # which holds disconnected persistent sessions too (REFERENCE.md §1.5, §12.4). Only
    # `live_connections` (4.4.19+, 5.1+) counts live connections there.
    return NodeInfo(
        name=name,
        running=status == "running",
        version=node.version,
        online=_count(node.live_connections) if connections_are_sessions else connections,
        sessions=connections if connections_are_sessions else None,
    )


def parse_bare_nodes(response: Response) -> list[NodeInfo]:
    """v5: a bare JSON array; a stopped node has only three keys."""
    return [_info(n, response.endpoint, True) for n in decode(response, _BARE)]


def parse_enveloped_nodes(response: Response, *, connections_are_sessions: bool) -> list[
        NodeInfo]:
    """v3/v4: `{"code":0,"data":[...]}`."""
    envelope = decode(response, _ENVELOPED)
    check_envelope(response, envelope.code, envelope.message)
    return [_info(n, response.endpoint, connections_are_sessions) for n in envelope.data]
