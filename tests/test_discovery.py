"""Discovery keeps a cluster's dialect matched to `/nodes`: detection, upgrades, moved APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.api import ApiClient, RetryPolicy
from exporter.dialects.discovery import DialectOptions, Discovery
from exporter.errors import ApiError

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Broker:
    """A broker's `/nodes` as the test sets it: v5 (bare list) or v4 (envelope) routes."""

    generation: str = "v5"
    versions: list[str] = field(default_factory=lambda: ["5.1.0"])
    status: int = 200
    asked: list[str] = field(default_factory=list)
    url: str = ""

    def rows(self) -> list[dict[str, Any]]:
        return [{"node": f"emqx@10.0.0.{i}", "node_status": "running", "version": version}
                for i, version in enumerate(self.versions, 1)]

    async def nodes(self, request: web.Request) -> web.Response:
        generation = request.match_info["generation"]
        self.asked.append(generation)
        if generation != self.generation:
            return web.json_response({"code": "NOT_FOUND", "message": "no route"}, status=404)
        if self.status != 200:
            return web.json_response({"code": "INTERNAL_ERROR", "message": "boom"},
                                     status=self.status)
        if generation == "v5":
            return web.json_response(self.rows())
        return web.json_response({"code": 0, "data": self.rows()})


@pytest.fixture
async def broker(aiohttp_server: ServerFactory) -> Broker:
    state = Broker()
    app = web.Application()
    app.router.add_get("/api/{generation}/nodes", state.nodes)
    state.url = str((await aiohttp_server(app)).make_url("/"))
    return state


@pytest.fixture
def builds() -> list[frozenset[str]]:
    """The fields asked for, once per dialect built."""
    return []


@pytest.fixture
async def discovery(broker: Broker, builds: list[frozenset[str]]) -> AsyncIterator[Discovery]:
    def fields() -> frozenset[str]:
        builds.append(frozenset({"clientid", "mqueue_len"}))
        return builds[-1]

    client = ApiClient(broker.url, None, retry=RetryPolicy(retries=0))
    yield Discovery(client, DialectOptions(), fields, label="test")
    await client.close()


async def test_detects_once_then_lists_nodes_with_the_dialect_in_use(
        broker: Broker, discovery: Discovery) -> None:
    first = await discovery.discover()
    assert first.detected is not None and first.detected.generation == "v5"
    assert [n.name for n in first.nodes] == ["emqx@10.0.0.1"]
    assert (first.dialect.generation, first.dialect.version) == ("v5", "5.1.0")
    second = await discovery.discover()
    assert second.detected is None  # no new detection while the route answers
    assert second.dialect is first.dialect  # same version: not rebuilt
    assert broker.asked == ["v5", "v5"]


async def test_lowest_running_version_chooses_and_an_upgrade_rebuilds(
        broker: Broker, discovery: Discovery, builds: list[frozenset[str]]) -> None:
    broker.versions = ["5.8.9", "5.4.0"]  # mid rolling upgrade: the oldest node decides
    before = (await discovery.discover()).dialect
    assert (before.version, before.listing_kind) == ("5.4.0", "page")
    broker.versions = ["5.8.9", "5.8.9"]
    after = (await discovery.discover()).dialect
    assert after is not before and discovery.dialect is after
    assert (after.version, after.listing_kind, discovery.version) == ("5.8.9", "cursor", "5.8.9")
    assert len(builds) == 2  # the pipeline's fields are asked for each build


async def test_a_404_on_the_nodes_route_detects_the_generation_again(
        broker: Broker, discovery: Discovery) -> None:
    await discovery.discover()
    broker.generation, broker.versions = "v4", ["4.4.19"]  # the API moved
    moved = await discovery.discover()
    assert moved.detected is not None and moved.detected.generation == "v4"
    assert (moved.dialect.generation, moved.dialect.version) == ("v4", "4.4.19")
    assert broker.asked == ["v5", "v5", "v5", "v4"]  # 404, then detection probes newest first


async def test_another_error_fails_the_discovery_and_keeps_the_dialect(
        broker: Broker, discovery: Discovery) -> None:
    kept = (await discovery.discover()).dialect
    broker.status = 500
    with pytest.raises(ApiError) as failure:
        await discovery.discover()
    assert failure.value.status == 500
    assert discovery.dialect is kept and broker.asked == ["v5", "v5"]
