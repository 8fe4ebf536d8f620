"""End to end: faults drive the generated alerts to firing in a real Prometheus, and the
Alertmanager inhibitions hold in a real Alertmanager.

simulator (this event loop) -> exporter (subprocess) -> Prometheus (1 s scrapes and rule
evaluations, the rules of deploy/generate_rules.py with `for: 2s`) -> Alertmanager (the
generated configuration). Faults, in order: a reconnect loop of one client, a reconnect burst
of a class, a node stopped, EMQX unreachable, the exporter killed. After each, the expected
alerts must fire in Prometheus, alerts that fired before must stay firing while their data is
gone, and Alertmanager must show the client alerts inhibited by the alert naming the cause.

The drill of issue 18 (``test_drill_two_shards``): two exporters in one job, each a shard of
one cluster, as the shipped StatefulSet runs them. A 500 on one node's client listing
(`listing: page`) must not page as a client drop, neither while it lasts nor on recovery; one
exporter killed (kill -9) inhibits only its own alerts; restarted after the rate window has
emptied, its rate alert must not resolve. The alert timeline it prints (``-s``) is the one the
closing note quotes.

Marked ``prometheus``: skipped locally without the Debian packages prometheus and
prometheus-alertmanager, required in CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp import web

from emqx_simulator import SimCluster, SimSettings, build_sim_app
from tests.conftest import require_tool
from tests.ports import free_port
from tests.prometheus_server import (
    Alertmanager,
    Prometheus,
    alertmanager_server,
    prometheus_server,
    running,
    tail,
    wait_http_ok,
)
from tests.test_rules import GENERATOR, ROOT

JOB = "emqx-client-exporter"
CLUSTER = "sim"
#: Seconds for the whole run, start-up included.
BUDGET_SECONDS = 150.0
SIM = SimSettings(api="v5", nodes=3, clients=600, seed=7, class_prefixes=True)
#: Simulated seconds per real second; the simulated clock stays behind real time for HORIZON s.
SPEEDUP = 5.0
HORIZON = 400.0
#: A watched client id EMQX does not know: EMQXWatchedClientOffline fires for it.
MISSING_CLIENT = "gateway-9999999"
#: Clients reconnected at once for the storm.
BURST = 40
#: Short `for:` and small thresholds so that a few seconds of faults fire the alerts.
RULE_SETTINGS: dict[str, Any] = {
    "for_override": "2s",
    "storm_keep_firing_for": "5m",
    "thresholds": {"storm_min": 20, "storm_ratio": 0.05, "client_reconnects": 3},
}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_rules", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def clock() -> Callable[[], float]:
    origin = time.time()
    start = origin - SPEEDUP * HORIZON
    return lambda: start + (time.time() - origin) * SPEEDUP


def exporter_config(sim_url: str, port: int, watch: list[str]) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "interval": 1,
        "timeout": 2,
        "retries": 0,
        "clusters": [{"name": CLUSTER, "emqx_url": sim_url, "api_key": SIM.api_key,
                      "api_secret": SIM.api_secret}],
        "classes": [{"name": "sensors", "clientid": "sensor-.*"},
                    {"name": "gateways", "clientid": "gateway-.*"}],
        "aggregate": {"labels": ["node", "class"]},
        "per_client": {"watch": watch, "top_k": {"mqueue_fill": 5}},
    }


def prometheus_config(rules_dir: Path, exporter: str, alertmanager: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_dir / "prometheus" / "recording.yml"),
                       str(rules_dir / "prometheus" / "alerts.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": JOB, "honor_labels": True,
                            "static_configs": [{"targets": [exporter]}]}],
    }


class Timeline:
    """Every change of every alert's state, in Prometheus (pending, firing, gone) and in
    Alertmanager (active, suppressed by ..., gone), with the faults between them; seconds
    from the start. Sampled every 0.25 s in the background, for the record only."""

    def __init__(self, prom: Prometheus, am: Alertmanager, keys: tuple[str, ...]) -> None:
        self.prom = prom
        self.am = am
        self.keys = keys
        self.start = time.monotonic()
        self.lines: list[str] = []
        self.states: dict[str, str] = {}

    def _t(self) -> str:
        return f"{time.monotonic() - self.start:6.1f}s"

    def mark(self, text: str) -> None:
        self.lines.append(f"{self._t()}  --- {text}")

    def _name(self, labels: dict[str, str]) -> str:
        extra = ", ".join(f"{k}={labels[k]}" for k in self.keys if k in labels)
        return f"{labels['alertname']}{{{extra}}}"

    async def sample(self) -> None:
        now: dict[str, str] = {}
        for alert in (await self.prom.api("alerts"))["alerts"]:
            now["prometheus " + self._name(alert["labels"])] = alert["state"]
        alerts = await self.am.alerts()
        names = {a["fingerprint"]: a["labels"]["alertname"] for a in alerts}
        for alert in alerts:
            state = alert["status"]["state"]
            if state == "suppressed":
                by = sorted({names.get(f, "?") for f in alert["status"]["inhibitedBy"]})
                state = f"suppressed by {', '.join(by)}" if by else "suppressed (silence)"
            now["alertmanager " + self._name(alert["labels"])] = state
        for key in sorted(now.keys() | self.states.keys()):
            state = now.get(key, "resolved")
            if self.states.get(key, "resolved") != state:
                self.lines.append(f"{self._t()}  {key}: {state}")
        self.states = now

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a server going away ends nothing
                await self.sample()
            await asyncio.sleep(0.25)

    def text(self) -> str:
        return "\n".join(self.lines)


class Watch:
    """Waits, with one deadline, on Prometheus' alerts and Alertmanager's view of them."""

    def __init__(self, prom: Prometheus, am: Alertmanager, deadline: float) -> None:
        self.prom = prom
        self.am = am
        self.deadline = deadline

    async def _until(self, what: str, probe: Callable[[], Any]) -> Any:
        last: Any = None
        while True:
            last = await probe()
            if last:
                return last
            if time.monotonic() > self.deadline:
                alerts = [(a["labels"]["alertname"], a["state"])
                          for a in (await self.prom.api("alerts"))["alerts"]]
                raise AssertionError(f"{what}: not in time; Prometheus alerts: {alerts}\n"
                                     f"{tail(self.prom.log, 15)}")
            await asyncio.sleep(0.5)

    async def query_at_least(self, expr: str, value: float) -> None:
        async def probe() -> bool:
            result = await self.prom.query(expr)
            return bool(result) and float(result[0]["value"][1]) >= value
        await self._until(f"{expr} >= {value}", probe)

    async def firing(self, name: str, **labels: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            for alert in (await self.prom.api("alerts"))["alerts"]:
                if (alert["labels"]["alertname"] == name and alert["state"] == "firing"
                        and labels.items() <= alert["labels"].items()):
                    return dict(alert)
            return None
        found: dict[str, Any] = await self._until(f"{name} {labels} firing", probe)
        return found

    async def inhibited(self, name: str, by: str, **labels: str) -> None:
        """``name`` is suppressed in Alertmanager, and among its inhibitors is alert ``by``."""
        async def probe() -> bool:
            alerts = await self.am.alerts()
            sources = {a["fingerprint"] for a in alerts if a["labels"]["alertname"] == by}
            return any(a["labels"]["alertname"] == name
                       and labels.items() <= a["labels"].items()
                       and a["status"]["state"] == "suppressed"
                       and sources & set(a["status"]["inhibitedBy"]) for a in alerts)
        await self._until(f"{name} {labels} inhibited by {by} in Alertmanager", probe)

    async def active_in_alertmanager(self, name: str, **labels: str) -> None:
        async def probe() -> bool:
            return any(a["labels"]["alertname"] == name and a["status"]["state"] == "active"
                       and labels.items() <= a["labels"].items() for a in await self.am.alerts())
        await self._until(f"{name} {labels} active in Alertmanager", probe)

    async def until_query(self, what: str, expr: str) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns something."""
        async def probe() -> list[dict[str, Any]]:
            return await self.prom.query(expr)
        found: list[dict[str, Any]] = await self._until(what, probe)
        return found

    async def until_empty(self, what: str, expr: str) -> None:
        """Wait until ``expr`` returns nothing."""
        async def probe() -> bool:
            return not await self.prom.query(expr)
        await self._until(what, probe)


