"""End to end: simulator -> exporter daemon -> a real Prometheus -> every dashboard query and rule.

The simulated EMQX 5 cluster runs in this test's event loop, the exporter (`python -m exporter
run`) and Prometheus as subprocesses on free loopback ports. Prometheus scrapes the exporter
every second with the job of ``deploy/prometheus/prometheus.yml`` and evaluates
``deploy/prometheus/alerts.yml`` every second. Then every Grafana panel query (with Grafana's
variables substituted) must be accepted by Prometheus and return data, every variable query
must return values, every alert rule must evaluate with health "ok", and the scrape must be up
with no rejected samples.

The simulator's clock runs SPEEDUP times faster than real time (and stays behind it), so slow
counters such as QoS 2 PUBREL timeouts and periodic reconnects move within a few seconds.
Marked ``prometheus``: skipped locally without the Debian package ``prometheus``, required in
CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from emqx_simulator import SimCluster, SimSettings, build_sim_app
from emqx_simulator.events import EventPublisher
from emqx_simulator.mqtt import MqttServer
from exporter.selection import RANKINGS
from tests.conftest import require_tool
from tests.ports import free_port
from tests.prometheus_server import (
    Prometheus,
    PrometheusError,
    prometheus_server,
    running,
    tail,
    wait_http_ok,
)
from tests.test_rules import (
    ALERTS,
    CONTRACT_HISTOGRAMS,
    DASHBOARDS,
    RECORDING,
    ROOT,
    SCRAPE_CONFIG,
    contract_metric_names,
    dashboard_exprs,
    distribution_sample_names,
    load_dashboard,
    load_yaml,
    promql_metric_names,
    substitute_grafana_vars,
)

JOB = "emqx-client-exporter"
CLUSTER = "sim"
#: Seconds from the start of the test to the last check (start-up included, shutdown not).
BUDGET_SECONDS = 35.0
#: Scrapes of the exporter (one a second) before the first dashboard query.
MIN_SCRAPES = 4
#: Grafana's range variables for this short run: `$__rate_interval` spans ~10 scrapes.
RANGE_VARS = {"__rate_interval": "10s", "__range": "1m", "__interval": "1s"}
#: Simulated seconds per real second. The simulated clock starts SPEEDUP x HORIZON seconds in
#: the past and catches up with real time after HORIZON seconds, longer than the test runs, so
#: EMQX timestamps never lie in the future of the exporter and Prometheus.
SPEEDUP = 60.0
HORIZON = 60.0

SIM = SimSettings(api="v5", nodes=3, clients=1000, seed=23, class_prefixes=True)
#: A watched client id the cluster does not know: exported as offline (online 0).
MISSING_CLIENT = "sensor-9999999"
#: Paths the exporter may list clients with; one wrong-typed value is injected into the first
#: page so the API error families have a series (the walk goes on, that value is dropped).
LISTING_PATHS = ("/api/v5/clients_v2", "/api/v5/clients")

# Panels whose queries may return nothing for the drill-down's main client (an online, watched
# slow consumer), and the role of the exported client they are run for instead, where they
# must return data.
OTHER_CLIENT: dict[tuple[str, str], str] = {
    # grafana/README.md: "Disconnected" only has a value for an offline persistent session.
    ("emqx-clients-drilldown", "Disconnected"): "offline",
}

# Panels allowed to return nothing in this setup, with the reason. Keep it short: every other
# panel must show data.
MAY_BE_EMPTY: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Picks:
    """Exported clients chosen from the simulator's listing, each for what it shows."""

    #: Online, every capacity limited, inflight window full: its queue fills and overflows.
    busy: str
    #: An offline persistent session: a disconnect time, online 0.
    offline: str
    #: The client with the highest rate of QoS 2 messages dropped for a PUBREL timeout.
    publish_dropper: str
    #: Online, reconnected by the test after the first scrapes.
    reconnecting: str

    def role(self, name: str) -> str:
        value: str = getattr(self, name)
        return value

    def watch(self) -> list[str]:
        return [self.busy, self.offline, self.publish_dropper, self.reconnecting, MISSING_CLIENT]


