#!/usr/bin/env python3
"""Generate the Grafana dashboards of emqx-client-exporter as JSON.

The committed ``*.json`` files beside this script are its output; edit this file and run

    python3 grafana/generate_dashboards.py            # rewrites grafana/*.json
    python3 grafana/generate_dashboards.py --out-dir /tmp/x

tests/test_rules.py regenerates them into a temporary folder and compares, so hand edits to the
JSON fail the tests. Every query is a plain ``targets[].expr`` (PromQL over the metric contract
only; Grafana variables ``$cluster``, ``$node``, ``$class``, ``$clientid``, ``$topn``,
``$__rate_interval`` and ``$__range`` are substituted by Grafana).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]

DS: Json = {"type": "prometheus", "uid": "${datasource}"}
FLEET_UID = "emqx-clients-fleet"
DRILL_UID = "emqx-clients-drilldown"

def opt_in(*parts: str) -> str:
    """What a panel of opt-in per-client parts needs, for its description."""
    named = " and ".join(f"`{p}`" for p in parts)
    return (f" Needs the opt-in per-client part{'s' if len(parts) > 1 else ''} {named}: add "
            f"{'them' if len(parts) > 1 else 'it'} to `per_client.parts` in the exporter's "
            f"configuration (the defaults stay on), e.g. `parts: [..., {parts[0]}]`.")


# Label matchers shared by the queries.
C = 'cluster=~"$cluster"'
CN = 'cluster=~"$cluster", node=~"$node"'
CNK = 'cluster=~"$cluster", node=~"$node", class=~"$class"'
CL = 'cluster=~"$cluster", clientid="$clientid"'
RI = "[$__rate_interval]"
#: Min interval of every panel that computes a rate or peak: the exporter's default poll
#: interval. A shorter step only repeats the same snapshot (change it with `interval:`).
POLL_INTERVAL = "30s"
#: Bound of the client id variable: a dropdown of 100k ids would stall the browser.
CLIENTID_CHOICES = 1000
#: Official dashboards of EMQX's own exporter, for broker-wide metrics.
EMQX_DASHBOARDS_URL = "https://github.com/emqx/emqx-exporter/tree/main/grafana-dashboard"
#: Distribution families (OpenMetrics gaugehistograms: `_bucket{le}`, `_gcount`, `_gsum` in
#: the text format) labelled by the aggregate labels, shown as heatmaps.
DISTRIBUTIONS = (
    ("emqx_clients_mqueue_fill_ratio", "Queue fill of clients", "percentunit"),
    ("emqx_clients_inflight_fill_ratio", "Inflight fill of clients", "percentunit"),
    ("emqx_clients_received_bytes_per_second", "Received bytes / s per client", "Bps"),
    ("emqx_clients_sent_bytes_per_second", "Sent bytes / s per client", "Bps"),
    ("emqx_clients_received_messages_per_second", "Received messages / s per client", "mps"),
    ("emqx_clients_sent_messages_per_second", "Sent messages / s per client", "mps"),
    ("emqx_clients_dropped_messages_per_second", "Dropped messages / s per client", "mps"),
    ("emqx_clients_connection_age_seconds", "Connection age of clients", "s"),
    ("emqx_clients_subscriptions_per_client", "Subscriptions per client", "short"),
)

# The join that lends node and username from emqx_client_info to a per-client expression that
# still has (cluster, job, instance, clientid); the node filter applies through it.
INFO_JOIN = (
    "* on (cluster, job, instance, clientid) group_left (node, username)\n"
    f"      emqx_client_info{{{CN}}}"
)
BY_CLIENT = "sum by (cluster, job, instance, clientid)"
ROGUE_BY = "max by (cluster, clientid, node, username)"


class Layout:
    """Place panels left to right on Grafana's 24-column grid, wrapping into new lines."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = 0
        self.y = 0
        self.line_h = 0
        self.next_id = 1
        self.collapsed_row: Json | None = None

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str, *, collapsed: bool = False) -> None:
        self.y += self.line_h
        self.x = 0
        self.line_h = 0
        row: Json = {
            "type": "row",
            "id": self._id(),
            "title": title,
            "collapsed": collapsed,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "panels": [],
        }
        self.panels.append(row)
        self.collapsed_row = row if collapsed else None
        self.y += 1

    def add(self, panel: Json, size: tuple[int, int]) -> None:
        w, h = size
        if self.x + w > 24:
            self.y += self.line_h
            self.x = 0
            self.line_h = 0
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.line_h = max(self.line_h, h)
        if self.collapsed_row is not None:
            self.collapsed_row["panels"].append(panel)
        else:
            self.panels.append(panel)


def target(expr: str, legend: str = "", *, ref: str = "A", table: bool = False) -> Json:
    t: Json = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
    }
    if table:
        t.update({"format": "table", "instant": True, "range": False})
    else:
        t.update({"range": True, "instant": False})
    return t


def targets(*pairs: tuple[str, str]) -> list[Json]:
    return [target(e, lg, ref=chr(ord("A") + i)) for i, (e, lg) in enumerate(pairs)]