@pytest.mark.prometheus
async def test_faults_fire_alerts_and_alertmanager_inhibits_client_alerts(tmp_path: Path) -> None:
    prometheus_binary = require_tool("prometheus")
    alertmanager_binary = require_tool("prometheus-alertmanager")
    deadline = time.monotonic() + BUDGET_SECONDS
    gen = generator()
    rules_dir = tmp_path / "rules"
    gen.write(gen.render(gen.Settings.from_mapping(RULE_SETTINGS)), rules_dir)

    cluster = SimCluster(SIM, clock())
    rows = [r for r in cluster.rows() if r["connected"]]
    looping = next(r["clientid"] for r in rows if r["clientid"].startswith("gateway-"))
    stopped_node = cluster.node_names[-1]
    sensors = [r["clientid"] for r in rows
               if r["clientid"].startswith("sensor-") and r["node"] != stopped_node]
    assert len(sensors) > BURST, f"seed {SIM.seed}: too few online sensors"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMQX_")}
    env["PYTHONUNBUFFERED"] = "1"

    runner = web.AppRunner(build_sim_app(cluster), access_log=None)
    await runner.setup()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, sim_port = runner.addresses[0][:2]
        port = free_port()
        config_file = tmp_path / "exporter.yml"
        config_file.write_text(yaml.safe_dump(exporter_config(
            f"http://{host}:{sim_port}", port, [MISSING_CLIENT, looping])))
        exporter_log = tmp_path / "exporter.log"
        exporter = await stack.enter_async_context(running(
            [sys.executable, "-m", "exporter", "run", "--config", str(config_file)],
            exporter_log, cwd=ROOT, env=env))
        am = await stack.enter_async_context(alertmanager_server(
            alertmanager_binary, tmp_path / "alertmanager",
            rules_dir / "alertmanager" / "alertmanager.yml", deadline))
        prom = await stack.enter_async_context(prometheus_server(
            prometheus_binary, tmp_path / "prometheus",
            prometheus_config(rules_dir, f"127.0.0.1:{port}", am.url.removeprefix("http://")),
            deadline, extra_args=["--rules.alert.resend-delay=1s"]))
        await wait_http_ok(prom.session, f"http://127.0.0.1:{port}/-/ready", deadline, exporter,
                           exporter_log)
        watch = Watch(prom, am, deadline)
        await watch.query_at_least(
            f'count(count_over_time(node:emqx_clients_online:sum{{cluster="{CLUSTER}"}}[1m]) >= 3)',
            SIM.nodes)

        # A watched client EMQX does not know: offline, and only watched clients count.
        await watch.firing("EMQXWatchedClientOffline", clientid=MISSING_CLIENT, cluster=CLUSTER)
        await watch.active_in_alertmanager("EMQXWatchedClientOffline", clientid=MISSING_CLIENT)
        offline = await prom.query("ALERTS{alertname=\"EMQXWatchedClientOffline\"}")
        assert {a["metric"]["clientid"] for a in offline} == {MISSING_CLIENT}, offline

        # One client in a reconnect loop: every reconnect seen by a poll before the next.
        for seen in range(1, 4):
            cluster.reconnect(looping)
            await watch.query_at_least(
                f'changes(emqx_client_connected_timestamp_seconds{{clientid="{looping}"}}[5m])',
                seen)
        await watch.firing("EMQXClientReconnectLoop", clientid=looping)

        # A one-off reconnect burst of a class fires the storm, which inhibits the loop alert.
        for clientid in sensors[:BURST]:
            cluster.reconnect(clientid)
        await watch.firing("EMQXClientsReconnectStorm", **{"class": "sensors"})
        await watch.inhibited("EMQXClientReconnectLoop", by="EMQXClientsReconnectStorm",
                              clientid=looping)

        # A node stopped: EMQXNodeStopped speaks; the node has no online figure (not 0), so
        # no drop is computed for it (checked at the end: never pending).
        cluster.set_node_down(stopped_node)
        await watch.firing("EMQXNodeStopped", node=stopped_node, cluster=CLUSTER)
        await watch.active_in_alertmanager("EMQXNodeStopped", node=stopped_node)

        # EMQX unreachable: the snapshot empties; the client alerts stay firing, inhibited.
        await runner.cleanup()
        await watch.firing("EMQXClientExporterEMQXUnreachable", cluster=CLUSTER)
        await watch.firing("EMQXWatchedClientOffline", clientid=MISSING_CLIENT)
        await watch.firing("EMQXClientReconnectLoop", clientid=looping)
        await watch.inhibited("EMQXWatchedClientOffline", by="EMQXClientExporterEMQXUnreachable",
                              clientid=MISSING_CLIENT)

        # The exporter killed: every series goes stale; the client alerts still stay firing,
        # inhibited by EMQXClientExporterDown.
        exporter.kill()
        await exporter.wait()
        await watch.firing("EMQXClientExporterDown")
        await watch.firing("EMQXWatchedClientOffline", clientid=MISSING_CLIENT)
        await watch.inhibited("EMQXWatchedClientOffline", by="EMQXClientExporterDown",
                              clientid=MISSING_CLIENT)
        gone = await prom.query(f'emqx_client_online{{clientid="{MISSING_CLIENT}"}}')
        assert gone == [], "the held alert must fire on no data at all"
        never = await prom.query('ALERTS{alertname="EMQXClientsOnlineDrop"}[10m]')
        assert never == [], f"a stopped node or an unreachable EMQX read as a drop: {never}"

    assert prom.proc.returncode == 0, tail(prom.log)
    assert am.proc.returncode == 0, tail(am.log)


