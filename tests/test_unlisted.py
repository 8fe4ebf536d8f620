"""Rows EMQX says exist but that never arrived are counted per node, never silently missing
while `up` is 1 (issue 18, 5): `emqx_client_exporter_clients_unlisted{node}`."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from tests.harness import Rig, rig, value

NODES = ("emqx@10.0.0.1", "emqx@10.0.0.2", "emqx@10.0.0.3")
UNLISTED = "emqx_client_exporter_clients_unlisted"
LISTED = "emqx_client_exporter_clients_listed"

#: Each listing mode, with what EMQX reports to compare against: a page listing's count
#: (v3/v4 per node, v5 `meta.count`), or for cursor listing (no total) `/nodes` sessions.
MODES = [
    pytest.param(SimSettings(version="5.8.9", clients=600), {}, "GET /api/v5/clients_v2",
                 id="v5-cursor"),
    pytest.param(SimSettings(version="5.6.2", clients=600), {}, "GET /api/v5/clients",
                 id="v5-page"),
    pytest.param(SimSettings(api="v4", version="4.4.19", clients=600), {}, None, id="v4"),
    pytest.param(SimSettings(api="v3", version="3.2.8", clients=600), {}, None, id="v3"),
]


def truth(r: Rig, node: str) -> int:
    return sum(1 for row in r.cluster.rows() if row["node"] == node)


@pytest.mark.parametrize(("sim", "config", "endpoint"), MODES)
async def test_skipped_rows_are_counted_per_node(sim: SimSettings, config: dict[str, Any],
                                                 endpoint: str | None) -> None:
    async with rig(sim, page_size=50, **config) as r:
        # Offset drift: every page starts 20 rows late, and those rows never arrive.
        r.cluster.faults.add("skip_rows", rows=20, endpoint=endpoint)
        with capture_logs() as logs:
            await r.poll()
            r.clock.advance(30)
            await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 1
        for node in NODES:
            listed = value(samples, LISTED, node=node)
            assert listed is not None and 0 < listed < truth(r, node)
            assert value(samples, UNLISTED, node=node) == truth(r, node) - listed
        incomplete = [e for e in logs if e["event"] == "listing_incomplete"]
        assert len(incomplete) == 1, incomplete  # once on change, not every poll
        assert incomplete[0]["unlisted"] == {n: truth(r, n) - (value(samples, LISTED, node=n)
                                                                or 0) for n in NODES}
        page = await (await r.client.get("/")).text()
        assert "rows EMQX reported but never listed" in page
        # The fault is over: 0, said once.
        r.cluster.faults.clear()
        r.clock.advance(30)
        with capture_logs() as logs:
            await r.poll()
        samples = await r.scrape()
        assert [value(samples, UNLISTED, node=n) for n in NODES] == [0, 0, 0]
        assert [e["event"] for e in logs if e["event"].startswith("listing_")] == [
            "listing_complete"]


@pytest.mark.parametrize(("sim", "config", "endpoint"), MODES)
async def test_a_clean_walk_leaves_nothing_unlisted(sim: SimSettings, config: dict[str, Any],
                                                    endpoint: str | None) -> None:
    async with rig(sim, page_size=50, **config) as r:
        with capture_logs() as logs:
            await r.poll()
        samples = await r.scrape()
        assert [value(samples, UNLISTED, node=n) for n in NODES] == [0, 0, 0]
        assert not [e for e in logs if e["event"].startswith("listing_")]


@pytest.mark.parametrize(("sim", "config"), [
    # v4 says count -1 with any filter; v5 leaves count out with a fuzzy one; and /nodes
    # totals are not filtered, so a filtered cursor walk has nothing to compare with.
    pytest.param(SimSettings(api="v4", version="4.4.19", clients=300),
                 {"filters": {"username": "user-1"}}, id="v4-filtered"),
    pytest.param(SimSettings(version="5.6.2", clients=300),
                 {"filters": {"like_clientid": "client-00001"}}, id="v5-page-fuzzy"),
    pytest.param(SimSettings(version="5.8.9", clients=300),
                 {"filters": {"conn_state": "connected"}}, id="v5-cursor-filtered"),
    pytest.param(SimSettings(version="5.8.9", clients=300),
                 {"per_client": {"watch": ["client-0000001"], "watch_only": True}},
                 id="watch-only"),
])
async def test_no_count_to_compare_leaves_the_gauge_absent(sim: SimSettings,
                                                           config: dict[str, Any]) -> None:
    async with rig(sim, **config) as r:
        await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 1
        assert not [s for s in samples if s[0] == UNLISTED]


async def test_a_failed_node_has_no_unlisted_figure() -> None:
    async with rig(SimSettings(version="5.6.2", clients=300)) as r:
        r.cluster.faults.add("node_error", node=NODES[1], endpoint="GET /api/v5/clients")
        await r.poll()
        samples = await r.scrape()
        assert value(samples, UNLISTED, node=NODES[0]) == 0
        assert value(samples, UNLISTED, node=NODES[1]) is None
