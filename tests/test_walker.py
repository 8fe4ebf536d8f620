"""One walk through the simulator: paging, the page limit, held rows (v3) and refused fields."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import cast

import pytest

from emqx_simulator import SimCluster, SimSettings
from exporter.api import ApiClient, Request, Response
from exporter.dialects import Dialect, NodeInfo, make_dialect
from exporter.dialects.base import ListingKind, Page
from exporter.dialects.paged import with_param
from exporter.errors import WalkError
from exporter.records import ClientRecord
from exporter.walker import NodeWalk, walk
from tests.harness import sim_api


async def nodes_of(client: ApiClient, dialect: Dialect) -> list[NodeInfo]:
    return dialect.parse_nodes(await client.send(dialect.nodes_request()))


async def walked(client: ApiClient, dialect: Dialect, node: str | None,
                 max_pages: int = 100) -> tuple[NodeWalk, list[list[ClientRecord]]]:
    """The walk's result and each delivery, in order."""
    deliveries: list[list[ClientRecord]] = []

    async def deliver(records: Sequence[ClientRecord]) -> None:
        deliveries.append(list(records))

    return await walk(client, dialect, node, max_pages=max_pages, deliver=deliver), deliveries


def truth(cluster: SimCluster, node: str) -> set[str]:
    return {str(row.get("clientid", row.get("client_id"))) for row in cluster.rows(node)}


async def test_v4_walk_delivers_each_page_as_it_arrives() -> None:
    async with sim_api(SimSettings(api="v4", nodes=2, clients=300)) as (cluster, client):
        dialect = make_dialect("v4", "4.4.19", page_size=40)
        node = (await nodes_of(client, dialect))[0].name
        result, deliveries = await walked(client, dialect, node)
    assert len(deliveries) > 1 and all(len(d) <= 40 for d in deliveries)
    assert {r.clientid for d in deliveries for r in d} == truth(cluster, node)
    assert result.rows == len(truth(cluster, node)) and result.pages >= len(deliveries)


async def test_v3_walk_holds_its_rows_until_queue_figures_are_merged() -> None:
    async with sim_api(SimSettings(api="v3", nodes=2, clients=300)) as (cluster, client):
        dialect = make_dialect("v3", "3.2.8", page_size=40)
        node = (await nodes_of(client, dialect))[0].name
        result, deliveries = await walked(client, dialect, node)
        sessions = cluster.requests["GET /api/v3/nodes/{node}/sessions"]
    assert result.pages > 1 and len(deliveries) == 1  # one delivery, after the merge
    (records,) = deliveries
    assert {r.clientid for r in records} == truth(cluster, node)
    assert all(r.inflight_max is not None and r.mqueue_max is not None for r in records)
    assert sessions > 1 and not result.soft_errors


async def test_v3_session_listing_failure_costs_only_the_queue_figures() -> None:
    async with sim_api(SimSettings(api="v3", nodes=2, clients=300)) as (cluster, client):
        cluster.faults.add("http_error", status=500,
                           endpoint="GET /api/v3/nodes/{node}/sessions")
        dialect = make_dialect("v3", "3.2.8")
        node = (await nodes_of(client, dialect))[0].name
        result, deliveries = await walked(client, dialect, node)
    (records,) = deliveries
    assert {r.clientid for r in records} == truth(cluster, node)  # every client still listed
    assert all(r.inflight_max is None for r in records)  # unknown, not 0
    assert [e.reason for e in result.soft_errors] == ["server_error"]


async def test_a_walk_longer_than_max_pages_fails() -> None:
    async with sim_api(SimSettings(api="v4", nodes=1, clients=200)) as (_, client):
        dialect = make_dialect("v4", "4.4.19", page_size=50)
        node = (await nodes_of(client, dialect))[0].name
        with pytest.raises(WalkError) as failure:
            await walked(client, dialect, node, max_pages=2)
    assert failure.value.reason == "page_limit"


async def test_v5_fields_refused_are_asked_again_without_them_from_then_on() -> None:
    async with sim_api(SimSettings(api="v5", version="5.8.9", nodes=2,
                                   clients=200)) as (cluster, client):
        dialect = make_dialect("v5", "5.8.9", listing="page",
                               attrs=frozenset({"clientid", "node", "mqueue_len"}))
        assert "fields" in dict(dialect.list_request(None).params)
        refusal = cluster.faults.add("api_error", status=400, endpoint="GET /api/v5/clients",
                                     times=1)
        node = (await nodes_of(client, dialect))[0].name
        result, deliveries = await walked(client, dialect, node)
    assert {r.clientid for d in deliveries for r in d} == truth(cluster, node)
    assert "fields" not in dict(dialect.list_request(node).params)
    assert result.rows == len(truth(cluster, node)) and refusal.fired == 1


class _Recorded:
    """An `ApiClient` that notes each request as it is sent."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.sent: list[Request] = []

    async def send(self, request: Request, *, authorize: bool = True) -> Response:
        self.sent.append(request)
        return await self.client.send(request, authorize=authorize)


@pytest.mark.parametrize(("version", "listing", "endpoint"), [
    ("5.8.9", "cursor", "GET /api/v5/clients_v2"), ("5.3.2", "page", "GET /api/v5/clients")])
async def test_the_next_page_downloads_while_this_one_is_decoded(
        version: str, listing: ListingKind, endpoint: str) -> None:
    async with sim_api(SimSettings(version=version, nodes=1, clients=300)) as (cluster, client):
        dialect = make_dialect("v5", version, listing=listing, page_size=40)
        recorded = _Recorded(client)
        sent_by_decoding: list[int] = []

        async def offload(decode: Callable[[], Page]) -> Page:
            await asyncio.sleep(0)  # one turn of the loop: a download started ahead is sent
            sent_by_decoding.append(len(recorded.sent))
            return decode()

        deliveries: list[list[ClientRecord]] = []

        async def deliver(records: Sequence[ClientRecord]) -> None:
            deliveries.append(list(records))

        node = None if listing == "cursor" else cluster.node_names[0]
        result = await walk(cast(ApiClient, recorded), dialect, node, max_pages=100,
                            deliver=deliver, offload=offload)
        requests = cluster.requests[endpoint]
    pages = result.pages
    assert pages == 8 and sum(map(len, deliveries)) == 300  # 300 rows, 40 a page
    # Decoding page k, page k + 1 is on its way already; the last page has no next.
    assert sent_by_decoding == [*range(2, pages + 1), pages]
    assert requests == len(recorded.sent) == pages  # nothing asked twice or in vain


async def test_a_wrong_guess_of_the_next_page_is_dropped_and_the_right_one_asked() -> None:
    async with sim_api(SimSettings(version="5.8.9", nodes=1, clients=120)) as (cluster, client):
        dialect = make_dialect("v5", "5.8.9", listing="cursor", page_size=40)

        def wrong(response: Response, request: Request) -> Request | None:
            return with_param(request, "cursor", "not-a-cursor")  # EMQX answers 400

        dialect.guess_next = wrong  # type: ignore[method-assign]
        result, deliveries = await walked(client, dialect, None)
    assert sorted(r.clientid for d in deliveries for r in d) == sorted(
        truth(cluster, cluster.node_names[0]))
    assert result.pages == 3 + 1  # the last page is an empty one after a cursor (5.8.x)
