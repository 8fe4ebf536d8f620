"""With no selection configured and more clients than the cap allows, the worst get series."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from exporter.aggregate import AggregateSettings, Classifier
from exporter.cli import main
from exporter.config import PerClientSettings
from exporter.pipeline import Pipeline, PipelineResult, series_per_client
from exporter.records import ClientRecord, record_type
from exporter.selection import SelectionSettings
from exporter.snapshot import compose
from exporter.timeparse import TimeParser
from tests.exposition import samples_text
from tests.harness import per_client
from tests.test_cli import KEY, _restore_logging, threaded_sim  # noqa: F401 (autouse)

V5 = record_type("v5")
NODE = "emqx@127.0.0.1"
PER_CLIENT = PerClientSettings()
SERIES = series_per_client(PER_CLIENT.parts)


def client(clientid: str, **fields: Any) -> ClientRecord:
    values: dict[str, Any] = {"node": NODE, "connected": True,
                              "connected_at": "2026-01-01T00:00:00Z", "mqueue_len": 0,
                              "mqueue_max": 100, "inflight": 0, "inflight_max": 32,
                              "received_bytes": 0, "sent_bytes": 0, "sent_dropped": 0}
    values.update(fields)
    return V5(clientid=clientid, **values)


def pipeline(cap_clients: int, **selection: Any) -> Pipeline:
    return Pipeline(PER_CLIENT, AggregateSettings(), Classifier([]), TimeParser(ZoneInfo("UTC")),
                    selection=SelectionSettings(max_series=cap_clients * SERIES, **selection))


def poll(p: Pipeline, now: float, records: list[ClientRecord],
         page: int = 7) -> tuple[PipelineResult, set[str]]:
    run = p.start_walk(now)
    for start in range(0, len(records), page):
        run.add_page(None, records[start:start + page])
    result = run.finish([NODE])
    text = compose([result.rendered], now).text()
    return result, set(per_client(samples_text(text), "emqx_client_online"))


def fleet(worst: dict[str, int], size: int = 30) -> list[ClientRecord]:
    """`size` clients listed with the named ones last; `worst` gives their queue length."""
    calm = [client(f"calm-{i:02d}") for i in range(size - len(worst))]
    return calm + [client(cid, mqueue_len=n) for cid, n in worst.items()]


def test_the_cap_keeps_the_worst_clients_not_the_first_listed() -> None:
    p = pipeline(cap_clients=3)
    worst = {"full": 100, "half": 50, "some": 10}
    with capture_logs() as logs:
        result, exported = poll(p, 1000.0, fleet(worst))
    # The cap starts binding in this very poll: what streamed first is ranked too.
    assert exported == set(worst)
    summary = result.selection
    assert summary is not None
    assert (summary.mode, summary.listed, summary.exported, summary.left_out) == (
        "default ranking", 30, 3, 27)
    assert [r.clientid for r in summary.top["default"]] == ["full", "half", "some"]
    assert result.series_dropped == 27 * SERIES
    binding = [e for e in logs if e["event"] == "per_client_cap_binding"]
    assert len(binding) == 1 and binding[0]["left_out"] == 27
    assert "per_client.top_k" in binding[0]["hint"]
    # The next poll ranks without streaming first; same clients, and no second log line.
    with capture_logs() as logs:
        _, exported = poll(p, 1010.0, fleet(worst))
    assert exported == set(worst) and not logs


def test_drop_rate_and_traffic_break_ties_after_the_fills() -> None:
    p = pipeline(cap_clients=2, hysteresis=0.0)  # no former members kept in this one
    poll(p, 1000.0, fleet({}, size=10))
    records = fleet({}, size=10)
    records[2] = client("calm-02", sent_dropped=50)  # 5 drops/s
    records[5] = client("calm-05", received_bytes=10_000)  # traffic only
    records[7] = client("calm-07", inflight=16)  # half its inflight window
    result, exported = poll(p, 1010.0, records)
    assert result.selection is not None
    assert [r.clientid for r in result.selection.top["default"]] == ["calm-02", "calm-07"]
    assert exported == {"calm-02", "calm-07"}


def test_members_stay_while_within_the_hysteresis_band() -> None:
    p = pipeline(cap_clients=2, hysteresis=0.5)  # members stay within rank 3
    poll(p, 1000.0, fleet({"a": 90, "b": 80, "c": 70}))
    _, exported = poll(p, 1010.0, fleet({"a": 90, "b": 80, "c": 85}))
    assert exported == {"a", "b"}  # c overtook b, but b is still within the band
    _, exported = poll(p, 1020.0, fleet({"a": 90, "b": 1, "c": 85, "d": 84, "e": 83}))
    assert exported == {"a", "c"}


def test_the_cap_stops_binding_when_the_fleet_shrinks() -> None:
    p = pipeline(cap_clients=5)
    poll(p, 1000.0, fleet({"x": 10}, size=8))
    with capture_logs() as logs:
        result, exported = poll(p, 1010.0, fleet({"x": 10}, size=4))
    assert len(exported) == 4 and result.selection is not None
    assert result.selection.left_out == 0 and result.selection.mode == "all"
    assert [e["event"] for e in logs] == ["per_client_cap_released"]
    # Below the cap nothing is ranked: every client streams as before.
    _, exported = poll(p, 1020.0, fleet({"x": 10}, size=5))
    assert len(exported) == 5


def test_a_configured_selection_is_never_replaced_by_the_default() -> None:
    p = pipeline(cap_clients=2, top_k=(("mqueue_fill", 1),))
    result, exported = poll(p, 1000.0, fleet({"a": 50, "b": 60}))
    assert exported == {"b"}
    assert result.selection is not None and result.selection.mode == "configured"
    assert result.selection.left_out == 0 and "default" not in result.selection.top


def test_check_says_who_was_left_out_and_what_to_configure(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"per_client:\n  max_series: {10 * SERIES}\n")
    with threaded_sim(SimSettings(clients=120)) as (_, url):
        assert main(["check", "--config", str(config), "--emqx-url", url, *KEY]) == 0
    out = capsys.readouterr().out
    assert "  per-client series for 10 of 120 clients listed" in out
    assert (f"  110 clients left out by the cap (per_client.max_series {10 * SERIES} / "
            f"{SERIES} series per client = 10 clients); chosen by the default ranking") in out
    assert "  to change this: choose clients with per_client.watch" in out
