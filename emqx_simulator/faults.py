"""Faults on demand: a small list of rules, each firing on matching API requests.

A rule may be scoped to one node (requests naming that node, and cluster-wide requests, which
involve every node) and to one endpoint (a route name as in ``SimCluster.requests``, e.g.
``"GET /api/v5/clients"``, or just its path). It lets ``after`` matching requests through
first and then fires at most ``times`` times (``None``: for ever).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal, get_args

import msgspec

FaultKind = Literal[
    "latency",  # sleep ``delay`` seconds, then answer normally
    "http_error",  # HTTP ``status`` (500): v5 JSON error body, v3/v4 plain "Internal Error"
    "node_error",  # RPC to the node fails: v5 500 NODE_DOWN; v3/v4 per node: code 101 (HTTP 200)
    "node_down",  # the node goes down for good (stopped in /nodes, its clients unlisted)
    "unauthorized",  # 401 with the version's auth failure body
    "forbidden",  # 403 (v5 UNAUTHORIZED_ROLE)
    "malformed_json",  # HTTP 200 with a body that is not JSON
    "html_error",  # a proxy's text/html error page with ``status`` (502)
    "truncated",  # Content-Length larger than the body sent, then the connection closes
    "cut_json",  # the body is cut mid-JSON (Content-Length matches what is sent)
    "api_error",  # v3/v4: HTTP 200 with ``code`` != 0; v5: ``status`` with a JSON error
    "duplicate_rows",  # the page also repeats the last ``rows`` rows of the previous page
    "skip_rows",  # the page starts ``rows`` rows late (offset drift: those rows are missed)
    "phantom_cursor",  # clients_v2: the last page carries a cursor leading to an empty page
    "bad_field",  # ``rows`` rows (or ``clientid``) carry ``field`` = ``value`` ("12x")
    "missing_field",  # ``rows`` rows (or ``clientid``) lack ``field``
    "hasnext_lies",  # ``meta.hasnext`` is true on every page, the last included
    # Not EMQX itself (it has no rate limit, REFERENCE.md 6.3) but what sits in front of it:
    "rate_limited",  # HTTP 429 with ``Retry-After: delay`` (a proxy or API gateway)
    "connection_reset",  # the connection is dropped before any answer
    "huge_body",  # HTTP 200 streaming ``size`` bytes of JSON, generated, never held whole
]

FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

#: Kinds that change the rows of a list response rather than the whole response.
ROW_KINDS = frozenset(
    {"duplicate_rows", "skip_rows", "phantom_cursor", "bad_field", "missing_field",
     "hasnext_lies"}
)

_ids = itertools.count(1)


@dataclass
class FaultRule:
    """One fault and when it fires; the counters show how often it matched and fired."""

    kind: FaultKind
    node: str | None = None
    endpoint: str | None = None
    after: int = 0
    times: int | None = None
    delay: float = 0.0
    status: int | None = None
    code: int | str | None = None
    message: str | None = None
    rows: int = 1
    field: str = "recv_oct"
    value: Any = "12x"
    clientid: str | None = None
    size: int = 200 * 1024 * 1024
    id: int = dataclass_field(default_factory=lambda: next(_ids))
    seen: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {sorted(FAULT_KINDS)}")
        if self.kind == "node_down" and self.node is None:
            raise ValueError("a node_down fault needs a node")
        if self.after < 0 or (self.times is not None and self.times < 0) or self.rows < 0:
            raise ValueError("after, times and rows must not be negative")

    def applies_to(self, route: str, node: str | None) -> bool:
        """Whether a request of ``route`` about ``node`` (None: cluster-wide) is in scope."""
        if self.endpoint is not None and self.endpoint not in (route, route.partition(" ")[2]):
            return False
        return self.node is None or node is None or node == self.node

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-friendly data (for ``GET /sim/faults``)."""
        return asdict(self)


class Faults:
    """The active fault rules of a simulated cluster."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, kind: FaultKind, **options: Any) -> FaultRule:
        """Add a rule, e.g. ``add("http_error", status=503, after=2, times=1)``."""
        rule = FaultRule(kind=kind, **options)
        self.rules.append(rule)
        return rule

    def remove(self, rule: FaultRule | int) -> None:
        """Remove a rule (or the rule with that id)."""
        rule_id = rule if isinstance(rule, int) else rule.id
        self.rules = [r for r in self.rules if r.id != rule_id]

    def clear(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    def fire(self, route: str, node: str | None) -> list[FaultRule]:
        """Rules firing for this request, in the order they were added; counts the request."""
        firing: list[FaultRule] = []
        for rule in self.rules:
            if not rule.applies_to(route, node):
                continue
            rule.seen += 1
            if rule.seen > rule.after and (rule.times is None or rule.fired < rule.times):
                rule.fired += 1
                firing.append(rule)
        return firing

    def __len__(self) -> int:
        return len(self.rules)


@dataclass
class RowFaults:
    """The row-level faults firing for one list request."""

    duplicate: int = 0
    skip: int = 0
    phantom: bool = False
    hasnext_lies: bool = False
    edits: list[FaultRule] = dataclass_field(default_factory=list)

    def add(self, rule: FaultRule) -> None:
        """Take a firing rule of one of the ROW_KINDS into account."""
        if rule.kind == "duplicate_rows":
            self.duplicate += rule.rows
        elif rule.kind == "skip_rows":
            self.skip += rule.rows
        elif rule.kind == "phantom_cursor":
            self.phantom = True
        elif rule.kind == "hasnext_lies":
            self.hasnext_lies = True
        else:
            self.edits.append(rule)

    @property
    def active(self) -> bool:
        """True when any row fault fires (the response then bypasses the page cache)."""
        return bool(self.duplicate or self.skip or self.phantom or self.hasnext_lies
                    or self.edits)


def _row_id(row: Any) -> Any:
    if isinstance(row, dict):
        return row.get("clientid", row.get("client_id"))
    return getattr(row, "clientid", getattr(row, "client_id", None))


def apply_edits(rows: list[Any], edits: list[FaultRule]) -> None:
    """Damage rows in place: a wrong-typed value (bad_field) or a missing key (missing_field)."""
    for rule in edits:
        if rule.clientid is not None:
            targets = [j for j, row in enumerate(rows) if _row_id(row) == rule.clientid]
        else:
            targets = list(range(min(rule.rows, len(rows))))
        for j in targets:
            row = rows[j]
            damaged = dict(row) if isinstance(row, dict) else msgspec.to_builtins(row)
            if rule.kind == "bad_field":
                damaged[rule.field] = rule.value
            else:
                damaged.pop(rule.field, None)
            rows[j] = damaged