# --------------------------------------------------------------------------------------------
# The drill of issue 18: two shards of one cluster in one job.

#: Dropping clients (simulated rates at SPEEDUP 5: 2.0, 2.7 and 0.9 messages/s), one per node:
#: nodes 1 and 3 belong to shard 0/2, node 2 to shard 1/2 (sorted names dealt in turn).
DROPPING = {"sensor-0000074": 0, "sensor-0000531": 1, "sensor-0000052": 0}
DRILL_RATE_WINDOW_SECONDS = 8
DRILL_SETTINGS: dict[str, Any] = {
    "for_override": "2s",
    # The rates' window, short so that a gap empties it within seconds; `hold` stays 1h.
    "rate_window": f"{DRILL_RATE_WINDOW_SECONDS}s",
    # A third of the slowest rate: a rate over 8 s of 1 s polls is noisy.
    "thresholds": {"client_drop_rate": 0.3},
}
#: Seconds for the whole drill, start-up included.
DRILL_BUDGET_SECONDS = 120.0


def shard_config(sim_url: str, port: int, shard: int) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "interval": 1,
        "timeout": 2,
        "retries": 0,
        "shard": f"{shard}/2",
        "clusters": [{"name": CLUSTER, "emqx_url": sim_url, "api_key": SIM.api_key,
                      "api_secret": SIM.api_secret, "listing": "page"}],
        "classes": [{"name": "sensors", "clientid": "sensor-.*"}],
        "aggregate": {"labels": ["node", "class"]},
        # Only the owner of a client's node exports it (no watch list: issue 18, 6).
        "per_client": {"allow": ["|".join(DROPPING)]},
    }