def timeseries(
    title: str,
    description: str,
    tgts: list[Json],
    *,
    unit: str = "short",
    stack: bool = False,
    min0: bool = True,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stack else 8,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if min0:
        defaults["min"] = 0
    panel: Json = {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
    }
    return with_min_interval(panel)


def with_min_interval(panel: Json) -> Json:
    """Rates and peaks step no finer than the poll interval (the data changes no faster)."""
    if any(w in t["expr"] for t in panel["targets"] for w in ("rate(", "_over_time(")):
        panel["interval"] = POLL_INTERVAL
    return panel


def heatmap(family: str, title: str, unit: str) -> Json:
    """A distribution family's buckets over time (Grafana de-accumulates `le` buckets)."""
    tgt = target(f'sum by (le) ({family}_bucket{{{CNK}}})', "{{le}}")
    tgt["format"] = "heatmap"
    return {
        "type": "heatmap",
        "title": title,
        "description": f"Clients per bucket of {family} (a gauge histogram the exporter "
                       "computes each poll over every listed client).",
        "datasource": DS,
        "interval": POLL_INTERVAL,
        "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}},
                        "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"unit": unit, "axisPlacement": "left"},
            "rowsFrame": {"layout": "auto"},
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "cellGap": 1,
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        },
        "targets": [tgt],
    }


def up_down_mappings(zero: str, one: str) -> list[Json]:
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": zero, "color": "red", "index": 0},
                "1": {"text": one, "color": "green", "index": 1},
            },
        }
    ]


def state_timeline(title: str, description: str, tgts: list[Json]) -> Json:
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "mappings": up_down_mappings("down", "up"),
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                },
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": tgts,
    }


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    steps: list[tuple[str, float | None]] | None = None,
    mappings: list[Json] | None = None,
    no_value: str | None = None,
    graph: bool = True,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in (steps or [("green", None)])],
        },
        "mappings": mappings or [],
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    panel: Json = {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "targets": [target(expr)],
    }
    return with_min_interval(panel)


def drill_link() -> list[Json]:
    return [
        {
            "title": "Open ${__data.fields.clientid} in the client drill-down",
            "url": (
                f"/d/{DRILL_UID}/emqx-client-drill-down?var-clientid=${{__data.fields.clientid}}"
                "&${datasource:queryparam}&${cluster:queryparam}&${__url_time_range}"
            ),
        }
    ]


def table(
    title: str,
    description: str,
    expr: str,
    *,
    value_name: str,
    unit: str = "short",
    hide: tuple[str, ...] = ("Time", "__name__", "job", "instance"),
    link_clientid: bool = True,
) -> Json:
    overrides: list[Json] = []
    if link_clientid:
        overrides.append(
            {
                "matcher": {"id": "byName", "options": "clientid"},
                "properties": [{"id": "links", "value": drill_link()}],
            }
        )
    overrides.append(
        {
            "matcher": {"id": "byName", "options": value_name},
            "properties": [
                {"id": "unit", "value": unit},
                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            ],
        }
    )
    panel: Json = {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "text", "value": None}],
                },
            },
            "overrides": overrides,
        },
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
            "sortBy": [{"displayName": value_name, "desc": True}],
        },
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": dict.fromkeys(hide, True),
                    "renameByName": {"Value": value_name},
                },
            }
        ],
        "targets": [target(expr, table=True)],
    }
    return with_min_interval(panel)


def datasource_var() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        # Grafana's import screen asks for DS_PROMETHEUS (see __inputs) and puts its uid here.
        "current": {"selected": True, "text": "Prometheus", "value": "${DS_PROMETHEUS}"},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_var(
    name: str, label: str, query: str, *, all_: bool = True, multi: bool = True, desc: str = "",
    regex: str = "",
) -> Json:
    var: Json = {
        "name": name,
        "label": label,
        "description": desc,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": query,
        "current": {},
        "hide": 0,
        "includeAll": all_,
        "multi": multi,
        "options": [],
        # On dashboard load, not on every time range change.
        "refresh": 1,
        "regex": regex,
        "skipUrlSync": False,
        "sort": 1,
    }
    if all_:
        # ".*" also matches series without the label (single-cluster exporters, no classes).
        var["allValue"] = ".*"
    return var


def cluster_var() -> Json:
    return query_var(
        "cluster",
        "Cluster",
        "label_values(emqx_client_exporter_up, cluster)",
        desc="Only set when one exporter polls several named clusters or the scrape adds it.",
    )


def dashboard(
    uid: str, title: str, description: str, layout: Layout, variables: list[Json]
) -> Json:
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes emqx-client-exporter",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "type": "dashboards",
                "title": "EMQX client dashboards",
                "tags": ["emqx-client-exporter"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
            },
            {
                "type": "link",
                "title": "Official EMQX dashboards (broker-wide metrics)",
                "url": EMQX_DASHBOARDS_URL,
                "icon": "external link",
                "targetBlank": True,
                "tooltip": "Grafana dashboards of emqx/emqx-exporter",
            },
        ],
        "panels": layout.panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["emqx", "mqtt", "emqx-client-exporter"],
        "templating": {"list": variables},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --------------------------------------------------------------------------------------------
# Fleet overview


