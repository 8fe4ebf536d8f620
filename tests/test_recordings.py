"""The simulator answers like the real brokers: every recorded request replayed against it.

The recordings (`tests/fixtures/recorded/<version>/`, written by `python -m tests.record_emqx`
from real EMQX 4.4.19, 5.3.2 and 5.8.9) are sent again to a simulator of the same version, with
the simulator's own clients in the same roles (a connected client, an offline persistent
session, a missing id, the node). Status codes, error codes, content types, the auth challenge,
field names and JSON types (paging and cursor meta included) must agree; values need not.
No broker is needed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from tests.recordings import VERSIONS, load, resolve, sent_target, shape_differences

#: A simulator per recorded version: one node (the brokers recorded were single nodes), a few
#: clients, some of them offline sessions; 5.8.9 with durable sessions as it was recorded.
#: Client ids hold a `/`, as the recorded `factory/line1/dev7` does.
PREFIX = "factory/line1/dev"
SIMULATED: dict[str, SimSettings] = {
    "4.4.19": SimSettings(api="v4", version="4.4.19", nodes=1, clients=12,
                          offline_sessions=0.3, churn=0.0, client_prefix=PREFIX),
    "5.3.2": SimSettings(api="v5", version="5.3.2", nodes=1, clients=12,
                         offline_sessions=0.3, churn=0.0, client_prefix=PREFIX),
    "5.8.9": SimSettings(api="v5", version="5.8.9", nodes=1, clients=12,
                         offline_sessions=0.0, churn=0.0, durable_sessions=6,
                         client_prefix=PREFIX),
}
MISSING = "rec-no-such-client"


WALK = "v5_clients_v2_walk_"


def _cases() -> list[Any]:
    """Every recording that stands alone (a walk's later pages carry the broker's cursors:
    `test_cursor_walk_like_the_recording` walks the simulator with its own)."""
    return [pytest.param(version, r, id=f"{version}-{r['name']}")
            for version in VERSIONS for r in load(version)
            if not r["name"].startswith(WALK) or r["name"] == f"{WALK}01"]


def _media(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


class Simulated:
    """A running simulator of one version and the ids of its clients by role."""

    def __init__(self, cluster: SimCluster, server: TestServer) -> None:
        self.cluster = cluster
        self.server = server
        self.token: str | None = None

    def roles(self) -> dict[str, str]:
        c = self.cluster
        rows = list(c.rows())
        online = next(r["clientid"] for r in rows if r.get("connected", True) and
                      r.get("conn_state", "connected") == "connected")
        if c.durable.count:
            offline = c.durable.clientid(0)  # 5.8.9 recorded its offline sessions durable
        else:
            offline = next(r["clientid"] for r in rows if r.get("connected") is False
                           or r.get("conn_state") == "disconnected")
        # Every simulated id holds a `/` (PREFIX): a connected one stands in for the slashed.
        return {"online": online, "offline": offline, "full": offline, "slashed": online,
                "missing": MISSING, "node": c.node_names[0]}

    async def send(self, session: aiohttp.ClientSession, recording: dict[str, Any]) -> tuple[
            int, dict[str, str], Any]:
        request = recording["request"]
        path, params = resolve(request["path"], request["params"], request["encode"],
                               self.roles())
        url = URL(str(self.server.make_url("")).rstrip("/") + sent_target(path, params),
                  encoded=True)
        headers = {"Accept": "application/json"}
        auth = request["auth"]
        settings = self.cluster.settings
        if auth in ("key", "bad_key"):
            secret = settings.api_secret if auth == "key" else "wrong-" + settings.api_secret
            headers["Authorization"] = aiohttp.BasicAuth(settings.api_key, secret).encode()
        elif auth in ("bearer", "bad_bearer"):
            headers["Authorization"] = f"Bearer {await self._token(session)}" if (
                auth == "bearer") else "Bearer not-a-token"
        body = request["body"]
        async with session.request(request["method"], url, headers=headers,
                                   json=body) as answer:
            raw = await answer.read()
            kept = {k.lower(): v for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "www-authenticate", "retry-after")}
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = raw.decode(errors="replace")
            return answer.status, kept, decoded

    async def _token(self, session: aiohttp.ClientSession) -> str:
        if self.token is None:
            s = self.cluster.settings
            url = str(self.server.make_url("/api/v5/login"))
            async with session.post(url, json={"username": s.username,
                                               "password": s.password}) as answer:
                self.token = (await answer.json())["token"]
        return self.token


@pytest.fixture
async def simulated(request: pytest.FixtureRequest) -> AsyncIterator[Simulated]:
    version: str = request.node.callspec.params["version"]
    cluster = SimCluster(SIMULATED[version], ManualClock())
    server = TestServer(build_sim_app(cluster), host="127.0.0.1")
    await server.start_server()
    try:
        yield Simulated(cluster, server)
    finally:
        await server.close()


def compare(recording: dict[str, Any], status: int, headers: dict[str, str],
            body: Any) -> list[str]:
    """What differs between the real broker's answer and the simulator's."""
    out = []
    if status != recording["status"]:
        out.append(f"status: real {recording['status']}, simulator {status}")
    # aiohttp names a type for any body; minirest 0.x sends its 401 text with none.
    sim_media = _media(headers)
    if not _media(recording["headers"]) and sim_media == "application/octet-stream":
        sim_media = ""
    if sim_media != _media(recording["headers"]):
        out.append(f"content type: real {_media(recording['headers'])!r}, "
                   f"simulator {_media(headers)!r}")
    real_challenge = recording["headers"].get("www-authenticate")
    if real_challenge != headers.get("www-authenticate"):
        out.append(f"WWW-Authenticate: real {real_challenge!r}, "
                   f"simulator {headers.get('www-authenticate')!r}")
    real = recording["body"]
    if (isinstance(real, dict) and isinstance(body, dict) and "code" in real
            and (real["code"] != 0 or status >= 400) and body.get("code") != real["code"]):
        out.append(f"error code: real {real['code']!r}, simulator {body.get('code')!r}")
    if isinstance(real, str) or isinstance(body, str):
        if real != body:
            out.append(f"text body: real {real!r}, simulator {body!r}")
        return out
    out += shape_differences(real, body)
    return out


@pytest.mark.parametrize(("version", "recording"), _cases())
async def test_simulator_answers_like_the_recording(
        version: str, recording: dict[str, Any], simulated: Simulated) -> None:
    async with aiohttp.ClientSession() as session:
        status, headers, body = await simulated.send(session, recording)
    differences = compare(recording, status, headers, body)
    assert not differences, (f"{version} {recording['name']} ({recording['sent']}): "
                             + "; ".join(differences))


def test_every_version_was_recorded() -> None:
    """A refresh that lost a version would make the replay test pass vacuously."""
    for version in VERSIONS:
        names = {r["name"] for r in load(version)}
        assert {"nodes", "nodes_bad_key"} <= names, version


@pytest.mark.parametrize("version", [v for v in VERSIONS if any(
    r["name"].startswith(WALK) for r in load(v))])
async def test_cursor_walk_like_the_recording(version: str, simulated: Simulated) -> None:
    """`/clients_v2` followed cursor by cursor (recorded: 5.8.9/v5_clients_v2_walk_*.json):
    every page but the last has a cursor, the last has none; live clients come first, then
    the offline durable sessions; page meta and rows have the recorded shape."""
    pages = sorted((r for r in load(version) if r["name"].startswith(WALK)),
                   key=lambda r: r["name"])
    limit = dict(map(tuple, pages[0]["request"]["params"]))["limit"]
    assert [bool(p["body"]["meta"].get("cursor")) for p in pages] == [True] * (
        len(pages) - 1) + [False]
    durable_seen = [row.get("durable") is True for p in pages for row in p["body"]["data"]]
    assert any(durable_seen), "the recording holds no durable session: refresh it"
    got: list[dict[str, Any]] = []
    cursor: str | None = None
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            recording = {**pages[0], "request": {**pages[0]["request"], "params": [
                ["limit", limit], *([["cursor", cursor]] if cursor else [])]}}
            status, headers, body = await simulated.send(session, recording)
            assert status == 200, body
            real = pages[min(len(got), len(pages) - 2)] if body["meta"].get("cursor") else (
                pages[-1])
            assert not compare(real, status, headers, body), compare(real, status, headers,
                                                                     body)
            got.append(body)
            cursor = body["meta"].get("cursor")
            if not cursor:
                break
    rows = [row for page in got for row in page["data"]]
    durable = [row.get("durable") is True for row in rows]
    assert any(durable) and not all(durable)
    # the live stage first; a page spanning both stages lists its durable rows first
    first_durable_page = next(i for i, page in enumerate(got)
                              if any(r.get("durable") for r in page["data"]))
    assert all(not r.get("durable") for page in got[:first_durable_page] for r in page["data"])
    assert all(r.get("durable") for page in got[first_durable_page + 1:] for r in page["data"])
