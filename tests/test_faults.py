"""Bad answers from EMQX: counted, logged once, other nodes kept, the daemon stays up."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from tests.harness import per_client, rig, value

NODE2 = "emqx@10.0.0.2"


def truth_ids(rows: Any, node: str | None = None) -> set[str]:
    return {r.get("clientid", r.get("client_id")) for r in rows
            if node is None or r["node"] == node}


@pytest.mark.parametrize(("api", "kind", "options", "reason"), [
    ("v5", "node_error", {}, "node_down"),
    ("v5", "http_error", {"status": 503}, "server_error"),
    ("v5", "malformed_json", {}, "bad_json"),
    ("v5", "html_error", {"status": 502}, "html_page"),
    ("v5", "truncated", {}, "truncated"),
    ("v5", "cut_json", {}, "bad_json"),
    ("v4", "api_error", {"code": 101, "message": "nodedown"}, "node_down"),
    ("v4", "api_error", {"code": 102, "message": "unknown"}, "api_error_code"),
    ("v4", "node_error", {}, "node_down"),
    ("v3", "malformed_json", {}, "bad_json"),
], ids=lambda x: x if isinstance(x, str) else "")
async def test_one_bad_node_keeps_the_others(api: str, kind: str, options: dict[str, Any],
                                            reason: str) -> None:
    version = {"v5": "5.6.2", "v4": "4.4.19", "v3": "3.2.8"}[api]
    sim = SimSettings(api=api, version=version, clients=900)  # type: ignore[arg-type]
    async with rig(sim, page_size=100) as r:
        # After the first page, so the walk fails midway: partial data must not be used.
        r.cluster.faults.add(kind, node=NODE2, after=1, **options)  # type: ignore[arg-type]
        with capture_logs() as logs:
            await r.poll()
        samples = await r.scrape()
        rows = list(r.cluster.rows())
        exported = set(per_client(samples, "emqx_client_online"))
        assert exported == truth_ids(rows) - truth_ids(rows, NODE2)
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0
        assert value(samples, "emqx_client_exporter_node_up", node="emqx@10.0.0.1") == 1
        assert value(samples, "emqx_client_exporter_up") == 1
        assert value(samples, "emqx_client_exporter_api_errors_total", reason=reason) == 1
        failures = [e for e in logs if e["event"] == "node_walk_failed"]
        assert len(failures) == 1 and failures[0]["node"] == NODE2
        assert failures[0]["reason"] == reason
        assert "secret" not in str(failures[0])
        # The fault is over: the next poll (one interval later) heals, and says so once.
        r.cluster.faults.clear()
        r.clock.advance(30)
        with capture_logs() as logs:
            await r.poll()
        assert value(await r.scrape(), "emqx_client_exporter_node_up", node=NODE2) == 1
        assert [e["event"] for e in logs if e["event"].startswith("node_walk")] == [
            "node_walk_recovered"]


async def test_repeated_failure_is_logged_once_and_counted_each_time() -> None:
    async with rig(SimSettings(version="5.6.2", clients=100)) as r:
        r.cluster.faults.add("node_error", node=NODE2, endpoint="GET /api/v5/clients")
        with capture_logs() as logs:
            for _ in range(3):
                await r.poll()
                r.clock.advance(30)  # the node's back-off never outlasts the interval
        assert len([e for e in logs if e["event"] == "node_walk_failed"]) == 1
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_api_errors_total", reason="node_down") == 3


@pytest.mark.parametrize(("kind", "reason"), [("unauthorized", "unauthorized"),
                                              ("forbidden", "forbidden")])
async def test_auth_failure_fails_the_poll(kind: str, reason: str) -> None:
    async with rig(SimSettings(clients=50)) as r:
        await r.poll()
        r.cluster.faults.add(kind)  # type: ignore[arg-type]
        with capture_logs() as logs:
            await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 0
        assert value(samples, "emqx_client_exporter_api_errors_total", reason=reason) == 1
        assert per_client(samples, "emqx_client_online") == {}
        (failure,) = [e for e in logs if e["event"] == "poll_failed"]
        assert "API key" in failure["error"] and "secret" not in failure["error"]


async def test_wrong_credentials_say_which_kind() -> None:
    async with rig(SimSettings(clients=10), api_secret="wrong") as r:
        (report,) = await r.exporter.poll_all_once()
        assert report.error is not None and report.error.reason == "unauthorized"
        assert "API key" in str(report.error) and "wrong" not in str(report.error)


async def test_duplicate_rows_dropped_and_counted() -> None:
    async with rig(SimSettings(version="5.6.2", clients=600), page_size=50) as r:
        # Pages 2 and 3 of one node repeat 5 rows of the page before.
        r.cluster.faults.add("duplicate_rows", node=NODE2, endpoint="GET /api/v5/clients",
                             after=1, times=2, rows=5)
        await r.poll()
        samples = await r.scrape()
        assert set(per_client(samples, "emqx_client_online")) == truth_ids(r.cluster.rows())
        assert value(samples, "emqx_client_exporter_duplicate_clients_total") == 10


async def test_bad_field_skips_only_that_value() -> None:
    async with rig(SimSettings(version="5.6.2", clients=300)) as r:
        target = "client-0000004"
        r.cluster.faults.add("bad_field", clientid=target, field="recv_oct", value="12x")
        with capture_logs() as logs:
            await r.poll()
        samples = await r.scrape()
        received = per_client(samples, "emqx_client_received_bytes_total")
        # (offline sessions have no socket counters: recorded, fixtures/recorded/*/..._offline)
        with_bytes = [row for row in r.cluster.rows() if "recv_oct" in row]
        assert target not in received and len(received) == len(truth_ids(with_bytes)) - 1
        assert target in per_client(samples, "emqx_client_sent_bytes_total")
        assert value(samples, "emqx_client_exporter_api_errors_total", reason="bad_value") == 1
        assert any(e["event"] == "bad_client_rows" for e in logs)


async def test_phantom_cursor_and_empty_last_page() -> None:
    async with rig(SimSettings(version="5.8.9", clients=400), page_size=100) as r:
        r.cluster.faults.add("phantom_cursor")
        (report,) = await r.exporter.poll_all_once()
        assert report.ok and report.dialect == "v5-cursor"
        assert set(per_client(await r.scrape(), "emqx_client_online")) == truth_ids(
            r.cluster.rows())


async def test_node_going_down_mid_walk() -> None:
    async with rig(SimSettings(version="5.6.2", clients=900), page_size=100) as r:
        r.cluster.faults.add("node_down", node=NODE2, after=1)
        await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0
        assert value(samples, "emqx_client_exporter_up") == 1


async def test_slow_api_hits_the_timeout_and_the_daemon_goes_on() -> None:
    async with rig(SimSettings(version="5.6.2", clients=90), timeout=0.2) as r:
        r.cluster.faults.add("latency", node=NODE2, delay=2.0, endpoint="GET /api/v5/clients")
        await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_api_errors_total", reason="timeout") == 1
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0
        assert value(samples, "emqx_client_exporter_api_requests_total", endpoint="clients",
                     code="timeout") == 1


async def test_unreachable_cluster() -> None:
    async with rig(SimSettings(clients=10), emqx_url="http://127.0.0.1:9") as r:
        (report,) = await r.exporter.poll_all_once()
        assert report.error is not None and report.error.reason == "unreachable"
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 0