def fleet() -> Json:
    lay = Layout()
    lay.row("Overview")
    lay.add(
        stat(
            "Online clients",
            "Connected clients (emqx_clients_online) for the selected clusters, nodes and classes.",
            f"sum(emqx_clients_online{{{CNK}}})",
        ),
        (3, 4),
    )
    lay.add(
        stat(
            "Sessions",
            "Sessions, including offline persistent ones (emqx_clients_sessions).",
            f"sum(emqx_clients_sessions{{{CNK}}})",
        ),
        (3, 4),
    )
    lay.add(
        stat(
            "New connections / s",
            "New connections seen between polls; a lower bound (a client that reconnects twice "
            "within one poll interval counts once).",
            f"sum(rate(emqx_clients_connects_total{{{CNK}}}{RI}))",
            unit="cps",
        ),
        (3, 4),
    )
    lay.add(
        stat(
            "Messages in / s",
            "Messages published by the selected clients (emqx_clients_received_messages_total).",
            f"sum(rate(emqx_clients_received_messages_total{{{CNK}}}{RI}))",
            unit="mps",
        ),
        (3, 4),
    )
    lay.add(
        stat(
            "Dropped messages / s",
            "Messages EMQX dropped for or from the selected clients, both directions, all reasons.",
            f"sum(rate(emqx_clients_dropped_messages_total{{{CNK}}}{RI}))",
            unit="mps",
            steps=[("green", None), ("orange", 0.001), ("red", 1)],
        ),
        (3, 4),
    )
    lay.add(
        stat(
            "Saturated queues",
            "Clients whose message queue is at or above the exporter's saturation threshold "
            "(default 80% of capacity).",
            f"sum(emqx_clients_mqueue_saturated{{{CNK}}})",
            steps=[("green", None), ("orange", 1)],
        ),
        (3, 4),
    )
    lay.add(
        stat(
            "EMQX API reachable",
            "Worst emqx_client_exporter_up over the selected clusters: DOWN when any exporter's "
            "last poll failed to reach EMQX.",
            f"min(emqx_client_exporter_up{{{C}}})",
            mappings=up_down_mappings("DOWN", "OK"),
            steps=[("red", None), ("green", 1)],
            graph=False,
        ),
        (3, 4),
    )
    lay.add(
        stat(
            "Series left out by the cap",
            "Per-client series the exporters left out because of per_client.max_series.",
            f"sum(emqx_client_exporter_series_dropped{{{C}}})",
            steps=[("green", None), ("orange", 1)],
        ),
        (3, 4),
    )

    lay.row("Clients")
    lay.add(
        stat(
            "EMQX node status",
            "Per EMQX node: walked by the last poll, or stopped / not walked (recording rule "
            "node:emqx_client_exporter_node_up:max over emqx_client_exporter_node_up).",
            f"min by (cluster, node) (node:emqx_client_exporter_node_up:max{{{CN}}})",
            mappings=up_down_mappings("STOPPED / NOT WALKED", "RUNNING"),
            steps=[("red", None), ("green", 1)],
            graph=False,
        ),
        (24, 3),
    )
    lay.add(
        timeseries(
            "Online clients by node",
            "Connected clients per EMQX node.",
            targets(
                (f"sum by (cluster, node) (emqx_clients_online{{{CNK}}})", "{{cluster}} {{node}}")
            ),
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Online clients by class",
            "Connected clients per client class (classes are regex rules in the exporter's "
            "config; unmatched clients are 'other'; empty when class is not an aggregate "
            "label).",
            targets(
                (f"sum by (cluster, class) (emqx_clients_online{{{CNK}}})", "{{cluster}} {{class}}")
            ),
            stack=True,
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Offline sessions by class",
            "Persistent sessions whose client is not connected: sessions minus online clients.",
            targets(
                (
                    f"sum by (cluster, class) (emqx_clients_sessions{{{CNK}}})\n"
                    f"- sum by (cluster, class) (emqx_clients_online{{{CNK}}})",
                    "{{cluster}} {{class}}",
                )
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "New connections / s by class",
            "New connections seen between polls (a lower bound).",
            targets(
                (
                    f"sum by (cluster, class) (rate(emqx_clients_connects_total{{{CNK}}}{RI}))",
                    "{{cluster}} {{class}}",
                )
            ),
            unit="cps",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Connections per online client per hour",
            "New connections per hour divided by online clients: about 1 / mean connection "
            "lifetime in hours. A jump is a reconnect storm (alert EMQXClientsReconnectStorm).",
            targets(
                (
                    "3600 * sum by (cluster, class) "
                    f"(rate(emqx_clients_connects_total{{{CNK}}}{RI}))\n"
                    f"/ sum by (cluster, class) (emqx_clients_online{{{CNK}}})",
                    "{{cluster}} {{class}}",
                )
            ),
        ),
        (8, 8),
    )

    lay.row("Traffic")
    lay.add(
        timeseries(
            "Bytes / s",
            "Bytes received from and sent to the selected clients.",
            targets(
                (
                    f"sum by (cluster) (rate(emqx_clients_received_bytes_total{{{CNK}}}{RI}))",
                    "{{cluster}} received",
                ),
                (
                    f"sum by (cluster) (rate(emqx_clients_sent_bytes_total{{{CNK}}}{RI}))",
                    "{{cluster}} sent",
                ),
            ),
            unit="Bps",
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Bytes / s by class",
            "Received plus sent bytes per client class.",
            targets(
                (
                    "sum by (cluster, class) "
                    f"(rate(emqx_clients_received_bytes_total{{{CNK}}}{RI}))",
                    "{{cluster}} {{class}} received",
                ),
                (
                    f"sum by (cluster, class) (rate(emqx_clients_sent_bytes_total{{{CNK}}}{RI}))",
                    "{{cluster}} {{class}} sent",
                ),
            ),
            unit="Bps",
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Messages / s",
            "PUBLISH messages received from (published by) and sent to the selected clients.",
            targets(
                (
                    f"sum by (cluster) (rate(emqx_clients_received_messages_total{{{CNK}}}{RI}))",
                    "{{cluster}} received",
                ),
                (
                    f"sum by (cluster) (rate(emqx_clients_sent_messages_total{{{CNK}}}{RI}))",
                    "{{cluster}} sent",
                ),
            ),
            unit="mps",
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Messages / s by class",
            "Received and sent messages per client class.",
            targets(
                (
                    "sum by (cluster, class) "
                    f"(rate(emqx_clients_received_messages_total{{{CNK}}}{RI}))",
                    "{{cluster}} {{class}} received",
                ),
                (
                    "sum by (cluster, class) "
                    f"(rate(emqx_clients_sent_messages_total{{{CNK}}}{RI}))",
                    "{{cluster}} {{class}} sent",
                ),
            ),
            unit="mps",
        ),
        (12, 8),
    )

    lay.row("Queues and drops")
    lay.add(
        timeseries(
            "Dropped messages / s by direction and reason",
            "received: dropped from what clients published; sent: not delivered to subscribers "
            "(queue_full, expired, too_large, ...).",
            targets(
                (
                    f"sum by (cluster, direction, reason) "
                    f"(rate(emqx_clients_dropped_messages_total{{{CNK}}}{RI}))",
                    "{{cluster}} {{direction}} {{reason}}",
                )
            ),
            unit="mps",
            stack=True,
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Messages dropped from full queues / s by class",
            "Messages not delivered because a session's queue was full: EMQX counts them in "
            "send_msg.dropped.queue_full on every version (mqueue_dropped stays 0 before 5.8.5).",
            targets(
                (
                    f"sum by (cluster, class) (rate(emqx_clients_dropped_messages_total"
                    f"{{{CNK},direction=\"sent\",reason=\"queue_full\"}}{RI}))",
                    "{{cluster}} {{class}}",
                )
            ),
            unit="mps",
            stack=True,
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Queued messages by node",
            "Messages waiting in session queues (sum of mqueue lengths).",
            targets(
                (
                    f"sum by (cluster, node) (emqx_clients_mqueue_messages{{{CNK}}})",
                    "{{cluster}} {{node}}",
                )
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Inflight messages by node",
            "QoS 1/2 messages sent and not yet acknowledged (sum of inflight windows).",
            targets(
                (
                    f"sum by (cluster, node) (emqx_clients_inflight_messages{{{CNK}}})",
                    "{{cluster}} {{node}}",
                )
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Queue and inflight peaks by node",
            "The highest queued and inflight messages per node within each step (the current "
            "value hides short bursts between two points).",
            targets(
                (
                    f"sum by (cluster, node) "
                    f"(max_over_time(emqx_clients_mqueue_messages{{{CNK}}}[$__interval]))",
                    "queued peak {{cluster}} {{node}}",
                ),
                (
                    f"sum by (cluster, node) "
                    f"(max_over_time(emqx_clients_inflight_messages{{{CNK}}}[$__interval]))",
                    "inflight peak {{cluster}} {{node}}",
                ),
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Subscriptions by node",
            "Subscriptions held by the selected clients.",
            targets(
                (
                    f"sum by (cluster, node) (emqx_clients_subscriptions{{{CNK}}})",
                    "{{cluster}} {{node}}",
                )
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Clients with saturated queue or inflight window by class",
            "Clients whose queue or inflight fill ratio is at or above the saturation threshold "
            "(alerts EMQXClientsMqueueSaturated / EMQXClientsInflightSaturated).",
            targets(
                (
                    f"sum by (cluster, class) (emqx_clients_mqueue_saturated{{{CNK}}})",
                    "{{cluster}} {{class}} queue",
                ),
                (
                    f"sum by (cluster, class) (emqx_clients_inflight_saturated{{{CNK}}})",
                    "{{cluster}} {{class}} inflight",
                ),
            ),
        ),
        (24, 8),
    )

    lay.row("Distributions over all clients")
    for family, title, unit in DISTRIBUTIONS:
        lay.add(heatmap(family, title, unit), (8, 8))

    lay.row("Exporter health")
    lay.add(
        state_timeline(
            "EMQX API reachable per exporter",
            "emqx_client_exporter_up: the last poll reached EMQX and listed at least one node.",
            targets((f"emqx_client_exporter_up{{{C}}}", "{{cluster}} {{instance}}")),
        ),
        (12, 6),
    )
    lay.add(
        state_timeline(
            "Node walk per EMQX node",
            "emqx_client_exporter_node_up: the exporter listed the clients of that node.",
            targets((f"emqx_client_exporter_node_up{{{CN}}}", "{{cluster}} {{node}}")),
        ),
        (12, 6),
    )
    lay.add(
        timeseries(
            "Poll duration vs interval",
            "Duration of the last poll against the configured poll interval; a poll that takes "
            "longer than the interval makes the snapshot stale.",
            targets(
                (
                    "max by (cluster, instance) "
                    f"(emqx_client_exporter_poll_duration_seconds{{{C}}})",
                    "{{cluster}} {{instance}} poll",
                ),
                (
                    f"max by (cluster) (emqx_client_exporter_poll_interval_seconds{{{C}}})",
                    "{{cluster}} interval",
                ),
            ),
            unit="s",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Snapshot age",
            "Age of the snapshot served to Prometheus, and time since the last successful poll.",
            targets(
                (
                    "max by (cluster, instance) "
                    f"(emqx_client_exporter_snapshot_age_seconds{{{C}}})",
                    "{{cluster}} {{instance}} snapshot age",
                ),
                (
                    "time() - max by (cluster, instance) "
                    f"(emqx_client_exporter_last_poll_success_timestamp_seconds{{{C}}})",
                    "{{cluster}} {{instance}} since last success",
                ),
            ),
            unit="s",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Exported series",
            "Series in the snapshot by kind, and per-client series left out by the cap.",
            targets(
                (
                    f"sum by (cluster, kind) (emqx_client_exporter_series{{{C}}})",
                    "{{cluster}} {{kind}}",
                ),
                (
                    f"sum by (cluster) (emqx_client_exporter_series_dropped{{{C}}})",
                    "{{cluster}} left out by the cap",
                ),
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "EMQX API requests / s",
            "Requests to the EMQX management API by endpoint and status code.",
            targets(
                (
                    "sum by (cluster, endpoint, code) "
                    f"(rate(emqx_client_exporter_api_requests_total{{{C}}}{RI}))",
                    "{{cluster}} {{endpoint}} {{code}}",
                )
            ),
            unit="reqps",
            stack=True,
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "EMQX API errors / s by reason",
            "Failed API calls by reason (timeouts, connection errors, HTTP status, decode errors).",
            targets(
                (
                    "sum by (cluster, reason) "
                    f"(rate(emqx_client_exporter_api_errors_total{{{C}}}{RI}))",
                    "{{cluster}} {{reason}}",
                )
            ),
            unit="reqps",
            stack=True,
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "EMQX API latency by endpoint",
            "95th percentile and mean duration of API requests, including the body read.",
            targets(
                (
                    "histogram_quantile(0.95, sum by (cluster, endpoint, le) "
                    f"(rate(emqx_client_exporter_api_request_duration_seconds_bucket{{{C}}}{RI})))",
                    "{{cluster}} {{endpoint}} p95",
                ),
                (
                    "sum by (cluster, endpoint) "
                    f"(rate(emqx_client_exporter_api_request_duration_seconds_sum{{{C}}}{RI}))\n"
                    "/ sum by (cluster, endpoint) "
                    f"(rate(emqx_client_exporter_api_request_duration_seconds_count{{{C}}}{RI}))",
                    "{{cluster}} {{endpoint}} mean",
                ),
            ),
            unit="s",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Clients listed per node",
            "Clients returned by the last walk of each node's client list.",
            targets(
                (
                    f"sum by (cluster, node) (emqx_client_exporter_clients_listed{{{CN}}})",
                    "{{cluster}} {{node}}",
                )
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Duplicate clients / s",
            "Client rows seen twice in one walk (paging drift while clients connect); they are "
            "de-duplicated, a steady rate points at a very busy client list.",
            targets(
                (
                    "sum by (cluster) "
                    f"(rate(emqx_client_exporter_duplicate_clients_total{{{C}}}{RI}))",
                    "{{cluster}}",
                )
            ),
            unit="ops",
        ),
        (8, 8),
    )
    lay.add(
        table(
            "Exporter and EMQX versions",
            "emqx_client_exporter_build_info per exporter and cluster.",
            f"topk(100, emqx_client_exporter_build_info{{{C}}})",
            value_name="info",
            hide=("Time", "__name__", "job", "Value", "info"),
            link_clientid=False,
        ),
        (24, 5),
    )

    why_clients_disconnect(lay)

    return dashboard(
        FLEET_UID,
        "EMQX clients / Fleet overview",
        "Online clients, sessions, traffic, drops and saturation per node and class, "
        "and the health of emqx-client-exporter.",
        lay,
        [
            datasource_var(),
            cluster_var(),
            query_var("node", "Node", f"label_values(emqx_clients_online{{{C}}}, node)"),
            query_var(
                "class",
                "Class",
                f"label_values(emqx_clients_online{{{C}}}, class)",
                desc="Client classes; empty unless 'class' is in the exporter's aggregate.labels.",
            ),
        ],
    )


def why_clients_disconnect(lay: Layout) -> None:
    """EMQX's client events (`events:` in the exporter's config): why clients disconnect.

    Event counts are a lower bound (QoS 0, and nothing while the subscription is down); the
    subscription's own state is the last panel, so a quiet graph is never mistaken for calm.
    """
    lower_bound = (" From EMQX's client events (at most once): a lower bound, empty unless "
                   "the exporter has an events: section.")
    disconnects = f"emqx_clients_disconnected_events_total{{{CNK}}}"
    lay.row("Why clients disconnect (client events)")
    lay.add(
        timeseries(
            "Disconnects / s by reason",
            "Disconnects by EMQX's own reason: keepalive_timeout (silent devices), tcp_closed "
            "or sock_closed (socket lost without DISCONNECT), normal, kicked, discarded or "
            "takenover (taken over by a new connection)." + lower_bound,
            targets((f"sum by (cluster, reason) (rate({disconnects}{RI}))",
                     "{{cluster}} {{reason}}")),
            unit="cps",
            stack=True,
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Disconnects / s by class and reason",
            "The same by client class: which kind of device drops off, and why." + lower_bound,
            targets((f"sum by (cluster, class, reason) (rate({disconnects}{RI}))",
                     "{{cluster}} {{class}} {{reason}}")),
            unit="cps",
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Keepalive timeouts per online client per hour by class",
            "Keepalive timeouts per hour divided by online clients (alert "
            "EMQXClientsKeepaliveTimeoutSurge)." + lower_bound,
            targets((
                "3600 * sum by (cluster, class) (rate(emqx_clients_disconnected_events_total"
                f"{{{CNK}, reason=\"keepalive_timeout\"}}{RI}))\n"
                f"/ sum by (cluster, class) (emqx_clients_online{{{CNK}}})",
                "{{cluster}} {{class}}")),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Takeovers / s by class",
            "Connections taken over by a new one with the same client id (alert "
            "EMQXClientsTakeoverStorm; EMQX 4.x publishes none)." + lower_bound,
            targets((f"sum by (cluster, class) (rate(emqx_clients_takeover_events_total"
                     f"{{{CNK}}}{RI}))", "{{cluster}} {{class}}")),
            unit="cps",
        ),
        (8, 8),
    )
    lay.add(
        state_timeline(
            "Client events subscription",
            "emqx_client_exporter_events_up: 0 while the MQTT subscription is down and events "
            "are missed (alert EMQXClientExporterEventsDown).",
            targets((f"emqx_client_exporter_events_up{{{C}}}", "{{cluster}} {{instance}}")),
        ),
        (8, 8),
    )


# --------------------------------------------------------------------------------------------
# Client drill-down and rogues


def rogue(value_expr: str, *, positive: bool = False) -> str:
    """Rank clients by ``value_expr``, grouped by (cluster, job, instance, clientid)."""
    body = value_expr.replace("\n", "\n      ")
    inner = f"  {ROGUE_BY} (\n    (\n      {body}\n    )\n    {INFO_JOIN}\n  )"
    if positive:
        inner += " > 0"
    return f"topk($topn,\n{inner}\n)"


def drilldown() -> Json:
    lay = Layout()
    lay.row("Rogues: top $topn clients among the exported ones")
    lay.add(
        table(
            "Top $topn by message queue fill",
            "Queued messages / queue capacity (clients with an unlimited queue have no ratio). "
            "Click a client id to drill down.",
            rogue(
                f"emqx_client_mqueue_messages{{{C}}}\n"
                f"/ (emqx_client_mqueue_capacity_messages{{{C}}} > 0)"
            ),
            value_name="queue fill",
            unit="percentunit",
        ),
        (12, 9),
    )
    lay.add(
        table(
            "Top $topn by inflight fill",
            "Unacknowledged QoS 1/2 messages / inflight window: a full window is a slow consumer.",
            rogue(
                f"emqx_client_inflight_messages{{{C}}}\n"
                f"/ (emqx_client_inflight_capacity_messages{{{C}}} > 0)"
            ),
            value_name="inflight fill",
            unit="percentunit",
        ),
        (12, 9),
    )
    lay.add(
        table(
            "Top $topn by delivery drop rate",
            "Messages EMQX failed to deliver to the client (sent drops; on EMQX 3.x, which has "
            "none, queue drops). Only clients that drop are listed.",
            rogue(
                f"{BY_CLIENT} (rate(emqx_client_sent_messages_dropped_total{{{C}}}{RI}))\n"
                f"or {BY_CLIENT} (rate(emqx_client_mqueue_dropped_messages_total{{{C}}}{RI}))",
                positive=True,
            ),
            value_name="dropped / s",
            unit="mps",
        ),
        (12, 9),
    )
    lay.add(
        table(
            "Top $topn by publish drop rate",
            "Messages the client published that EMQX dropped "
            "(emqx_client_received_messages_dropped_total). Only clients that drop are listed.",
            rogue(
                f"{BY_CLIENT} (rate(emqx_client_received_messages_dropped_total{{{C}}}{RI}))",
                positive=True,
            ),
            value_name="dropped / s",
            unit="mps",
        ),
        (12, 9),
    )
    lay.add(
        table(
            "Top $topn by byte rate",
            "Received plus sent bytes per second.",
            rogue(
                f"{BY_CLIENT} (rate(emqx_client_received_bytes_total{{{C}}}{RI}))\n"
                f"+ {BY_CLIENT} (rate(emqx_client_sent_bytes_total{{{C}}}{RI}))"
            ),
            value_name="bytes / s",
            unit="Bps",
        ),
        (12, 9),
    )
    lay.add(
        table(
            "Top $topn by reconnects in the last 15 minutes",
            "New connections the exporter saw while the client was exported (recording rule "
            "clientid:emqx_client_connects:changes15m: one sample per client, cheap at 100k).",
            f"topk($topn, clientid:emqx_client_connects:changes15m{{{CN}}} > 0)",
            value_name="reconnects",
        ),
        (12, 9),
    )
    lay.add(
        table(
            "Offline exported clients",
            "Watched clients that are not connected (also those EMQX does not know) and offline "
            "persistent sessions picked by allow list or top-K.",
            f"topk($topn, max by (cluster, clientid) (emqx_client_online{{{C}}}) == 0)",
            value_name="online",
        ),
        (12, 9),
    )
    for kind in ("mqueue", "inflight"):
        lay.add(
            table(
                f"Peak {kind} fill in the last hour",
                f"The highest {kind} fill each client reached in the last hour, which the "
                "current value hides (recording rule "
                f"clientid:emqx_client_{kind}_fill:ratio).",
                f"topk($topn, max_over_time(clientid:emqx_client_{kind}_fill:ratio{{{CN}}}[1h]))",
                value_name="peak fill",
                unit="percentunit",
            ),
            (12, 9),
        )
    lay.add(
        table(
            "Longest offline sessions",
            "Offline persistent sessions by time since their client disconnected.",
            f"topk($topn, time() - max by (cluster, clientid) "
            f"(emqx_client_disconnected_timestamp_seconds{{{C}}}))",
            value_name="offline for",
            unit="s",
        ),
        (12, 9),
    )

    lay.row("Client $clientid")
    lay.add(
        stat(
            "State",
            "emqx_client_online: a watched client EMQX does not know reports offline.",
            f"max(emqx_client_online{{{CL}}})",
            mappings=up_down_mappings("offline", "online"),
            steps=[("red", None), ("green", 1)],
            graph=False,
        ),
        (4, 4),
    )
    lay.add(
        stat(
            "Connected",
            "When the current (or last) connection was made.",
            f"max(emqx_client_connected_timestamp_seconds{{{CL}}}) * 1000",
            unit="dateTimeFromNow",
            graph=False,
        ),
        (4, 4),
    )
    lay.add(
        stat(
            "Disconnected",
            "When the client of an offline persistent session disconnected.",
            f"max(emqx_client_disconnected_timestamp_seconds{{{CL}}}) * 1000",
            unit="dateTimeFromNow",
            no_value="connected",
            graph=False,
        ),
        (4, 4),
    )
    lay.add(
        stat(
            "Last seen online",
            "Watched clients: the last poll that saw the client connected.",
            f"max(emqx_client_last_seen_timestamp_seconds{{{CL}}}) * 1000",
            unit="dateTimeFromNow",
            no_value="not watched",
            graph=False,
        ),
        (4, 4),
    )
    lay.add(
        stat(
            "Session created",
            "When the session was created (emqx_client_created_timestamp_seconds)."
            + opt_in("session"),
            f"max(emqx_client_created_timestamp_seconds{{{CL}}}) * 1000",
            unit="dateTimeFromNow",
            no_value="not exported",
            graph=False,
        ),
        (4, 4),
    )
    lay.add(
        stat(
            "Subscriptions",
            "Subscriptions of the client.",
            f"max(emqx_client_subscriptions{{{CL}}})",
        ),
        (4, 4),
    )
    lay.add(
        table(
            "Client info",
            "Descriptive labels of emqx_client_info.",
            f"emqx_client_info{{{CL}}}",
            value_name="info",
            hide=("Time", "__name__", "Value", "info"),
            link_clientid=False,
        ),
        (24, 4),
    )
    lay.add(
        timeseries(
            "Connection",
            "1 while connected, 0 while offline or unknown.",
            targets((f"max(emqx_client_online{{{CL}}})", "online")),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Message queue vs capacity",
            "Queued messages and the queue's capacity (no capacity line when unlimited).",
            targets(
                (f"max(emqx_client_mqueue_messages{{{CL}}})", "queued"),
                (f"max(max_over_time(emqx_client_mqueue_messages{{{CL}}}[$__interval]))",
                 "peak"),
                (f"max(emqx_client_mqueue_capacity_messages{{{CL}}})", "capacity"),
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Inflight vs capacity",
            "Unacknowledged QoS 1/2 messages and the inflight window.",
            targets(
                (f"max(emqx_client_inflight_messages{{{CL}}})", "inflight"),
                (f"max(max_over_time(emqx_client_inflight_messages{{{CL}}}[$__interval]))",
                 "peak"),
                (f"max(emqx_client_inflight_capacity_messages{{{CL}}})", "capacity"),
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Bytes / s",
            "Bytes received from and sent to the client.",
            targets(
                (f"sum(rate(emqx_client_received_bytes_total{{{CL}}}{RI}))", "received"),
                (f"sum(rate(emqx_client_sent_bytes_total{{{CL}}}{RI}))", "sent"),
            ),
            unit="Bps",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Messages / s",
            "Messages published by and delivered to the client (by QoS when the exporter "
            "splits it)." + opt_in("messages_qos").replace("Needs", "The split by QoS needs"),
            targets(
                (
                    f"sum by (qos) (rate(emqx_client_received_messages_total{{{CL}}}{RI}))",
                    "received {{qos}}",
                ),
                (
                    f"sum by (qos) (rate(emqx_client_sent_messages_total{{{CL}}}{RI}))",
                    "sent {{qos}}",
                ),
            ),
            unit="mps",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Dropped messages / s",
            "Drops by direction (and reason when the exporter splits it), and queue drops."
            + opt_in("dropped_reasons").replace("Needs", "The split by reason needs"),
            targets(
                (
                    f"sum by (reason) (rate(emqx_client_sent_messages_dropped_total{{{CL}}}{RI}))",
                    "sent {{reason}}",
                ),
                (
                    "sum by (reason) "
                    f"(rate(emqx_client_received_messages_dropped_total{{{CL}}}{RI}))",
                    "received {{reason}}",
                ),
                (
                    f"sum(rate(emqx_client_mqueue_dropped_messages_total{{{CL}}}{RI}))",
                    "queue",
                ),
            ),
            unit="mps",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Subscriptions vs capacity",
            "Subscriptions and the client's subscription limit (no line when unlimited).",
            targets(
                (f"max(emqx_client_subscriptions{{{CL}}})", "subscriptions"),
                (f"max(emqx_client_subscriptions_capacity{{{CL}}})", "capacity"),
            ),
        ),
        (24, 6),
    )

    lay.row("Client $clientid: opt-in details (per_client.parts)", collapsed=True)
    lay.add(
        timeseries(
            "Packets / s",
            "MQTT packets received and sent." + opt_in("packets"),
            targets(
                (f"sum(rate(emqx_client_received_packets_total{{{CL}}}{RI}))", "received"),
                (f"sum(rate(emqx_client_sent_packets_total{{{CL}}}{RI}))", "sent"),
            ),
            unit="pps",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Awaiting PUBREL vs capacity",
            "QoS 2 messages from the client waiting for PUBREL." + opt_in("awaiting_rel"),
            targets(
                (f"max(emqx_client_awaiting_rel_messages{{{CL}}})", "awaiting rel"),
                (f"max(emqx_client_awaiting_rel_capacity_messages{{{CL}}})", "capacity"),
            ),
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Keepalive and session expiry",
            "Negotiated keepalive and session expiry interval." + opt_in("session"),
            targets(
                (f"max(emqx_client_keepalive_seconds{{{CL}}})", "keepalive"),
                (f"max(emqx_client_session_expiry_seconds{{{CL}}})", "session expiry"),
            ),
            unit="s",
        ),
        (8, 8),
    )
    lay.add(
        timeseries(
            "Erlang process: mailbox and reductions",
            "Messages waiting in the connection process's mailbox, and reductions (work) per "
            "second." + opt_in("process"),
            targets(
                (f"max(emqx_client_process_mailbox_messages{{{CL}}})", "mailbox"),
                (f"sum(rate(emqx_client_process_reductions_total{{{CL}}}{RI}))", "reductions / s"),
            ),
        ),
        (12, 8),
    )
    lay.add(
        timeseries(
            "Erlang process: heap",
            "Heap of the connection process." + opt_in("process"),
            targets((f"max(emqx_client_process_heap_bytes{{{CL}}})", "heap")),
            unit="bytes",
        ),
        (12, 8),
    )

    return dashboard(
        DRILL_UID,
        "EMQX clients / Client drill-down",
        "Rogue clients ranked by queue and inflight fill, drops, bytes and reconnects, and every "
        "per-client metric of one client. Only clients the exporter exports (watch list, allow "
        "list, top-K) appear.",
        lay,
        [
            datasource_var(),
            cluster_var(),
            query_var("node", "Node", f"label_values(emqx_client_info{{{C}}}, node)"),
            query_var(
                "clientid",
                "Client id",
                f"query_result(topk({CLIENTID_CHOICES}, "
                f"max by (clientid) (emqx_client_info{{{CN}}})))",
                all_=False,
                multi=False,
                regex='/clientid="([^"]+)"/',
                desc=f"The first {CLIENTID_CHOICES} exported clients; type any other id.",
            ),
            {
                "name": "topn",
                "label": "Top N",
                "type": "custom",
                "query": "10,20,50,100",
                "current": {"selected": True, "text": "20", "value": "20"},
                "options": [
                    {"selected": v == "20", "text": v, "value": v}
                    for v in ("10", "20", "50", "100")
                ],
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "skipUrlSync": False,
            },
        ],
    )


DASHBOARDS = {
    "emqx-clients-fleet.json": fleet,
    "emqx-clients-drilldown.json": drilldown,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder to write the dashboards to (default: beside this script)",
    )
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        (args.out_dir / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
