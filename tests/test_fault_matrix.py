"""Every fault of the matrix (emqx_simulator/matrix.py) against the daemon and `check`.

For each fault: the daemon serves; `up`, `node_up` and the reason are right; the other nodes
keep fresh data; aggregate counters never decrease; memory stays bounded; after the fault
clears, the next poll the back-off allows is complete.
"""

from __future__ import annotations

import json
import subprocess
import time
import tracemalloc
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from emqx_simulator import SimCluster, SimSettings
from emqx_simulator.matrix import CLIENTS, MATRIX, NODE, FaultCase
from exporter.cli import main
from exporter.errors import REASONS
from tests.exposition import Sample, samples_text
from tests.harness import Rig, per_client, rig, value
from tests.ports import free_port
from tests.test_cli import KEY, get, spawn, stop, threaded_sim, wait_for
from tests.test_cli import _restore_logging as _restore_logging  # autouse: main() reconfigures logs

ERRORS = "emqx_client_exporter_api_errors_total"
NODE_UP = "emqx_client_exporter_node_up"


def sim_for(case: FaultCase) -> SimSettings:
    # The lockout bites when the exporter's token must be renewed: tokens live 20 s here.
    ttl = 20.0 if case.special == "login_lockout" else 3600.0
    return SimSettings(version=case.version, nodes=3, clients=300, token_ttl=ttl)


