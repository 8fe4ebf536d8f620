"""Cardinality control end to end: watch list, allow/deny, classes, top-K, cap, and
reconnect-aware aggregate counters, against the simulator's churn and kicks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emqx_simulator import SimSettings
from tests.exposition import Sample
from tests.harness import per_client, rig, value

V56 = "5.6.2"  # page listing with clientid filters


def ids(samples: list[Sample], name: str = "emqx_client_online") -> set[str]:
    return set(per_client(samples, name))


def total(samples: list[Sample], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for n, got, v in samples if n == name and want <= set(got))


async def test_watch_list_present_absent_and_last_seen(tmp_path: Path) -> None:
    state_file = tmp_path / "last-seen.json"
    watch = ["client-0000001", "client-0000002", "no-such-client"]
    config: dict[str, Any] = {"per_client": {"watch": watch, "state_file": str(state_file)}}
    async with rig(SimSettings(clients=300, offline_sessions=0.0, churn=0.0), **config) as r:
        await r.poll()
        samples = await r.scrape()
        assert ids(samples) == set(watch)  # only the watched clients get series
        online = per_client(samples, "emqx_client_online")
        assert online == {"client-0000001": 1, "client-0000002": 1, "no-such-client": 0}
        seen = per_client(samples, "emqx_client_last_seen_timestamp_seconds")
        assert seen == {"client-0000001": r.clock(), "client-0000002": r.clock()}
        first_seen = r.clock()
        # kicked: offline, last seen kept
        r.cluster.kick("client-0000002")
        r.clock.advance(30)
        await r.poll()
        samples = await r.scrape()
        assert per_client(samples, "emqx_client_online")["client-0000002"] == 0
        assert per_client(samples, "emqx_client_last_seen_timestamp_seconds")[
            "client-0000002"] == first_seen
        saved = json.loads(state_file.read_text())
        assert saved[r.sim_url]["client-0000002"] == first_seen
    # a restarted exporter remembers when the kicked client was last seen
    async with rig(SimSettings(clients=300), **config) as again:
        again.cluster.kick("client-0000002")
        await again.poll()
        samples = await again.scrape()
        # the new simulator has a new URL: the file's section for it is empty
        assert "client-0000002" not in per_client(samples,
                                                  "emqx_client_last_seen_timestamp_seconds")


async def test_last_seen_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    config: dict[str, Any] = {"per_client": {"watch": ["client-0000005"],
                                             "state_file": str(state_file)}}
    async with rig(SimSettings(clients=50, offline_sessions=0.0, churn=0.0), **config) as r:
        await r.poll()
        when = r.clock()
        r.cluster.kick("client-0000005")
        # the same cluster URL after a restart of the exporter process
        from exporter.config import load_settings
        from exporter.service import Exporter

        flags: dict[str, Any] = {"emqx_url": r.sim_url, "api_key": "exporter",
                                 "api_secret": "secret", **config}
        restarted = Exporter(load_settings(flags, {}, None), clock=r.clock)
        try:
            r.clock.advance(60)
            await restarted.poll_all_once()
            text = restarted.snapshot.text()
        finally:
            await restarted.stop()
        line = f'emqx_client_last_seen_timestamp_seconds{{clientid="client-0000005"}} {when}'
        assert line in text
        assert 'emqx_client_online{clientid="client-0000005"} 0' in text


async def test_watch_only_looks_clients_up_without_walking() -> None:
    watch = [f"client-{i:07d}" for i in range(0, 200_000, 200)]  # 1000 ids
    sim = SimSettings(version=V56, clients=200_000, offline_sessions=0.0, churn=0.0)
    async with rig(sim, per_client={"watch": watch, "watch_only": True, "lookup": "batched",
                                    "max_series": 1_000_000}) as r:
        await r.poll()
        samples = await r.scrape()
        assert ids(samples) == set(watch)
        requests = r.cluster.requests
        lookups = sum(v for k, v in requests.items() if k.startswith("GET /api/v5/clients"))
        # ~21 bytes per id in the query: 1000 ids fit in a handful of 4 KiB request lines
        assert 4 <= lookups <= 8, requests
        assert sum(requests.values()) == lookups + 1  # plus one GET /nodes
        # aggregates come from /nodes in this mode
        assert total(samples, "emqx_clients_online") > 0


@pytest.mark.parametrize(("clients", "batched"), [(3000, True), (9000, False)])
async def test_watch_only_batches_by_default_only_on_small_clusters(
        clients: int, batched: bool) -> None:
    """`lookup: auto` (the default): a batched `clientid=` request scans EMQX's whole channel
    table, a single GET does not; measured on the real 5.8.9 (bench/emqx_cost.py,
    docs/performance.md "Cost to EMQX"), 100 ids cost EMQX less batched at 3000 sessions, one
    by one at 9000."""
    watch = [f"client-{i:07d}" for i in range(100)]
    sim = SimSettings(version=V56, nodes=1, clients=clients, offline_sessions=0.0, churn=0.0)
    async with rig(sim, per_client={"watch": watch, "watch_only": True}) as r:
        await r.poll()
        assert ids(await r.scrape()) == set(watch)
        requests = r.cluster.requests
        singles = requests.get("GET /api/v5/clients/{clientid}", 0)
        batches = requests.get("GET /api/v5/clients", 0)
        assert (singles, batches) == ((0, 1) if batched else (100, 0)), requests


async def test_watch_only_on_old_versions_uses_single_lookups() -> None:
    watch = ["client-0000003", "client-0000004", "ghost"]
    async with rig(SimSettings(version="5.4.1", clients=5000), per_client={
            "watch": watch, "watch_only": True}) as r:
        await r.poll()
        samples = await r.scrape()
        assert per_client(samples, "emqx_client_online")["ghost"] == 0
        assert r.cluster.requests["GET /api/v5/clients/{clientid}"] == 3
        assert r.cluster.requests.get("GET /api/v5/clients", 0) == 0


async def test_allow_and_deny() -> None:
    config = {"per_client": {"allow": ["client-00000[0-4].*", {"username": "nobody"}],
                             "deny": ["client-0000003"]}}
    async with rig(SimSettings(clients=120), **config) as r:
        await r.poll()
        exported = ids(await r.scrape())
        expected = {row["clientid"] for row in r.cluster.rows()
                    if row["clientid"] < "client-0000050" and row["clientid"] != "client-0000003"}
        assert exported == expected


async def test_classes_label_the_aggregates() -> None:
    sim = SimSettings(clients=600, class_prefixes=True)
    config: dict[str, Any] = {"classes": [{"name": "sensors", "clientid": "sensor-.*"},
                                          {"name": "gateways", "clientid": "gateway-.*"}]}
    async with rig(sim, **config) as r:
        await r.poll()
        samples = await r.scrape()
        rows = list(r.cluster.rows())
        for name, prefix in (("sensors", "sensor-"), ("gateways", "gateway-"), ("other", "app-")):
            expected = sum(1 for row in rows if row["clientid"].startswith(prefix))
            assert total(samples, "emqx_clients_sessions", **{"class": name}) == expected


async def test_top_k_follows_a_filling_queue() -> None:
    config = {"per_client": {"top_k": {"mqueue_fill": 3}}}
    sim = SimSettings(clients=400, offline_sessions=0.0, churn=0.0)
    async with rig(sim, **config) as r:
        for row in r.cluster.rows():  # a quiet cluster: no queue anywhere
            r.cluster.patch(row["clientid"], mqueue_len=0)
        await r.poll()
        assert ids(await r.scrape()) == set()
        r.cluster.patch("client-0000042", mqueue_len=950, mqueue_max=1000)
        r.cluster.patch("client-0000043", mqueue_len=500, mqueue_max=1000)
        r.clock.advance(30)
        await r.poll()
        samples = await r.scrape()
        assert ids(samples) == {"client-0000042", "client-0000043"}
        assert per_client(samples, "emqx_client_mqueue_messages")["client-0000042"] == 950
        r.cluster.patch("client-0000042", mqueue_len=0)
        r.cluster.patch("client-0000043", mqueue_len=0)
        for i in range(100, 104):
            r.cluster.patch(f"client-{i:07d}", mqueue_len=900 + i, mqueue_max=1000)
        r.clock.advance(30)
        await r.poll()
        assert ids(await r.scrape()) == {f"client-{i:07d}" for i in range(101, 104)}


async def test_cap_holds_and_reports_what_it_left_out() -> None:
    # default parts: 17 series per client at most, so 170 series is room for 10 clients
    async with rig(SimSettings(clients=500), per_client={"max_series": 170,
                                                         "watch": ["client-0000499"]}) as r:
        await r.poll()
        samples = await r.scrape()
        # Without allow or top-K only the watch list is exported: one client, well in the cap.
        assert ids(samples) == {"client-0000499"}
        assert value(samples, "emqx_client_exporter_series_dropped") == 0
    config = {"per_client": {"max_series": 170, "allow": [".*"], "watch": ["client-0000499"],
                             "top_k": {"byte_rate": 2}}}
    async with rig(SimSettings(clients=500, offline_sessions=0.0), **config) as r:
        await r.poll()
        samples = await r.scrape()
        exported = ids(samples)
        series = value(samples, "emqx_client_exporter_series", kind="per_client")
        assert series is not None and series <= 170
        assert "client-0000499" in exported  # the watch list comes first
        assert len(exported) == 10
        dropped = value(samples, "emqx_client_exporter_series_dropped")
        assert dropped == (len(list(r.cluster.rows())) - 10) * 17


async def test_aggregate_counters_stay_monotonic_through_churn_and_kicks() -> None:
    sim = SimSettings(clients=400, churn=0.5, offline_sessions=0.05)
    families = ("emqx_clients_received_bytes_total", "emqx_clients_sent_bytes_total",
                "emqx_clients_received_messages_total", "emqx_clients_sent_messages_total",
                "emqx_clients_dropped_messages_total", "emqx_clients_mqueue_dropped_messages_total",
                "emqx_clients_connects_total")
    async with rig(SimSettings(**{**sim.__dict__, "churn": 0.5})) as r:
        await r.poll()
        previous = {f: total(await r.scrape(), f) for f in families}
        kicked = [row["clientid"] for row in list(r.cluster.rows())[:40]]
        for step in range(6):
            r.clock.advance(200)
            for clientid in kicked[step::6]:
                r.cluster.kick(clientid)
            r.cluster.reconnect(f"client-{step + 100:07d}")
            await r.poll()
            samples = await r.scrape()
            current = {f: total(samples, f) for f in families}
            for f in families:
                assert current[f] >= previous[f], (f, step)
            assert current["emqx_clients_connects_total"] > previous["emqx_clients_connects_total"]
            previous = current
        assert previous["emqx_clients_received_bytes_total"] > 0
        # the kicked clients' series are gone
        assert not ids(samples) & set(kicked)


async def test_counter_totals_equal_the_traffic_seen() -> None:
    """Sum of per-client increases: with no churn, the aggregate grows by exactly the
    per-client growth; a reconnect adds the new connection's full value."""
    sim = SimSettings(clients=200, churn=0.0, offline_sessions=0.0)
    async with rig(sim) as r:
        await r.poll()
        before = await r.scrape()
        r.clock.advance(60)
        r.cluster.reconnect("client-0000009")
        r.clock.advance(5)
        await r.poll()
        after = await r.scrape()
        old = per_client(before, "emqx_client_received_bytes_total")
        new = per_client(after, "emqx_client_received_bytes_total")
        growth = sum(new[c] - old[c] for c in new if c != "client-0000009")
        growth += new["client-0000009"]
        assert total(after, "emqx_clients_received_bytes_total") - total(
            before, "emqx_clients_received_bytes_total") == growth
        assert total(after, "emqx_clients_connects_total") - total(
            before, "emqx_clients_connects_total") == 1


