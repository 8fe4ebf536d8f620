"""Watch-only lookups: batched `clientid=` filters on 5.6+, one request per client before."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from emqx_simulator import SimCluster, SimSettings
from exporter.api import ApiClient
from exporter.dialects import Dialect, make_dialect
from exporter.lookup import (
    BATCH_MAX_SESSIONS,
    MAX_REQUEST_LINE,
    LookupResult,
    batches,
    look_up,
    use_batches,
)
from exporter.records import ClientRecord
from tests.harness import sim_api

MISSING = "no-such-client"
BATCH = "GET /api/v5/clients"
SINGLE = "GET /api/v5/clients/{clientid}"


def test_batches_keep_every_id_in_order_within_the_line_limit() -> None:
    ids = [f"sensor/{i:05d}/with a long name" for i in range(400)]
    base = 120
    split = list(batches(ids, base))
    assert len(split) > 1 and [i for batch in split for i in batch] == ids
    for batch in split:
        line = base + sum(len("&clientid=") + len(quote(i, safe="")) for i in batch)
        assert line <= MAX_REQUEST_LINE


def test_an_id_longer_than_the_limit_still_gets_its_own_batch() -> None:
    huge = "x" * (MAX_REQUEST_LINE + 1)
    assert list(batches(["a", huge, "b"], 100)) == [["a"], [huge], ["b"]]


def some_ids(cluster: SimCluster, count: int) -> list[str]:
    return [str(row["clientid"]) for row in list(cluster.rows())[:count]]


async def looked_up(client: ApiClient, dialect: Dialect,
                    ids: list[str]) -> tuple[LookupResult, set[str]]:
    found: list[ClientRecord] = []

    async def deliver(records: list[ClientRecord]) -> None:
        found.extend(records)

    result = await look_up(client, dialect, ids, deliver)
    return result, {r.clientid for r in found}


@pytest.mark.parametrize(("version", "batched"), [("5.8.9", True), ("5.5.1", False)])
async def test_watched_clients_are_found_and_a_missing_one_is_not_unknown(
        version: str, batched: bool) -> None:
    async with sim_api(SimSettings(version=version, nodes=2, clients=100)) as (cluster, client):
        ids = some_ids(cluster, 5)
        dialect = make_dialect("v5", version)
        assert (dialect.batch_lookup is not None) == batched
        result, found = await looked_up(client, dialect, [*ids, MISSING])
        requests = dict(cluster.requests)
    assert found == set(ids) and result.found == 5
    assert not result.unknown and not result.errors  # a missing client is offline, not unknown
    if batched:
        assert requests.get(BATCH) == 1 and SINGLE not in requests
    else:
        assert requests.get(SINGLE) == 6 and BATCH not in requests


@pytest.mark.parametrize("version", ["5.8.9", "5.5.1"])
async def test_a_failed_lookup_leaves_its_clients_unknown(version: str) -> None:
    async with sim_api(SimSettings(version=version, nodes=2, clients=100)) as (cluster, client):
        ids = some_ids(cluster, 3)
        cluster.faults.add("http_error", status=500,
                           endpoint=BATCH if version == "5.8.9" else SINGLE)
        result, found = await looked_up(client, make_dialect("v5", version), ids)
    assert found == set() and result.unknown == set(ids)
    assert {e.reason for e in result.errors} == {"server_error"}


async def test_v4_looks_each_client_up() -> None:
    async with sim_api(SimSettings(api="v4", nodes=2, clients=100)) as (cluster, client):
        ids = some_ids(cluster, 3)
        dialect = make_dialect("v4", "4.4.19")
        assert dialect.batch_lookup is None
        result, found = await looked_up(client, dialect, [*ids, MISSING])
    assert found == set(ids) and not result.unknown and result.requests == 4


def test_auto_batches_only_where_the_cluster_is_small() -> None:
    """`lookup: auto` (README "Cost to EMQX", measured by bench/emqx_cost.py on 5.8.9)."""
    batched = make_dialect("v5", "5.8.9").batch_lookup
    assert use_batches("auto", batched, BATCH_MAX_SESSIONS)
    assert not use_batches("auto", batched, BATCH_MAX_SESSIONS + 1)
    assert not use_batches("auto", batched, None)  # size unknown: the bounded cost
    assert use_batches("batched", batched, 10**6) and not use_batches("single", batched, 10)
    assert not use_batches("batched", make_dialect("v5", "5.5.1").batch_lookup, 10)