def accelerated_clock() -> Callable[[], float]:
    """Simulated epoch seconds: SPEEDUP times as fast as real time, behind it for HORIZON s."""
    origin = time.time()
    start = origin - SPEEDUP * HORIZON
    return lambda: start + (time.time() - origin) * SPEEDUP


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def pick_clients(cluster: SimCluster) -> Picks:
    rows = list(cluster.rows())
    now = cluster.now_ms() / 1000
    online = [r for r in rows if r["connected"]]

    def limited(r: dict[str, Any]) -> bool:
        caps = (r["mqueue_max"], r["inflight_max"], r["subscriptions_max"], r["awaiting_rel_max"])
        return all(isinstance(c, int) and c > 0 for c in caps)

    busy = [r for r in online if limited(r) and r["inflight_cnt"] >= r["inflight_max"]]
    assert busy, f"seed {SIM.seed}: no online slow consumer with every capacity limited"
    busy_id = max(busy, key=lambda r: r["mqueue_len"] / r["mqueue_max"])["clientid"]
    offline = sorted(r["clientid"] for r in rows if not r["connected"] and r["expiry_interval"])
    assert offline, f"seed {SIM.seed}: no offline persistent session"

    def pubrel_rate(r: dict[str, Any]) -> float:
        age = max(1.0, now - _epoch(r["connected_at"]))
        return float(r["recv_msg.dropped.await_pubrel_timeout"]) / age

    dropper = max((r for r in online if r["clientid"] != busy_id), key=pubrel_rate)
    assert pubrel_rate(dropper) > 0, f"seed {SIM.seed}: no client drops QoS 2 messages"
    taken = {busy_id, dropper["clientid"]}
    reconnecting = next(r["clientid"] for r in sorted(online, key=lambda r: r["clientid"])
                        if r["clientid"] not in taken)
    return Picks(busy_id, offline[0], dropper["clientid"], reconnecting)


@asynccontextmanager
async def serve_simulator(cluster: SimCluster) -> AsyncIterator[str]:
    """The simulated cluster's API on a free loopback port of this event loop; its base URL."""
    runner = web.AppRunner(build_sim_app(cluster), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def exporter_config(sim_url: str, port: int, picks: Picks,
                    mqtt_port: int | None = None) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "log_level": "info",
        "interval": 1,
        "timeout": 5,
        "retries": 0,
        "clusters": [
            {"name": CLUSTER, "emqx_url": sim_url, "api_key": SIM.api_key,
             "api_secret": SIM.api_secret,
             # the simulator's client events (churn, the reconnect below) for the
             # "why clients disconnect" row
             **({"events": {"host": "127.0.0.1", "port": mqtt_port}} if mqtt_port else {})},
        ],
        "classes": [
            {"name": "sensors", "clientid": "sensor-.*"},
            {"name": "gateways", "clientid": "gateway-.*"},
            {"name": "apps", "username": "app-.*"},
        ],
        "aggregate": {"labels": ["node", "class"]},
        "per_client": {
            "parts": {"packets": True, "awaiting_rel": True, "session": True, "process": True,
                      "messages_qos": True, "dropped_reasons": True},
            "watch": picks.watch(),
            "allow": ["sensor-00000[0-4][0-9]"],
            "top_k": dict.fromkeys(RANKINGS, 5),
        },
    }


