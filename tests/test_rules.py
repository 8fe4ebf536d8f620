"""Alert and recording rules, their generator and promtool unit tests, and the dashboards.

promtool comes from the Debian package ``prometheus``. Tests that need it are marked
``promtool``: without it they skip locally and fail when ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import contract

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
RECORDING = PROM_DIR / "recording.yml"
RULE_FILES = [RECORDING, ALERTS]
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
SCRAPE_CONFIG = PROM_DIR / "prometheus.yml"
GRAFANA_DIR = ROOT / "grafana"
DASHBOARDS = sorted(GRAFANA_DIR.glob("*.json"))
GENERATOR = ROOT / "deploy" / "generate_rules.py"
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


# --------------------------------------------------------------------------------------------
# The metric contract. Swap the body of contract_metric_names() for exporter.contract when it
# exists; everything below goes through that one function.

CONTRACT_METRICS: frozenset[str] = frozenset(
    {
        # per-client families
        "emqx_client_info",
        "emqx_client_online",
        "emqx_client_connected_timestamp_seconds",
        "emqx_client_disconnected_timestamp_seconds",
        "emqx_client_created_timestamp_seconds",
        "emqx_client_last_seen_timestamp_seconds",
        "emqx_client_received_bytes_total",
        "emqx_client_sent_bytes_total",
        "emqx_client_received_packets_total",
        "emqx_client_sent_packets_total",
        "emqx_client_received_messages_total",
        "emqx_client_sent_messages_total",
        "emqx_client_received_messages_dropped_total",
        "emqx_client_sent_messages_dropped_total",
        "emqx_client_mqueue_messages",
        "emqx_client_mqueue_capacity_messages",
        "emqx_client_mqueue_dropped_messages_total",
        "emqx_client_inflight_messages",
        "emqx_client_inflight_capacity_messages",
        "emqx_client_awaiting_rel_messages",
        "emqx_client_awaiting_rel_capacity_messages",
        "emqx_client_subscriptions",
        "emqx_client_subscriptions_capacity",
        "emqx_client_keepalive_seconds",
        "emqx_client_session_expiry_seconds",
        "emqx_client_process_mailbox_messages",
        "emqx_client_process_heap_bytes",
        "emqx_client_process_reductions_total",
        # aggregate families
        "emqx_clients_online",
        "emqx_clients_sessions",
        "emqx_clients_received_bytes_total",
        "emqx_clients_sent_bytes_total",
        "emqx_clients_received_messages_total",
        "emqx_clients_sent_messages_total",
        "emqx_clients_dropped_messages_total",
        "emqx_clients_mqueue_dropped_messages_total",
        "emqx_clients_mqueue_messages",
        "emqx_clients_inflight_messages",
        "emqx_clients_subscriptions",
        "emqx_clients_mqueue_saturated",
        "emqx_clients_inflight_saturated",
        "emqx_clients_connects_total",
        # exporter self-metrics
        "emqx_client_exporter_up",
        "emqx_client_exporter_node_up",
        "emqx_client_exporter_poll_duration_seconds",
        "emqx_client_exporter_last_poll_success_timestamp_seconds",
        "emqx_client_exporter_snapshot_age_seconds",
        "emqx_client_exporter_api_requests_total",
        "emqx_client_exporter_api_request_duration_seconds",
        "emqx_client_exporter_api_errors_total",
        "emqx_client_exporter_clients_listed",
        "emqx_client_exporter_clients_unlisted",
        "emqx_client_exporter_duplicate_clients_total",
        "emqx_client_exporter_listing_pages_total",
        "emqx_client_exporter_series",
        "emqx_client_exporter_series_dropped",
        "emqx_client_exporter_build_info",
        "emqx_client_exporter_poll_interval_seconds",
        # the daemon's reload state (web_config_* ones too, only when a web config is in use)
        "emqx_client_exporter_config_last_reload_successful",
        "emqx_client_exporter_config_last_reload_success_timestamp_seconds",
    }
)
CONTRACT_HISTOGRAMS: frozenset[str] = frozenset(
    {"emqx_client_exporter_api_request_duration_seconds"}
)

# Series Prometheus writes itself for every target. Only the alert rules may use them (an
# exporter that is down exports nothing, so only `up` can tell); dashboards may not.
PROMETHEUS_SCRAPE_SERIES: frozenset[str] = frozenset({"up", "scrape_samples_scraped"})


#: Distribution families issue 10 adds (OpenMetrics gaugehistograms; in the text format 0.0.4
#: gauges `<name>_bucket{le}`, `<name>_gcount`, `<name>_gsum`). The fleet dashboard's heatmaps
#: read them; the real-Prometheus test skips those panels while the exporter lacks them. Move
#: them into the contract (exporter.contract) once they are exported.
DISTRIBUTION_FAMILIES: frozenset[str] = frozenset({
    "emqx_clients_mqueue_fill_ratio",
    "emqx_clients_inflight_fill_ratio",
    "emqx_clients_received_bytes_per_second",
    "emqx_clients_sent_bytes_per_second",
    "emqx_clients_received_messages_per_second",
    "emqx_clients_sent_messages_per_second",
    "emqx_clients_dropped_messages_per_second",
    "emqx_clients_connection_age_seconds",
    "emqx_clients_subscriptions_per_client",
})


def distribution_sample_names() -> frozenset[str]:
    return frozenset(f"{family}{suffix}" for family in DISTRIBUTION_FAMILIES
                     for suffix in ("_bucket", "_gcount", "_gsum"))


def contract_metric_names() -> frozenset[str]:
    """Every sample name the exporter exposes, histogram series included."""
    names = set(CONTRACT_METRICS)
    # the client events' families (issue 20) come from the contract itself
    names |= {f.name for f in contract.EVENT_FAMILIES + contract.EVENTS_SELF_FAMILIES}
    for family in CONTRACT_HISTOGRAMS:
        names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return frozenset(names)


# --------------------------------------------------------------------------------------------
# helpers


def require_promtool() -> str:
    """Return promtool's path; skip without it, but fail in CI (CI=true)."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail("promtool is required in CI: install the Debian package 'prometheus'")
        pytest.skip("promtool not found: install the Debian package 'prometheus' to run this")
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule
    ]