async def test_saturation_gauges() -> None:
    sim = SimSettings(clients=100, offline_sessions=0.0, churn=0.0)
    async with rig(sim, aggregate={"saturation": 0.5}) as r:
        for row in r.cluster.rows():
            r.cluster.patch(row["clientid"], mqueue_len=0, inflight_cnt=0)
        r.cluster.patch("client-0000001", mqueue_len=600, mqueue_max=1000)
        r.cluster.patch("client-0000002", mqueue_len=400, mqueue_max=1000)
        r.cluster.patch("client-0000003", inflight_cnt=32, inflight_max=32)
        await r.poll()
        samples = await r.scrape()
        assert total(samples, "emqx_clients_mqueue_saturated") == 1
        assert total(samples, "emqx_clients_inflight_saturated") == 1
        assert total(samples, "emqx_clients_mqueue_messages") == 1000


async def test_filters_are_pushed_down() -> None:
    async with rig(SimSettings(version=V56, clients=300),
                   filters={"username": "sensor-4", "conn_state": "connected"}) as r:
        await r.poll()
        samples = await r.scrape()
        assert r.cluster.requests["GET /api/v5/clients"] >= 3  # one listing per node at least
        rows = [row for row in r.cluster.rows()
                if row["username"] == "sensor-4" and row["connected"]]
        assert 0 < len(rows) < 300
        assert ids(samples) == {row["clientid"] for row in rows}
        # EMQX filtered: only the matching rows came over the wire, not all 300.
        assert total(samples, "emqx_client_exporter_clients_listed") == len(rows)


async def test_a_failed_first_poll_does_not_count_every_client_as_a_connect() -> None:
    async with rig(SimSettings(clients=200, churn=0.0)) as r:
        r.cluster.faults.add("unauthorized", times=1)
        (failed,) = await r.exporter.poll_all_once()
        assert not failed.ok
        await r.poll()
        assert total(await r.scrape(), "emqx_clients_connects_total") == 0
