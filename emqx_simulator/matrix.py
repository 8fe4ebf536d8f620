"""The fault matrix: each fault the simulator stages and what the exporter does about it.

One table serves two readers: `tests/test_fault_matrix.py` runs every row against the daemon
and `check`, and `exporter.docs` prints it in docs/failures.md, so the documented behaviour is the
tested one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: What a fault costs: one node's data this poll, the whole poll, or nothing (the bad part
#: is dropped and counted, the poll is complete).
Scope = Literal["node", "cluster", "none"]

NODE = "emqx@10.0.0.2"
CLIENTS = "GET /api/v5/clients"


@dataclass(frozen=True)
class FaultCase:
    """One row of the matrix."""

    name: str
    #: The fault rule (`Faults.add` keyword arguments, `kind` included); None: `special`.
    rule: dict[str, Any] | None
    scope: Scope
    #: The `reason` counted in `api_errors_total`, None when nothing is counted.
    reason: str | None
    reports: str
    keeps: str
    version: str = "5.6.2"
    #: Exporter settings the case needs (a short timeout, a small body limit, a login).
    config: dict[str, Any] = field(default_factory=dict)
    #: Seconds after the fault clears before the exporter asks again (its back-off).
    recovery: float = 30.0
    #: A fault that is not a rule: "login_lockout" (five failed logins by someone else).
    special: str | None = None


_OTHERS = "the other nodes' data, fresh"
_LAST = "nothing of this poll; `snapshot_age_seconds` grows from the last complete poll"
_ALL = "everything; the poll is complete"
_DASHBOARD = {"api_key": None, "api_secret": None, "username": "admin", "password": "public"}

MATRIX: tuple[FaultCase, ...] = (
    FaultCase("latency past the timeout",
              {"kind": "latency", "delay": 1.0, "node": NODE, "endpoint": CLIENTS},
              "node", "timeout", "`node_up` 0 for that node", _OTHERS,
              config={"timeout": 0.3}),
    FaultCase("HTTP 500", {"kind": "http_error", "status": 500, "node": NODE, "after": 1},
              "node", "server_error", "`node_up` 0; its partial pages are not used", _OTHERS),
    FaultCase("HTTP 502", {"kind": "http_error", "status": 502, "node": NODE, "after": 1},
              "node", "server_error", "`node_up` 0 (retried first, with back-off)", _OTHERS),
    FaultCase("HTTP 503", {"kind": "http_error", "status": 503, "node": NODE, "after": 1},
              "node", "server_error", "`node_up` 0 (retried first, with back-off)", _OTHERS),
    FaultCase("`NODE_DOWN` (RPC to a node failed)",
              {"kind": "node_error", "node": NODE, "endpoint": CLIENTS},
              "node", "node_down", "`node_up` 0", _OTHERS),
    FaultCase("401 mid-run (credential rotated)", {"kind": "unauthorized"},
              "cluster", "unauthorized",
              "`up` 0, every `node_up` 0; login retried after 1, 2, 4 … 30 minutes", _LAST,
              recovery=60.0),
    FaultCase("403 (role or scope lacks permission)", {"kind": "forbidden"},
              "cluster", "forbidden", "`up` 0, every `node_up` 0; retried after 1, 2, 4 … "
              "30 minutes", _LAST, recovery=60.0),
    FaultCase("429 with `Retry-After`",
              {"kind": "rate_limited", "delay": 20, "node": NODE, "endpoint": CLIENTS},
              "node", "rate_limited",
              "`node_up` 0; that node is not asked before `Retry-After` (at most one interval)",
              _OTHERS),
    FaultCase("connection reset", {"kind": "connection_reset", "node": NODE,
                                   "endpoint": CLIENTS},
              "node", "unreachable", "`node_up` 0", _OTHERS),
    FaultCase("truncated body", {"kind": "truncated", "node": NODE, "after": 1},
              "node", "truncated", "`node_up` 0", _OTHERS),
    FaultCase("invalid JSON", {"kind": "malformed_json", "node": NODE, "after": 1},
              "node", "bad_json", "`node_up` 0", _OTHERS),
    FaultCase("HTML page with HTTP 200",
              {"kind": "html_error", "status": 200, "node": NODE, "endpoint": CLIENTS},
              "node", "html_page", "`node_up` 0", _OTHERS),
    FaultCase("200 MB body", {"kind": "huge_body", "node": NODE, "endpoint": CLIENTS},
              "node", "body_too_large",
              "`node_up` 0; refused past `max_body_bytes` while streaming, never buffered",
              _OTHERS, config={"max_body_bytes": 4 * 1024 * 1024}),
    FaultCase("wrong types", {"kind": "bad_field", "field": "recv_oct", "value": "12x",
                              "rows": 3},
              "none", "bad_value", "that value dropped and counted", _ALL),
    FaultCase("missing fields", {"kind": "missing_field", "field": "recv_oct", "rows": 3},
              "none", None, "that figure absent for those clients (not 0)", _ALL),
    FaultCase("out-of-range numbers",
              {"kind": "bad_field", "field": "send_oct", "value": 2**64, "rows": 3},
              "none", "bad_value", "that value dropped and counted (negative, ≥ 2^63, float)",
              _ALL),
    FaultCase("`hasnext` lying", {"kind": "hasnext_lies"},
              "none", None, "nothing: an empty page ends the walk", _ALL),
    FaultCase("a node vanishing mid-walk", {"kind": "node_down", "node": NODE, "after": 1},
              "node", "node_down", "`node_up` 0; its partial pages are not used", _OTHERS),
    FaultCase("phantom cursor (`clients_v2`)", {"kind": "phantom_cursor"},
              "none", None, "nothing: the empty page ends the walk", _ALL, version="5.8.9"),
    FaultCase("`/nodes` failing",
              {"kind": "http_error", "status": 503, "endpoint": "GET /api/v5/nodes"},
              "cluster", "server_error", "`up` 0, every known node's `node_up` 0", _LAST),
    FaultCase("login lockout (EMQX e5.9+)", None, "cluster", "login_locked",
              "`up` 0, every `node_up` 0; no login tried for the 10-minute lock", _LAST,
              version="e5.9.0", config=_DASHBOARD, recovery=600.0, special="login_lockout"),
)


def readme_table() -> str:
    """The matrix as the table of docs/failures.md."""
    rows = ["| fault | what the exporter reports | `reason` counted | what it keeps |",
            "|---|---|---|---|"]
    for case in MATRIX:
        reason = f"`{case.reason}`" if case.reason else "-"
        rows.append(f"| {case.name} | {case.reports} | {reason} | {case.keeps} |")
    return "\n".join(rows)
