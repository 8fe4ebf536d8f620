"""Alert rules, their promtool unit tests, the Grafana dashboards and the deployment files.

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

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
RECORDING = PROM_DIR / "recording.yml"
RULE_FILES = [p for p in (ALERTS, RECORDING) if p.exists()]
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
SCRAPE_CONFIG = PROM_DIR / "prometheus.yml"
GRAFANA_DIR = ROOT / "grafana"
DASHBOARDS = sorted(GRAFANA_DIR.glob("*.json"))
K8S_DIR = ROOT / "deploy" / "kubernetes"
RENDER_SCRIPT = K8S_DIR / "render-prometheusrule.py"
PROMETHEUS_RULE = K8S_DIR / "prometheusrule.yaml"


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
        "emqx_client_exporter_duplicate_clients_total",
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


def contract_metric_names() -> frozenset[str]:
    """Every sample name the exporter exposes, histogram series included."""
    names = set(CONTRACT_METRICS)
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


def test_alerts_are_annotated() -> None:
    seen = set()
    for rule in alert_rules():
        name = rule["alert"]
        assert name not in seen, f"duplicate alert {name}"
        seen.add(name)
        assert re.fullmatch(r"EMQX[A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), name
        assert "Runbook:" in annotations.get("description", ""), name
        assert "for" in rule, f"{name} fires on a single evaluation"


def test_rule_metrics_are_in_the_contract() -> None:
    allowed = contract_metric_names() | PROMETHEUS_SCRAPE_SERIES
    for rule in all_rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["expr"]
        assert names <= allowed, (rule.get("alert", rule.get("record")), names - allowed)
        # metric names in annotation text and template queries
        text = " ".join(rule.get("annotations", {}).values())
        mentioned = set(re.findall(r"\bemqx_clients?_[a-z0-9_]+", text))
        assert mentioned <= allowed, (rule.get("alert"), mentioned - allowed)


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
    allowed = contract_metric_names()
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
# deployment files


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in k8s_documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def test_kubernetes_manifests_parse() -> None:
    docs = k8s_documents()
    kinds = {d["kind"] for d in docs}
    assert {
        "StatefulSet",
        "ConfigMap",
        "Secret",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "Kustomization",
    } <= kinds
    for doc in docs:
        assert doc.get("apiVersion"), doc["__file__"]
        assert doc.get("kind"), doc["__file__"]
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], doc["__file__"]
    kustomization = k8s_object("Kustomization")
    listed = set(kustomization["resources"])
    on_disk = {d["__file__"] for d in docs if d["kind"] != "Kustomization"}
    assert listed == on_disk


def test_prometheusrule_matches_render_script() -> None:
    result = run(sys.executable, RENDER_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMETHEUS_RULE.read_text(encoding="utf-8"), (
        "deploy/kubernetes/prometheusrule.yaml is stale: run "
        "python3 deploy/kubernetes/render-prometheusrule.py > deploy/kubernetes/prometheusrule.yaml"
    )
    assert yaml.safe_load(result.stdout)["spec"] == load_yaml(ALERTS)


def test_statefulset_shards_and_hardening() -> None:
    sts = k8s_object("StatefulSet")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    argv = container.get("command", []) + container["args"]
    assert argv[:2] == ["emqx-client-exporter", "run"]
    assert argv[argv.index("--config") + 1] == "/etc/emqx-client-exporter/config.yaml"
    shard = argv[argv.index("--shard") + 1]
    assert shard == f"$(POD_INDEX)/{spec['replicas']}", "shard count must equal replicas"
    assert spec["replicas"] == 3
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["EMQX_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "emqx-client-exporter-api"
    secret_file = Path(env["EMQX_API_SECRET_FILE"]["value"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_mount = next(m for m in mounts.values() if m["mountPath"] == str(secret_file.parent))
    secret_volume = volumes[secret_mount["name"]]["secret"]
    assert secret_volume["secretName"] == "emqx-client-exporter-api"
    assert secret_file.name in {i["path"] for i in secret_volume["items"]}
    assert secret_volume["defaultMode"] == 0o440
    secret = k8s_object("Secret")
    keys = {i["key"] for i in secret_volume["items"]} | {
        env["EMQX_API_KEY"]["valueFrom"]["secretKeyRef"]["key"]
    }
    assert keys <= set(secret["stringData"])
    config_mount = next(m for m in mounts.values() if m["mountPath"] == "/etc/emqx-client-exporter")
    cm_name = volumes[config_mount["name"]]["configMap"]["name"]
    assert "config.yaml" in k8s_object("ConfigMap", cm_name)["data"]

    assert container["ports"] == [{"name": "metrics", "containerPort": 9877, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert pod["securityContext"]["runAsNonRoot"] is True
    csc = container["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])

    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    services = [d for d in k8s_documents() if d["kind"] == "Service"]
    assert any(s["spec"].get("clusterIP") == "None" for s in services)
    assert spec["serviceName"] in {s["metadata"]["name"] for s in services}
    for svc in services:
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {"name": "metrics", "port": 9877}.items() <= svc["spec"]["ports"][0].items()


def test_servicemonitor_selects_one_service() -> None:
    monitor = k8s_object("ServiceMonitor")
    spec = monitor["spec"]
    assert spec["sampleLimit"] > 20000
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["interval"] == "30s"
    selector = spec["selector"]["matchLabels"]
    services = [d for d in k8s_documents() if d["kind"] == "Service"]
    selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 1, "the ServiceMonitor must select exactly one Service"
    # the alert rules that read `up` match on the job, which is the Service's name
    assert selected[0]["metadata"]["name"] == "emqx-client-exporter"
    assert 'up{job="emqx-client-exporter"}' in ALERTS.read_text()


def test_example_config_uses_the_documented_keys() -> None:
    config = yaml.safe_load(k8s_object("ConfigMap")["data"]["config.yaml"])
    known = {"emqx_url", "api_key", "api_secret", "listen", "interval", "log_level"}
    known |= {"log_format", "timeout", "clusters", "per_client", "classes", "aggregate_labels"}
    assert set(config) <= known
    assert "api_key" not in config, "credentials belong in the Secret"
    assert "api_secret" not in config, "credentials belong in the Secret"
    assert set(config["per_client"]) <= {"watch", "allow", "deny", "top_k", "max_series"}
    assert set(config["per_client"]["top_k"]) <= {"mqueue_fill", "drop_rate", "byte_rate"}
    for cls in config["classes"]:
        assert set(cls) in ({"name", "clientid"}, {"name", "username"})
        re.compile(cls.get("clientid") or cls["username"])
    assert config["listen"].endswith(":9877")


def test_prometheus_scrape_config() -> None:
    config = load_yaml(SCRAPE_CONFIG)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "emqx-client-exporter"]
    assert job["scrape_interval"] == "30s"
    assert job["sample_limit"] > 0
    assert job["honor_labels"] is True
    assert "localhost:9877" in job["static_configs"][0]["targets"]
    assert {(PROM_DIR / f).resolve() for f in config["rule_files"]} >= {ALERTS.resolve()}


def test_systemd_unit() -> None:
    unit = (ROOT / "deploy" / "systemd" / "emqx-client-exporter.service").read_text()
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["DynamicUser"] == ["yes"]
    assert settings["EnvironmentFile"]
    assert "run --config" in settings["ExecStart"][0]
    for option in ("ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateTmp"):
        assert option in settings, option


def test_dockerfile() -> None:
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    instructions = [ln.split(None, 1) for ln in lines if ln.strip() and not ln.startswith("#")]
    last = {word.upper(): rest for word, *rest in instructions}
    assert last["FROM"][0].startswith("python:3.11-slim")
    assert last["EXPOSE"][0].strip() == "9877"
    assert "emqx-client-exporter" in last["ENTRYPOINT"][0]
    user = [rest[0] for word, *rest in instructions if word.upper() == "USER"]
    assert user
    assert not user[-1].startswith(("root", "0"))
