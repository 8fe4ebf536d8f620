"""A simulated EMQX HTTP API (v3, v4, v5/6) for tests, benchmarks and the demo.

Clients are derived from their index, so a million cost a few megabytes; counters advance with
the clock and restart on reconnect; every version's field names, envelopes, paging and errors
follow ``shared/emqx-api/REFERENCE.md``. Typical test use::

    clock = ManualClock()
    cluster = SimCluster(SimSettings(api="v5", version="5.8.9", clients=500), clock=clock)
    client = await aiohttp_client(build_sim_app(cluster))
    cluster.faults.add("http_error", status=503, endpoint="GET /api/v5/clients", after=2, times=1)
    clock.advance(15)
    expected = list(cluster.rows())  # what a full listing returns now

Fault kinds and their options are listed in ``faults.FaultKind``; ``/sim/...`` routes
(``control``) drive the same controls over HTTP.
"""

from emqx_simulator.app import build_sim_app, run_simulator, serving_simulator
from emqx_simulator.clock import ManualClock
from emqx_simulator.cluster import SimCluster
from emqx_simulator.faults import FaultKind, FaultRule, Faults
from emqx_simulator.settings import SimSettings

__all__ = [
    "FaultKind",
    "FaultRule",
    "Faults",
    "ManualClock",
    "SimCluster",
    "SimSettings",
    "build_sim_app",
    "run_simulator",
    "serving_simulator",
]