def prometheus_config(target: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with 1 s intervals, this target and absolute rule files."""
    config: dict[str, Any] = load_yaml(SCRAPE_CONFIG)
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    rule_files = [str((SCRAPE_CONFIG.parent / f).resolve()) for f in config["rule_files"]]
    assert str(ALERTS.resolve()) in rule_files
    config["rule_files"] = rule_files
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    labels = job["static_configs"][0].get("labels", {})
    job["static_configs"] = [{"targets": [target], "labels": labels}]
    config.pop("alerting", None)
    return config


@dataclass
class PanelQuery:
    dashboard: str
    title: str
    expr: str
    #: Why it may be empty; None: it must return data.
    may_be_empty: str | None


async def exported_names(session: aiohttp.ClientSession, exporter_url: str) -> set[str]:
    """Sample names on the exporter's /metrics."""
    async with session.get(f"{exporter_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {re.split(r"[{ ]", line, maxsplit=1)[0]
            for line in text.splitlines() if line and not line.startswith("#")}


def panel_queries(picks: Picks, exported: set[str]) -> tuple[list[PanelQuery], list[str]]:
    """Every target of every dashboard, variables substituted as a user would pick them;
    and the panels skipped because a metric they read is absent from the exporter's output
    (families another branch adds: they are checked once the exporter exports them)."""
    queries, skipped = [], []
    recorded = {r["record"] for r in load_yaml(RECORDING)["groups"][0]["rules"]}
    for path in DASHBOARDS:
        for title, expr in dashboard_exprs(load_dashboard(path)):
            key = (path.stem, title)
            missing = promql_metric_names(expr) - recorded - exported
            if missing:
                # Only the distribution families may be missing; anything else is a bug.
                assert missing <= distribution_sample_names(), (path.name, title, missing)
                skipped.append(f"{path.stem} / {title}: {sorted(missing)}")
                continue
            client = picks.role(OTHER_CLIENT.get(key, "busy"))
            text = substitute_grafana_vars(expr, cluster=CLUSTER, clientid=client, **RANGE_VARS)
            assert "$" not in text, f"{path.name} {title}: unsubstituted variable in {text}"
            queries.append(PanelQuery(path.stem, title, text, MAY_BE_EMPTY.get(key)))
    return queries, skipped


@dataclass(frozen=True)
class VariableQuery:
    dashboard: str
    name: str
    #: label_values(): the label and the series selector; query_result(): the query and regex.
    label: str | None
    expr: str
    regex: str | None


def variable_queries() -> list[VariableQuery]:
    """Every label_values() and query_result() variable, with Grafana's variables replaced."""
    out = []
    for path in DASHBOARDS:
        for var in load_dashboard(path)["templating"]["list"]:
            if var.get("type") != "query":
                continue
            query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            labels = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
            result = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
            assert labels or result, f"{path.name} ${var['name']}: unknown query: {query}"
            if labels:
                out.append(VariableQuery(path.stem, var["name"], labels.group(2),
                                         substitute_grafana_vars(labels.group(1), cluster=CLUSTER),
                                         None))
            else:
                assert result is not None
                out.append(VariableQuery(path.stem, var["name"], None,
                                         substitute_grafana_vars(result.group(1), cluster=CLUSTER),
                                         var["regex"].strip("/")))
    return out


async def variable_values(prom: Prometheus, var: VariableQuery) -> list[str]:
    """The options Grafana would offer: label values, or the regex's group applied to each
    result line of query_result() (`name{label="value", ...} value timestamp`)."""
    if var.label is not None:
        values: list[str] = await prom.api(f"label/{var.label}/values", {"match[]": var.expr})
        return values
    assert var.regex is not None
    out = []
    for sample in await prom.query(var.expr):
        labels = ", ".join(f'{k}="{v}"' for k, v in sorted(sample["metric"].items()))
        line = f"{{{labels}}} {sample['value'][1]} {sample['value'][0]}"
        m = re.search(var.regex, line)
        if m:
            out.append(m.group(1))
    return sorted(set(out))


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()


async def wait_for_scrapes(prom: Prometheus, deadline: float) -> None:
    """Until MIN_SCRAPES scrapes with data from a finished poll have landed."""
    expr = f'max(count_over_time(emqx_clients_online{{cluster="{CLUSTER}"}}[1m]))'
    seen = 0.0
    while True:
        result = await prom.query(expr)
        seen = float(result[0]["value"][1]) if result else 0.0
        if seen >= MIN_SCRAPES:
            return
        if remaining(deadline) <= 0:
            raise AssertionError(f"only {seen:g} scrapes with data in time:\n{tail(prom.log)}")
        await asyncio.sleep(0.5)


async def run_panel_queries(
    prom: Prometheus, queries: list[PanelQuery], deadline: float
) -> tuple[list[str], list[str]]:
    """Run every query; retry the empty ones until they have data or the deadline passes.

    Returns (errors, empty): one line per query Prometheus rejected, and per query that must
    return data and did not.
    """
    errors: list[str] = []
    todo = list(queries)
    while True:
        empty = []
        for q in todo:
            try:
                result = await prom.query(q.expr)
            except PrometheusError as exc:
                errors.append(f"{q.dashboard} / {q.title}: {exc}\n    {q.expr}")
                continue
            if not result and q.may_be_empty is None:
                empty.append(q)
        todo = empty
        if not todo or remaining(deadline) <= 0:
            break
        await asyncio.sleep(1.0)
    return errors, [f"{q.dashboard} / {q.title}: no data\n    {q.expr}" for q in todo]


def _rfc3339(stamp: str) -> float:
    """Prometheus' nanosecond RFC 3339 time as epoch seconds."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def wait_for_rule_evaluations(prom: Prometheus, since: float, deadline: float) -> list[Any]:
    """Rule groups once each was evaluated at least twice after ``since`` (epoch seconds)."""
    while True:
        groups: list[Any] = (await prom.api("rules"))["groups"]
        done = groups and all(_rfc3339(g["lastEvaluation"]) >= since + 1.5 for g in groups)
        broken = [r for g in groups for r in g["rules"] if r["health"] == "err"]
        if done or broken or remaining(deadline) <= 0:
            return groups
        await asyncio.sleep(0.5)


#: Prometheus' own counters of samples it refused or of scrapes cut short.
SCRAPE_PROBLEM_COUNTERS = (
    "prometheus_target_scrapes_sample_duplicate_timestamp_total",
    "prometheus_target_scrapes_sample_out_of_order_total",
    "prometheus_target_scrapes_sample_out_of_bounds_total",
    "prometheus_target_scrapes_exceeded_sample_limit_total",
    "prometheus_target_scrapes_exceeded_body_size_limit_total",
    "prometheus_target_scrape_pool_exceeded_label_limits_total",
    "prometheus_target_scrapes_exemplar_out_of_order_total",
    "prometheus_rule_evaluation_failures_total",
)


@pytest.mark.prometheus
async def test_dashboards_and_alert_rules_on_a_real_prometheus(tmp_path: Path) -> None:
    binary = require_tool("prometheus")
    deadline = time.monotonic() + BUDGET_SECONDS
    cluster = SimCluster(SIM, accelerated_clock())
    picks = pick_clients(cluster)
    faults = [cluster.faults.add("bad_field", endpoint=path, times=1, rows=1, field="recv_oct",
                                 value="12x")
              for path in LISTING_PATHS]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMQX_")}
    env["PYTHONUNBUFFERED"] = "1"

    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_simulator(cluster))
        mqtt = MqttServer()
        mqtt_port = await mqtt.start("127.0.0.1", 0)
        stack.push_async_callback(mqtt.stop)
        publisher = EventPublisher(cluster, mqtt)
        publisher.start()
        stack.push_async_callback(publisher.stop)
        port = free_port()
        exporter_url = f"http://127.0.0.1:{port}"
        config_file = tmp_path / "exporter.yml"
        config_file.write_text(yaml.safe_dump(exporter_config(sim_url, port, picks, mqtt_port)))
        exporter_log = tmp_path / "exporter.log"
        exporter = await stack.enter_async_context(running(
            [sys.executable, "-m", "exporter", "run", "--config", str(config_file)],
            exporter_log, cwd=ROOT, env=env))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        # Prometheus starts while the exporter does; its first scrapes may fail until then.
        prom_config = prometheus_config(f"127.0.0.1:{port}")
        prom = await stack.enter_async_context(
            prometheus_server(binary, tmp_path / "prometheus", prom_config, deadline))
        await wait_http_ok(session, f"{exporter_url}/-/ready", deadline, exporter, exporter_log)
        await wait_for_scrapes(prom, deadline)
        data_since = time.time()
        cluster.reconnect(picks.reconnecting)  # "Top by reconnects" needs a change in range

        # 1. Variable queries: each offers values, the picked clients among them.
        for var in variable_queries():
            values = await variable_values(prom, var)
            assert values, f"{var.dashboard} ${var.name}: {var.expr} offers nothing"
            if var.name == "cluster":
                assert values == [CLUSTER], values
            if var.name == "clientid":  # a client EMQX does not know has no emqx_client_info
                known = set(picks.watch()) - {MISSING_CLIENT}
                assert known <= set(values), sorted(known - set(values))

        # 2. Every panel query: valid, and data unless allow-listed.
        queries, skipped = panel_queries(picks, await exported_names(session, exporter_url))
        if skipped:
            print("panels skipped, their metrics are not exported yet:", *skipped, sep="\n  ")
        errors, empty = await run_panel_queries(prom, queries, deadline)
        assert not errors and not empty, "\n".join(
            ["queries Prometheus rejected:", *errors, "panels without data:", *empty])

        # 3. Every sample name of the contract arrived (all parts are on), and the watched
        #    client EMQX does not know is exported as offline.
        # The reconnect's events (the watched client's connect and last disconnect) are
        # counted as they come; wait until a scrape carried them.
        while not await prom.query("emqx_client_last_disconnect_timestamp_seconds"):
            assert time.monotonic() < deadline, "the reconnect's events never reached Prometheus"
            await asyncio.sleep(0.2)
        names = set(await prom.api("label/__name__/values"))
        absent = contract_metric_names() - CONTRACT_HISTOGRAMS - names  # histograms: _bucket...
        assert not absent, f"contract series Prometheus never received: {sorted(absent)}"
        missing = await prom.query(f'emqx_client_online{{clientid="{MISSING_CLIENT}"}}')
        assert [float(s["value"][1]) for s in missing] == [0.0], missing
        assert any(f.fired for f in faults), "the injected bad value never reached a page"

        # 4. Alert rules: loaded, and evaluated twice on data without errors.
        groups = await wait_for_rule_evaluations(prom, data_since, deadline)
        loaded = {r["name"] for g in groups for r in g["rules"]}
        expected = {r.get("alert", r.get("record")) for path in prom_config["rule_files"]
                    for g in load_yaml(Path(path))["groups"] for r in g["rules"]}
        assert loaded == expected, (sorted(expected - loaded), sorted(loaded - expected))
        unhealthy = [f"{r['name']}: health {r['health']}: {r.get('lastError', '')}"
                     for g in groups for r in g["rules"] if r["health"] != "ok"]
        assert not unhealthy, "alert rules not healthy:\n" + "\n".join(unhealthy)
        stale = [g["name"] for g in groups if _rfc3339(g["lastEvaluation"]) < data_since + 1.5]
        assert not stale, f"rule groups not evaluated twice on data in time: {stale}"

        # 5. The scrape target: up, no error, no refused sample.
        targets = (await prom.api("targets", {"state": "active"}))["activeTargets"]
        (target,) = [t for t in targets if t["labels"]["job"] == JOB]
        assert target["health"] == "up", target
        assert target["lastError"] == "", target["lastError"]
        own = await prom.self_metrics()
        assert set(SCRAPE_PROBLEM_COUNTERS) <= {name.partition("{")[0] for name in own}
        problems = {name: value for name, value in own.items()
                    if name.partition("{")[0] in SCRAPE_PROBLEM_COUNTERS and value}
        assert not problems, problems

    # Both shut down cleanly on SIGTERM within the grace period (-9: they had to be killed).
    assert exporter.returncode == 0, tail(exporter_log)
    assert prom.proc.returncode == 0, tail(prom.log)