def all_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in walk_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


# Values that stand in for Grafana's variables when a query is checked or run outside Grafana.
GRAFANA_SUBSTITUTES = {
    "$__rate_interval": "2m",
    "$__interval": "30s",
    "$__range": "1h",
    "$topn": "10",
    "$cluster": ".*",
    "$node": ".*",
    "$class": ".*",
    "$clientid": "some-client",
}


def substitute_grafana_vars(expr: str, **values: str) -> str:
    """Replace Grafana variables with plain PromQL; ``clientid=...`` picks the client."""
    subs = dict(GRAFANA_SUBSTITUTES)
    subs.update({f"${k}": v for k, v in values.items()})
    for var in sorted(subs, key=len, reverse=True):
        expr = expr.replace("${" + var[1:] + "}", subs[var]).replace(var, subs[var])
    return expr


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![\w:])\d[\w.]*")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "atan2", "inf", "nan"}
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (a lexer, not a parser: enough for our queries)."""
    s = _STRING.sub('""', expr)
    s = re.sub(r"#[^\n]*", " ", s)  # comments
    s = _GRAFANA_VAR.sub(" 1 ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery selectors
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = _GROUPING.sub(" ", s)
    s = _NUMBER.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(0)
        if word.lower() in _KEYWORDS or s[m.end() :].lstrip().startswith("("):
            continue  # keyword, function or aggregation
        names.add(word)
    return names


def variable_query_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL inside template variable queries such as label_values(metric{...}, label)."""
    exprs = []
    for var in dashboard["templating"]["list"]:
        if var.get("type") != "query":
            continue
        query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
        m = m or re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
        exprs.append(m.group(1) if m else query)
    return exprs


# --------------------------------------------------------------------------------------------
# promtool


