"""Scale: the series cap holds on a 1M-client cluster (run with `pytest -m scale`)."""

from __future__ import annotations

import pytest

from emqx_simulator import SimSettings
from tests.harness import rig, value

pytestmark = pytest.mark.scale


async def test_cap_holds_under_a_million_clients() -> None:
    sim = SimSettings(clients=1_000_000, nodes=3)
    async with rig(sim, per_client={"max_series": 20_000}, timeout=120) as r:
        (report,) = await r.exporter.poll_all_once()
        assert report.ok and report.clients > 990_000
        samples = await r.scrape()
        per_client_series = value(samples, "emqx_client_exporter_series", kind="per_client")
        assert per_client_series is not None and 0 < per_client_series <= 20_000
        exported = {dict(labels)["clientid"] for name, labels, _ in samples
                    if name == "emqx_client_online"}
        assert len(exported) == 20_000 // 17
        dropped = value(samples, "emqx_client_exporter_series_dropped")
        assert dropped == (report.clients - len(exported)) * 17
        sessions = sum(v for name, _, v in samples if name == "emqx_clients_sessions")
        assert sessions == report.clients