async def alert_of(prom: Prometheus, name: str, **labels: str) -> dict[str, Any] | None:
    for alert in (await prom.api("alerts"))["alerts"]:
        if alert["labels"]["alertname"] == name and labels.items() <= alert["labels"].items():
            return dict(alert)
    return None


async def am_state(am: Alertmanager, name: str, **labels: str) -> str | None:
    for alert in await am.alerts():
        if alert["labels"]["alertname"] == name and labels.items() <= alert["labels"].items():
            state: str = alert["status"]["state"]
            return state
    return None


@pytest.mark.prometheus
async def test_drill_two_shards(tmp_path: Path) -> None:
    """Issue 18, 1-3 on a real Prometheus and Alertmanager (see the module docstring)."""
    prometheus_binary = require_tool("prometheus")
    alertmanager_binary = require_tool("prometheus-alertmanager")
    deadline = time.monotonic() + DRILL_BUDGET_SECONDS
    gen = generator()
    rules_dir = tmp_path / "rules"
    gen.write(gen.render(gen.Settings.from_mapping(DRILL_SETTINGS)), rules_dir)

    cluster = SimCluster(SIM, clock())
    nodes = cluster.node_names  # sorted: shard 0 owns nodes[0] and nodes[2], shard 1 nodes[1]
    failing_node = nodes[0]
    for clientid, shard in DROPPING.items():
        row = cluster.row(clientid)
        assert row and row["connected"] and nodes.index(row["node"]) % 2 == shard, row
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMQX_")}
    env["PYTHONUNBUFFERED"] = "1"

    runner = web.AppRunner(build_sim_app(cluster), access_log=None)
    await runner.setup()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, sim_port = runner.addresses[0][:2]
        ports = [free_port(), free_port()]
        targets = [f"127.0.0.1:{p}" for p in ports]
        configs = []
        for shard, port in enumerate(ports):
            config_file = tmp_path / f"exporter-{shard}.yml"
            config_file.write_text(yaml.safe_dump(shard_config(
                f"http://{host}:{sim_port}", port, shard)))
            configs.append(config_file)

        def start(shard: int, log_name: str) -> Any:
            return running([sys.executable, "-m", "exporter", "run", "--config",
                            str(configs[shard])], tmp_path / log_name, cwd=ROOT, env=env)

        shard0 = await stack.enter_async_context(start(0, "exporter-0.log"))
        shard1 = await stack.enter_async_context(start(1, "exporter-1.log"))
        am = await stack.enter_async_context(alertmanager_server(
            alertmanager_binary, tmp_path / "alertmanager",
            rules_dir / "alertmanager" / "alertmanager.yml", deadline))
        config = prometheus_config(rules_dir, targets[0], am.url.removeprefix("http://"))
        config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
        prom = await stack.enter_async_context(prometheus_server(
            prometheus_binary, tmp_path / "prometheus", config, deadline,
            extra_args=["--rules.alert.resend-delay=1s"]))
        for port, proc, log in ((ports[0], shard0, "exporter-0.log"),
                                (ports[1], shard1, "exporter-1.log")):
            await wait_http_ok(prom.session, f"http://127.0.0.1:{port}/-/ready", deadline, proc,
                               tmp_path / log)
        watch = Watch(prom, am, deadline)
        timeline = Timeline(prom, am, ("instance", "node", "clientid"))
        recorder = asyncio.create_task(timeline.run())
        stack.callback(recorder.cancel)
        stack.callback(lambda: print(f"\nalert timeline of the issue 18 drill (seconds from the "
                                     f"first sample):\n{timeline.text()}"))
        stack.callback(lambda: (tmp_path / "timeline.txt").write_text(timeline.text() + "\n"))

        # Baseline: every node walked, every dropping client's alert firing, from its owner.
        await watch.query_at_least(
            f'count(count_over_time(node:emqx_clients_online:sum{{cluster="{CLUSTER}"}}[1m]) >= 3)',
            len(nodes))
        for clientid, shard in DROPPING.items():
            await watch.firing("EMQXClientDroppingMessages", clientid=clientid,
                               instance=targets[shard])
            await watch.active_in_alertmanager("EMQXClientDroppingMessages", clientid=clientid)
        timeline.mark("baseline: 3 drop alerts firing")

        # 1. A 500 on one node's client listing: that node is not walked; it is not a drop.
        timeline.mark(f"fault: HTTP 500 on /clients?node={failing_node} (shard 0)")
        fault = cluster.faults.add("http_error", status=500, node=failing_node,
                                   endpoint="GET /api/v5/clients")
        await watch.firing("EMQXClientExporterNodeWalkFailing", node=failing_node,
                           instance=targets[0])
        await watch.inhibited("EMQXClientDroppingMessages", by="EMQXClientExporterNodeWalkFailing",
                              clientid="sensor-0000074")
        cluster.faults.remove(fault)
        timeline.mark("fault removed: the listing answers again")
        await watch.until_empty("NodeWalkFailing resolved",
                                'ALERTS{alertname="EMQXClientExporterNodeWalkFailing"}')
        # Three complete walks of the node after the recovery have been evaluated.
        await watch.query_at_least(
            f'count_over_time(node:emqx_clients_online:sum{{node="{failing_node}"}}[3s])', 3)
        drops = await prom.query('ALERTS{alertname="EMQXClientsOnlineDrop"}[10m]')
        assert drops == [], f"a listing failure or its recovery read as a client drop: {drops}"

        # 2. Shard 0 killed: its alerts are held and inhibited; shard 1's stay active.
        held = await alert_of(prom, "EMQXClientDroppingMessages", clientid="sensor-0000074")
        assert held and held["state"] == "firing", held
        timeline.mark("fault: kill -9 of shard 0")
        shard0.kill()
        await shard0.wait()
        await watch.firing("EMQXClientExporterDown", instance=targets[0])
        for clientid, shard in DROPPING.items():
            if shard == 0:
                await watch.inhibited("EMQXClientDroppingMessages", by="EMQXClientExporterDown",
                                      clientid=clientid)
        other = await am_state(am, "EMQXClientDroppingMessages", clientid="sensor-0000531")
        assert other == "active", f"shard 1's alert inhibited by shard 0's failure: {other}"

        # 3. Restarted once its counters have left the rate window: the alert must not resolve.
        await watch.until_empty(
            "shard 0's counters out of the rate window",
            f'count_over_time(emqx_client_sent_messages_dropped_total{{instance="{targets[0]}"}}'
            f'[{DRILL_RATE_WINDOW_SECONDS}s])')
        timeline.mark("shard 0 restarted (its rate window is empty)")
        shard0 = await stack.enter_async_context(start(0, "exporter-0-restarted.log"))
        await watch.until_empty("EMQXClientExporterDown resolved",
                                'ALERTS{alertname="EMQXClientExporterDown"}')
        await watch.until_query(
            "the rate is computed again",
            'clientid:emqx_client_sent_messages_dropped:rate5m{clientid="sensor-0000074"}')
        await watch.active_in_alertmanager("EMQXClientDroppingMessages",
                                           clientid="sensor-0000074")
        after = await alert_of(prom, "EMQXClientDroppingMessages", clientid="sensor-0000074")
        assert after and after["state"] == "firing", after
        assert after["activeAt"] == held["activeAt"], (
            f"the alert resolved and started again across the gap: {held} -> {after}")
        timeline.mark("end")
        await timeline.sample()
        recorder.cancel()

    assert prom.proc.returncode == 0, tail(prom.log)
    assert am.proc.returncode == 0, tail(am.log)