@pytest.mark.promtool
def test_promtool_check_rules() -> None:
    promtool = require_promtool()
    result = run(promtool, "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.promtool
def test_promtool_rule_unit_tests() -> None:
    promtool = require_promtool()
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = run(promtool, "test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.promtool
def test_promtool_check_scrape_config() -> None:
    promtool = require_promtool()
    result = run(promtool, "check", "config", SCRAPE_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every dashboard query, with Grafana variables substituted."""
    promtool = require_promtool()
    rules = []
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        queries = [e for _, e in dashboard_exprs(dashboard)] + variable_query_exprs(dashboard)
        for i, expr in enumerate(queries):
            rules.append(
                {
                    "record": f"dashboard:{path.stem.replace('-', '_')}:{i}",
                    "expr": substitute_grafana_vars(expr),
                }
            )
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run(promtool, "check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# alert rules


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names, "alerts.yml has no alerts"
    assert not names - firing, f"alerts without a firing test case: {sorted(names - firing)}"
    assert not names - quiet, f"alerts without a not-firing test case: {sorted(names - quiet)}"
    assert not (firing | quiet) - names, "tests for alerts that do not exist"


def test_alerts_page_names_every_alert() -> None:
    """docs/alerts.md is written by hand: it must name exactly the alerts of the pack
    (`...Foo` abbreviates `EMQXClientExporterFoo`)."""
    section = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    named = set()
    for name in re.findall(r"`(EMQX[A-Za-z]+|\.\.\.[A-Za-z]+)`", section):
        named.add("EMQXClientExporter" + name[3:] if name.startswith("...") else name)
    assert named == {rule["alert"] for rule in alert_rules()}


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's alert sections (`## EMQXFoo` -> `emqxfoo`)."""
    text = RUNBOOK.read_text(encoding="utf-8")
    return {m.lower() for m in re.findall(r"^## (EMQX[A-Za-z]+)$", text, re.M)}


def test_alerts_follow_the_mixin_conventions() -> None:
    seen = set()
    anchors = runbook_anchors()
    for rule in alert_rules():
        name = rule["alert"]
        assert name not in seen, f"duplicate alert {name}"
        seen.add(name)
        assert re.fullmatch(r"EMQX[A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        annotations = rule.get("annotations", {})
        assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}
        assert "{{" not in annotations["summary"], f"{name}: the summary is a static headline"
        assert "{{" in annotations["description"], f"{name}: the description names the subject"
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.endswith("/docs/runbook.md"), name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no runbook section"
        assert re.search(r"/d/emqx-clients-(fleet|drilldown)\?", annotations["dashboard_url"])
        assert "for" in rule, f"{name} fires on a single evaluation"
    assert anchors == {n.lower() for n in seen}, "runbook sections without an alert"


def recording_names() -> set[str]:
    return {r["record"] for g in load_yaml(RECORDING)["groups"] for r in g["rules"]}


def test_rule_metrics_are_in_the_contract() -> None:
    # ALERTS: the hold of client alerts reads their own state; scrape_sample_limit exists with
    # --enable-feature=extra-scrape-metrics and the rule falls back without it.
    allowed = contract_metric_names() | PROMETHEUS_SCRAPE_SERIES | recording_names()
    allowed |= {"ALERTS", "scrape_sample_limit"}
    for rule in all_rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["expr"]
        assert names <= allowed, (rule.get("alert", rule.get("record")), names - allowed)
        text = " ".join(rule.get("annotations", {}).values())
        mentioned = set(re.findall(r"\bemqx_clients?_[a-z0-9_]+", text))
        assert mentioned <= allowed, (rule.get("alert"), mentioned - allowed)


def test_committed_rules_match_their_generator(tmp_path: Path) -> None:
    result = run(sys.executable, GENERATOR, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written, "the generator wrote nothing"
    for relative in written:
        assert (tmp_path / relative).read_text() == (ROOT / "deploy" / relative).read_text(), (
            f"deploy/{relative} is stale: run python3 deploy/generate_rules.py")
    prometheus_rule = load_yaml(ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml")
    assert prometheus_rule["spec"]["groups"] == (
        load_yaml(RECORDING)["groups"] + load_yaml(ALERTS)["groups"])


def test_generator_settings_reach_every_selector_and_grouping(tmp_path: Path) -> None:
    """No job or label name is hard-coded: a user's selector and target labels go everywhere."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "selector": 'job="mqtt-clients", env="prod"',
        "job_labels": ["k8s_namespace", "job"],
        "cluster_label": "emqx_cluster",
        "thresholds": {"client_drop_rate": 2.5},
        "for": {"EMQXClientMqueueFilling": "7m"},
    }))
    result = run(sys.executable, GENERATOR, "--settings", settings, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    rules = [r for path in ("recording.yml", "alerts.yml")
             for g in load_yaml(tmp_path / "prometheus" / path)["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        expr = re.sub(r"#[^\n]*", "", rule["expr"])  # comments may name metrics
        assert "emqx-client-exporter" not in expr, rule
        assert not re.search(r"\bcluster\b|\bnamespace\b", expr), rule
        for name in promql_metric_names(expr) - recorded - {"ALERTS"}:
            uses = re.findall(rf"(?<![:\w]){name}(?![:\w])(\{{[^}}]*)?", expr)
            assert uses, (name, expr)
            for matchers in uses:
                assert matchers.startswith('{job="mqtt-clients", env="prod"'), (name, expr)
    by_name = {r.get("alert", r.get("record")): r for r in rules}
    assert by_name["EMQXClientMqueueFilling"]["for"] == "7m"
    assert "> 2.5" in by_name["EMQXClientDroppingMessages"]["expr"]
    stopped = by_name["EMQXNodeStopped"]["expr"]
    assert "by (k8s_namespace, job, instance, emqx_cluster, node)" in stopped
    bad = tmp_path / "bad.yaml"
    bad.write_text("threshold: {x: 1}\n")
    result = run(sys.executable, GENERATOR, "--settings", bad, "--out-dir", tmp_path)
    assert result.returncode != 0 and "unknown setting 'threshold'" in result.stderr


@pytest.mark.promtool
def test_amtool_check_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail("amtool is required in CI: install prometheus-alertmanager")
        pytest.skip("amtool not found: install the Debian package prometheus-alertmanager")
    result = run(amtool, "check-config", ALERTMANAGER_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 inhibit rules" in result.stdout, result.stdout


def test_inhibitions_name_existing_alerts() -> None:
    names = {r["alert"] for r in alert_rules()}
    config = load_yaml(ALERTMANAGER_CONFIG)
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname(=~|=)"([^"]*)"', matcher)
            assert m, matcher
            listed = set(m.group(2).split("|"))
            assert listed <= names, listed - names
        assert "job" in rule["equal"], rule


def test_exporter_inhibitions_reach_only_that_exporter() -> None:
    """A down (or blind) exporter inhibits only alerts with its `instance`: one down replica of a
    sharded job must not silence the alerts of the others (issue 18)."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    exporter_sources = {"EMQXClientExporterDown", "EMQXClientExporterTargetMissing",
                        "EMQXClientExporterEMQXUnreachable",
                        "EMQXClientExporterCredentialsRejected", "EMQXClientExporterRateLimited",
                        "EMQXClientExporterNodeWalkFailing"}
    seen = set()
    for rule in config["inhibit_rules"]:
        (source,) = rule["source_matchers"]
        names = set(re.fullmatch(r'alertname=~?"([^"]*)"', source).group(1).split("|"))  # type: ignore[union-attr]
        if names & exporter_sources:
            assert "instance" in rule["equal"], rule
            seen |= names & exporter_sources
    assert seen == exporter_sources


def test_metric_name_lexer() -> None:
    expr = (
        'topk($topn, max by (cluster, clientid) (rate(a_total{x="b_total"}[$__rate_interval])'
        " * on (cluster, clientid) group_left (node) info_metric offset 5m)) > bool 0.8e1"
        ' unless absent(up{job="j"}) or histogram_quantile(0.9, sum by (le) (h_bucket[5m]))'
    )
    assert promql_metric_names(expr) == {"a_total", "info_metric", "up", "h_bucket"}


# --------------------------------------------------------------------------------------------
# dashboards


def test_dashboards_exist() -> None:
    names = {p.name for p in DASHBOARDS}
    assert {"emqx-clients-fleet.json", "emqx-clients-drilldown.json"} <= names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"]
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "cluster" in variables
    assert variables["cluster"]["allValue"] == ".*"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}

    ids = set()
    occupied: dict[tuple[int, int], str] = {}
    top_level = dashboard["panels"]
    for panel in walk_panels(top_level):
        assert panel["id"] not in ids, f"duplicate panel id {panel['id']}"
        ids.add(panel["id"])
        pos = panel["gridPos"]
        assert pos["w"] > 0, panel["title"]
        assert 0 <= pos["x"] <= 24 - pos["w"], panel["title"]
        if any(panel is p for p in top_level):
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                    occupied[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_dashboard_metrics_are_in_the_contract() -> None:
    allowed = contract_metric_names() | recording_names() | distribution_sample_names()
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        queries = dashboard_exprs(dashboard) + [
            ("variable", e) for e in variable_query_exprs(dashboard)
        ]
        for title, expr in queries:
            names = promql_metric_names(expr)
            assert names, (path.name, title, expr)
            assert names <= allowed, (path.name, title, names - allowed)


def test_dashboards_match_their_generator(tmp_path: Path) -> None:
    result = run(sys.executable, GRAFANA_DIR / "generate_dashboards.py", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    generated = sorted(p.name for p in tmp_path.glob("*.json"))
    assert generated == [p.name for p in DASHBOARDS]
    for name in generated:
        assert (tmp_path / name).read_text() == (GRAFANA_DIR / name).read_text(), (
            f"grafana/{name} differs from its generator: run python3 grafana/generate_dashboards.py"
        )


# --------------------------------------------------------------------------------------------
# dashboards at 100k exported clients


def panels_of(path: Path) -> list[dict[str, Any]]:
    return [p for p in walk_panels(load_dashboard(path)["panels"]) if p["type"] != "row"]


#: Per-client families: a query over them without a bound returns one row per client.
def per_client_names() -> set[str]:
    return {n for n in contract_metric_names() if n.startswith("emqx_client_")
            and not n.startswith("emqx_client_exporter_")} | {
        r for r in recording_names() if r.startswith("clientid:")}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_table_is_bounded(path: Path) -> None:
    for panel in panels_of(path):
        if panel["type"] != "table":
            continue
        for target in panel["targets"]:
            expr = target["expr"].strip()
            bounded = re.match(r"(topk|bottomk)\(", expr) or 'clientid="$clientid"' in expr
            assert bounded, f"{panel['title']}: unbounded table: {expr}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_rate_and_peak_panels_step_no_finer_than_the_poll_interval(path: Path) -> None:
    checked = 0
    for panel in panels_of(path):
        exprs = [t["expr"] for t in panel["targets"]]
        if any("rate(" in e or "_over_time(" in e for e in exprs):
            assert panel.get("interval") == "30s", panel["title"]
            checked += 1
    assert checked


def test_peak_panels_for_queue_and_inflight() -> None:
    exprs = [t["expr"] for path in DASHBOARDS for p in panels_of(path) for t in p["targets"]]
    for what in ("mqueue", "inflight"):
        assert any("max_over_time(" in e and what in e for e in exprs), what


def test_node_status_panel_and_official_links() -> None:
    fleet = load_dashboard(GRAFANA_DIR / "emqx-clients-fleet.json")
    status = [p for p in panels_of(GRAFANA_DIR / "emqx-clients-fleet.json")
              if "node:emqx_client_exporter_node_up:max" in p["targets"][0]["expr"]]
    assert status and status[0]["type"] == "stat"
    for path in DASHBOARDS:
        links = load_dashboard(path)["links"]
        assert any("github.com/emqx/emqx-exporter" in link.get("url", "") for link in links)
    assert fleet["__inputs"][0]["pluginId"] == "prometheus"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_import_asks_for_the_data_source(path: Path) -> None:
    dashboard = load_dashboard(path)
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    (var,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert var["current"]["value"] == "${" + ds_input["name"] + "}"


def test_clientid_variable_is_bounded_and_loaded_once() -> None:
    dashboard = load_dashboard(GRAFANA_DIR / "emqx-clients-drilldown.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    clientid = variables["clientid"]
    assert re.match(r"query_result\(topk\(\d+,", clientid["query"]), clientid["query"]
    assert clientid["regex"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["refresh"] == 1, f"${var['name']} reloads on every time change"


def test_heatmaps_cover_every_distribution_family() -> None:
    heatmaps = [p for p in panels_of(GRAFANA_DIR / "emqx-clients-fleet.json")
                if p["type"] == "heatmap"]
    shown = {n.removesuffix("_bucket") for p in heatmaps
             for n in promql_metric_names(p["targets"][0]["expr"])}
    assert shown == DISTRIBUTION_FAMILIES
    for panel in heatmaps:
        assert panel["targets"][0]["format"] == "heatmap"
        assert "sum by (le)" in panel["targets"][0]["expr"]


#: Prometheus' default --query.max-samples.
MAX_SAMPLES = 50_000_000


def test_no_query_reads_more_than_max_samples_at_100k_clients() -> None:
    """At 100k exported clients, 30 s scrapes and the default 6 h range, a query over the
    per-client series of every client is an instant table whose window holds no more samples
    than Prometheus allows (`changes(...[$__range])` did: 72M)."""
    clients, scrape = 100_000, 30
    per_client = per_client_names()
    for path in DASHBOARDS:
        for panel in panels_of(path):
            for target in panel["targets"]:
                expr = target["expr"]
                if not promql_metric_names(expr) & per_client or 'clientid="$clientid"' in expr:
                    continue
                assert target.get("instant"), (path.name, panel["title"], "a range of every client")
                windows = re.findall(r"\[([^\]]+)\]", substitute_grafana_vars(expr, __range="6h"))
                seconds = max((_duration(w) for w in windows), default=scrape)
                samples = clients * max(1, seconds // scrape)
                assert samples <= MAX_SAMPLES, (path.name, panel["title"], expr, samples)


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    m = re.fullmatch(r"(\d+)([smhd])", text.strip())
    assert m, text
    return int(m.group(1)) * units[m.group(2)]