def counters(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The aggregate counters (`emqx_clients_*_total`) by name and labels."""
    return {(n, labels): v for n, labels, v in samples
            if n.startswith("emqx_clients_") and n.endswith("_total")}


def assert_not_decreasing(before: dict[Any, float], after: dict[Any, float]) -> None:
    for key, old in before.items():
        if key in after:
            assert after[key] >= old, key


def truth(cluster: SimCluster, node: str | None = None) -> set[str]:
    return {str(r.get("clientid", r.get("client_id"))) for r in cluster.rows()
            if node is None or r["node"] == node}


async def stage(r: Rig, case: FaultCase) -> None:
    if case.special == "login_lockout":
        for _ in range(5):  # someone else mistypes the password five times
            async with r.client.session.post(f"{r.sim_url}/api/v5/login", json={
                    "username": "admin", "password": "typo"}) as answer:
                assert answer.status == 401
    else:
        assert case.rule is not None
        r.cluster.faults.add(**case.rule)


def clear(cluster: SimCluster) -> None:
    cluster.faults.clear()
    cluster.set_node_down(NODE, False)


def test_every_reason_is_defined() -> None:
    assert all(c.reason in REASONS for c in MATRIX if c.reason is not None)


@pytest.mark.parametrize("case", MATRIX, ids=[c.name for c in MATRIX])
async def test_fault_against_the_daemon(case: FaultCase) -> None:
    config = {"page_size": 100, **case.config}
    async with rig(sim_for(case), **config) as r:
        await r.poll()  # a good poll first: the baseline
        before = await r.scrape()
        assert value(before, "emqx_client_exporter_up") == 1
        old = counters(before)
        await stage(r, case)
        r.clock.advance(30)
        tracemalloc.start()
        try:
            (report,) = await r.exporter.poll_all_once()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # Bounded memory: a 300-client poll needs a few MB; the 200 MB body is never held.
        assert peak < 32 * 1024 * 1024, f"the poll held {peak} bytes at its peak"
        samples = await r.scrape()  # the daemon serves (scrape asserts 200)
        assert value(samples, "emqx_client_exporter_up") == (0 if case.scope == "cluster" else 1)
        counted = value(samples, ERRORS, reason=case.reason) if case.reason else None
        if case.reason is not None:
            assert counted is not None and counted >= 1, case.reason
        nodes = r.cluster.node_names
        if case.scope == "cluster":
            assert [value(samples, NODE_UP, node=n) for n in nodes] == [0] * len(nodes)
            assert report.error is not None and report.error.reason == case.reason
            assert per_client(samples, "emqx_client_online") == {}
        else:
            assert value(samples, NODE_UP, node=NODE) == (0 if case.scope == "node" else 1)
            for other in nodes:
                if other != NODE:
                    assert value(samples, NODE_UP, node=other) == 1
            lost = truth(r.cluster, NODE) if case.scope == "node" else set()
            assert set(per_client(samples, "emqx_client_online")) == truth(r.cluster) - lost
            assert value(samples, "emqx_client_exporter_snapshot_age_seconds") == 0
        assert_not_decreasing(old, counters(samples))

        clear(r.cluster)
        r.clock.advance(case.recovery)
        (report,) = await r.exporter.poll_all_once()
        assert report.ok and all(o.error is None for o in report.outcomes), report.error
        healed = await r.scrape()
        assert [value(healed, NODE_UP, node=n) for n in nodes] == [1] * len(nodes)
        assert set(per_client(healed, "emqx_client_online")) == truth(r.cluster)
        assert_not_decreasing(counters(samples) or old, counters(healed))


@pytest.mark.parametrize("case", MATRIX, ids=[c.name for c in MATRIX])
def test_check_against_the_fault(case: FaultCase, capsys: pytest.CaptureFixture[str]) -> None:
    # `check` takes the default `max_body_bytes` (64 MiB): the 200 MB body is refused too.
    flags = ["--timeout", str(case.config["timeout"])] if "timeout" in case.config else []
    with threaded_sim(sim_for(case)) as (cluster, url):
        if case.special == "login_lockout":
            auth = ["--username", "admin", "--password", "typo"]
            for _ in range(5):
                assert main(["check", "--emqx-url", url, *auth]) == 1
            capsys.readouterr()
        else:
            assert case.rule is not None
            cluster.faults.add(**case.rule)
        if case.config.get("username"):
            credentials = ["--username", "admin", "--password", "public"]
        else:
            credentials = list(KEY)
        code = main(["check", "--emqx-url", url, *credentials, *flags])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    failed = [line for line in captured.out.splitlines() if "FAILED" in line]
    if case.scope == "none":
        assert code == 0 and failed == [], captured.out
        return
    assert code == 1, captured.out
    assert len(failed) == 1, captured.out
    if case.reason is not None:
        assert f"[reason {case.reason}]" in failed[0]
    if case.scope == "cluster":
        assert captured.out.count("\n") == 1


def test_every_reason_in_the_code_is_defined() -> None:
    """Reasons are label values: one list (errors.REASONS), no free strings elsewhere."""
    import re
    from pathlib import Path

    patterns = (r'count_error\("(\w+)"', r'reason=(?:reason\()?"(\w+)"\)?[,)\s]',
                r'(?:DecodeError|WalkError)\([^,()]+,\s*"(\w+)"', r'return "(\w+)"')
    root = Path(__file__).parent.parent / "exporter"
    used: set[str] = set()
    for path in root.rglob("*.py"):
        if "simulator" in path.parts:
            continue
        source = path.read_text()
        for pattern in patterns[:3]:
            used.update(re.findall(pattern, source))
        if path.name == "errors.py":
            used.update(re.findall(patterns[3], source))
    assert used and used <= set(REASONS), used - set(REASONS)


def _metrics(url: str) -> list[Sample]:
    status, body = get(f"{url}/metrics")
    assert status == 200  # the daemon serves, whatever EMQX does
    return samples_text(body.decode())


def _until(url: str, process: subprocess.Popen[bytes], wanted: Callable[[list[Sample]], bool],
           what: str, seconds: float = 20.0) -> list[Sample]:
    """Scrape until `wanted` holds (bounded); fail early if the daemon died."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        samples = _metrics(url)
        if wanted(samples):
            return samples
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def _control(sim: str, method: str, body: dict[str, Any] | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{sim}/sim/faults", data=data, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
        assert answer.status in (201, 204)


def test_faults_switched_at_run_time_against_the_running_daemon() -> None:
    sim_port, port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    simulator = spawn("simulate", "--emqx-version", "5.6.2", "--nodes", "3", "--clients", "300",
                      "--listen", f"127.0.0.1:{sim_port}")
    daemon = None
    try:
        wait_for(f"{sim}/api/v5/nodes", simulator, Authorization="Basic ZXhwb3J0ZXI6c2VjcmV0")
        daemon = spawn("run", "--emqx-url", sim, *KEY, "--listen", f"127.0.0.1:{port}",
                       "--interval", "0.5", "--timeout", "2")
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/-/ready", daemon)
        nodes = ["emqx@10.0.0.1", "emqx@10.0.0.2", "emqx@10.0.0.3"]

        def node_up(samples: list[Sample]) -> list[float | None]:
            return [value(samples, NODE_UP, node=n) for n in nodes]

        def healthy(samples: list[Sample]) -> bool:
            return value(samples, "emqx_client_exporter_up") == 1 and node_up(samples) == [1] * 3

        _until(url, daemon, healthy, "healthy at start")
        for rule, reason, scope in (
                ({"kind": "http_error", "status": 503, "endpoint": "GET /api/v5/nodes"},
                 "server_error", "cluster"),
                ({"kind": "rate_limited", "delay": 1, "node": NODE, "endpoint": CLIENTS},
                 "rate_limited", "node"),
                ({"kind": "huge_body", "node": NODE, "endpoint": CLIENTS, "size": 80 * 2**20},
                 "body_too_large", "node")):
            counted = value(_metrics(url), ERRORS, reason=reason) or 0
            _control(sim, "POST", rule)
            expected = [0.0] * 3 if scope == "cluster" else [1.0, 0.0, 1.0]

            def failing(samples: list[Sample], counted: float = counted,
                        expected: list[float] = expected, reason: str = reason) -> bool:
                return ((value(samples, ERRORS, reason=reason) or 0) > counted
                        and node_up(samples) == expected)

            samples = _until(url, daemon, failing, f"{reason} reported")
            assert value(samples, "emqx_client_exporter_up") == (0 if scope == "cluster" else 1)
            _control(sim, "DELETE")
            _until(url, daemon, healthy, f"recovered from {reason}")
    finally:
        if daemon is not None:
            stop(daemon)
        stop(simulator)
