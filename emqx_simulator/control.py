"""Out-of-process controls under ``/sim`` (no auth, not counted, never faulted).

- ``GET /sim/faults`` lists rules; ``POST /sim/faults`` adds one from JSON such as
  ``{"kind": "http_error", "status": 503, "after": 2, "times": 1}``; ``DELETE /sim/faults``
  clears all, ``DELETE /sim/faults/{id}`` one.
- ``POST /sim/nodes/{node}/down`` and ``/up`` stop and restart a node; ``/unreachable``
  leaves it a member whose RPC fails (v3/v4 ``/nodes`` show an ``error`` row).
- ``POST /sim/clients/{clientid}/kick|reconnect|disconnect``; ``POST .../patch`` with a JSON
  object of wire fields.
- ``GET /sim/requests``: API requests served, per route.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from emqx_simulator.context import CLUSTER
from emqx_simulator.responses import json_response

PREFIX = "/sim"


def _bad(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


async def list_faults(request: web.Request) -> web.Response:
    """The active fault rules with their counters."""
    return json_response([rule.to_dict() for rule in request.app[CLUSTER].faults.rules])


async def add_fault(request: web.Request) -> web.Response:
    """Add a rule from a JSON object of FaultRule options."""
    try:
        options = msgspec.json.decode(await request.read(), type=dict[str, Any])
        kind = options.pop("kind")
        for internal in ("id", "seen", "fired"):
            options.pop(internal, None)
        rule = request.app[CLUSTER].faults.add(kind, **options)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        return _bad(f"bad fault rule: {exc}")
    return json_response(rule.to_dict(), status=201)


async def clear_faults(request: web.Request) -> web.Response:
    """Remove every rule."""
    request.app[CLUSTER].faults.clear()
    return web.Response(status=204)


async def remove_fault(request: web.Request) -> web.Response:
    """Remove one rule by id."""
    try:
        rule_id = int(request.match_info["id"])
    except ValueError:
        return _bad("fault ids are integers")
    request.app[CLUSTER].faults.remove(rule_id)
    return web.Response(status=204)


async def node_state(request: web.Request) -> web.Response:
    """Stop or restart a node."""
    cluster = request.app[CLUSTER]
    node, state = request.match_info["node"], request.match_info["state"]
    if cluster.node_id(node) is None or state not in ("down", "up", "unreachable"):
        return _bad("use /sim/nodes/{known node}/down, /unreachable or /up")
    if state == "unreachable":
        cluster.set_node_unreachable(node)
    else:
        cluster.set_node_down(node, state == "down")
    return web.Response(status=204)


async def client_action(request: web.Request) -> web.Response:
    """Kick, reconnect, disconnect or patch one client."""
    cluster = request.app[CLUSTER]
    clientid, action = request.match_info["clientid"], request.match_info["action"]
    try:
        if action == "kick":
            if not cluster.kick(clientid):
                return _bad(f"{clientid} is not listed")
        elif action == "reconnect":
            cluster.reconnect(clientid)
        elif action == "disconnect":
            cluster.disconnect(clientid)
        elif action == "patch":
            fields = msgspec.json.decode(await request.read(), type=dict[str, Any])
            cluster.patch(clientid, **fields)
        else:
            return _bad("actions: kick, reconnect, disconnect, patch")
    except (KeyError, msgspec.DecodeError) as exc:
        return _bad(str(exc))
    return web.Response(status=204)


async def requests(request: web.Request) -> web.Response:
    """API requests served so far, per route name."""
    return json_response(dict(request.app[CLUSTER].requests))


def add_routes(app: web.Application) -> None:
    """Register the ``/sim`` controls."""
    r = app.router
    r.add_get(f"{PREFIX}/faults", list_faults)
    r.add_post(f"{PREFIX}/faults", add_fault)
    r.add_delete(f"{PREFIX}/faults", clear_faults)
    r.add_delete(f"{PREFIX}/faults/{{id}}", remove_fault)
    r.add_post(f"{PREFIX}/nodes/{{node}}/{{state}}", node_state)
    r.add_post(f"{PREFIX}/clients/{{clientid}}/{{action}}", client_action)
    r.add_get(f"{PREFIX}/requests", requests)
