"""Recorded answers of real EMQX brokers: the requests, their file format, and their comparison.

A recording is one request the exporter makes (or one of its error cases) and the real broker's
answer to it, stored in `tests/fixtures/recorded/<version>/<name>.json`:

    {"name": ..., "request": {"method", "path", "params", "body", "auth", "encode"},
     "vars": {role: value used on the real broker}, "sent": the exact path and query sent,
     "status": 200, "headers": {"content-type": ..., "www-authenticate": ...}, "body": ...}

`path` and `params` hold placeholders such as `{online}` (a role: a connected client, an
offline persistent session, a missing id, the node's name...), so the simulator can be asked
the same question about its own clients. `encode` says how a client id in the path was
percent-encoded (`once`, or `twice`: every byte encoded, then the result encoded again).
Volatile values (timestamps, ports, tokens) are stored as they came and compared by type only.

`tests/record_emqx.py` writes them from real brokers; `tests/test_recordings.py` replays them
against the simulator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

RECORDED = Path(__file__).resolve().parent / "fixtures" / "recorded"
#: Headers whose value matters to the exporter (content type; the auth challenge; paging hints).
KEPT_HEADERS = ("content-type", "www-authenticate", "retry-after")
#: The kinds of broker recorded, with the simulator settings that answer as that version.
VERSIONS = ("4.4.19", "5.3.2", "5.8.9")
#: Figures seen while recording (not a request): the behaviours the simulator models.
OBSERVATIONS = "observations.json"


@dataclass(frozen=True)
class Spec:
    """One request to record: method, path and query with `{role}` placeholders."""

    name: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    body: Any = None
    #: `key` (API key / application), `bad_key`, `none`, `bearer` (a dashboard login token).
    auth: str = "key"
    encode: str = "once"
    versions: tuple[str, ...] = VERSIONS
    #: Why this request is recorded (what the exporter relies on).
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def encode_id(clientid: str, how: str) -> str:
    """A client id as a path segment: encoded `once`, or `twice` (each byte, then again)."""
    if how == "twice":
        every = "".join(f"%{b:02X}" for b in clientid.encode())
        return quote(every, safe="")
    return quote(clientid, safe="")


def resolve(path: str, params: list[list[str]] | tuple[tuple[str, str], ...], how: str,
            roles: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """Path (ids encoded as `how` says) and query parameters with the roles filled in."""
    segments = []
    for segment in path.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            role = segment[1:-1]
            segments.append(encode_id(roles[role], how) if role != "node" else roles[role])
        else:
            segments.append(segment)
    filled = [(k, v.format(**roles)) for k, v in params]
    return "/".join(segments), filled


def sent_target(path: str, params: list[tuple[str, str]]) -> str:
    return path + ("?" + urlencode(params, safe=",@") if params else "")


def load(version: str) -> list[dict[str, Any]]:
    """Every recording of `version`, by name."""
    folder = RECORDED / version
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
            if p.name != OBSERVATIONS]


# -- comparison --------------------------------------------------------------------------------


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


#: Keys a row holds only in states the recorded brokers' clients were not in: `cn` and `dn`
#: of a TLS client with a certificate (the recordings connect over plain TCP).
OPTIONAL_KEYS = frozenset({"cn", "dn"})


def shape_differences(real: Any, sim: Any, where: str = "$",
                      optional: frozenset[str] = OPTIONAL_KEYS) -> list[str]:
    """Where the simulator's JSON differs from the recording in key names or JSON types.

    Arrays of objects compare the union of their items' keys and each key's types, so a
    listing of other clients still compares (values never do). `null` matches any type where
    the other side has both (EMQX writes `null` for an unset `ip_address` in one row only).
    `optional` names keys that may be missing on either side (documented per caller).
    """
    rt, st = json_type(real), json_type(sim)
    if rt != st:
        if "null" in (rt, st):
            return []
        return [f"{where}: real {rt}, simulator {st}"]
    if rt == "object":
        out = []
        for key in sorted(set(real) | set(sim)):
            if key not in sim and key not in optional:
                out.append(f"{where}.{key}: missing in the simulator")
            elif key not in real and key not in optional:
                out.append(f"{where}.{key}: not in the real broker's answer")
            elif key in real and key in sim:
                out += shape_differences(real[key], sim[key], f"{where}.{key}", optional)
        return out
    if rt == "array":
        if bool(real) != bool(sim):  # e.g. a lookup that finds nothing (v4: 200, data [])
            return [f"{where}: real {len(real)} items, simulator {len(sim)}"]
        if not real:
            return []
        if all(isinstance(x, dict) for x in real + sim):
            return _rows_differences(real, sim, where, optional)
        return shape_differences(real[0], sim[0], f"{where}[]", optional)
    return []


def _rows_differences(real: list[dict[str, Any]], sim: list[dict[str, Any]], where: str,
                      optional: frozenset[str]) -> list[str]:
    """Rows are grouped by kind (connected or not, durable or not), and the key sets of the
    kinds both sides hold are compared; a value's type is compared over every row."""
    def kind(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row.get("connected"), row.get("conn_state"), row.get("durable"))

    def keys(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for row in rows:
            for key, value in row.items():
                out.setdefault(key, set()).add(json_type(value))
        return out

    out = []
    for k in sorted({kind(r) for r in real} & {kind(r) for r in sim}, key=repr):
        rk = keys([r for r in real if kind(r) == k])
        sk = keys([r for r in sim if kind(r) == k])
        for key in sorted(set(rk) | set(sk)):
            if key not in sk and key not in optional:
                out.append(f"{where}[{k}].{key}: missing in the simulator")
            elif key not in rk and key not in optional:
                out.append(f"{where}[{k}].{key}: not in the real broker's answer")
    rk, sk = keys(real), keys(sim)
    for key in sorted(set(rk) & set(sk)):
        r, s = rk[key] - {"null"}, sk[key] - {"null"}
        if r and s and not r & s:
            out.append(f"{where}[].{key}: real {sorted(r)}, simulator {sorted(s)}")
    return out
