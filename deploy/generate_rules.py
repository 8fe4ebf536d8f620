#!/usr/bin/env python3
"""Generate the alert pack: Prometheus rules, the PrometheusRule and Alertmanager inhibitions.

    python3 deploy/generate_rules.py                      # rewrite the committed files
    python3 deploy/generate_rules.py --settings my.yaml --out-dir /tmp/rules

Writes, under --out-dir (default: deploy/):

- prometheus/recording.yml      recording rules the alerts and dashboards share
- prometheus/alerts.yml         the alerts
- kubernetes/prometheusrule.yaml both rule files as one PrometheusRule
- alertmanager/alertmanager.yml  a route, a receiver to fill in, and the inhibitions

Every selector, grouping label, threshold and `for:` comes from ``Settings``; a YAML file given
with --settings overrides any of its fields (``thresholds`` and ``for`` merge key by key), e.g.

    selector: 'job="emqx", namespace="mqtt"'
    job_labels: [namespace, job]
    thresholds: {client_drop_rate: 1.0}
    for: {EMQXClientMqueueFilling: 10m}

Conventions:

- ``selector`` goes into every selector of an exporter metric and of `up`; nothing else names
  a job. ``job_labels`` are the labels Prometheus gives every series of one scrape target
  (besides `instance`), ``cluster_label`` the exporter's cluster label; alerts group by both.
- Client and fleet alerts are *held* while the exporter cannot see their data: when the
  series behind a firing (or pending) alert vanish and the exporter did not walk the node (or
  cluster) they belong to (EMQX unreachable, node stopped, exporter down), the alert keeps its
  last value for up to ``hold`` instead of resolving. Once the exporter walks the node again,
  the current data decides.
- Counters are read through rate()/increase()/changes() only, so resets never fire an alert.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

FLEET_UID = "emqx-clients-fleet"
DRILLDOWN_UID = "emqx-clients-drilldown"


@dataclass
class Settings:
    """Everything a user may want to change in the generated rules."""

    #: Label matchers that select the exporter's series (and its `up`), without braces.
    selector: str = 'job="emqx-client-exporter"'
    #: Labels of one scrape target, besides `instance` (Kubernetes adds namespace, pod, ...).
    job_labels: list[str] = field(default_factory=lambda: ["namespace", "job"])
    cluster_label: str = "cluster"
    #: How long a firing client alert survives while the exporter cannot see its data.
    hold: str = "1h"
    #: The scrape's sample_limit, for Prometheus without `--enable-feature=extra-scrape-metrics`.
    sample_limit: int = 50000
    runbook_url: str = (
        "https://github.com/emqx-client-exporter/emqx-client-exporter/blob/main/docs/runbook.md"
    )
    grafana_url: str = "http://localhost:3000"
    thresholds: dict[str, float] = field(default_factory=lambda: {
        "client_mqueue_fill": 0.8,  # queue length / capacity, per client
        "client_inflight_fill": 1.0,  # inflight / window, per connected client
        "client_drop_rate": 0.1,  # messages per second dropped towards one client
        "client_publish_drop_rate": 0.1,  # messages per second dropped from one client
        "client_reconnects": 3,  # new connections of one client within 15 minutes
        "saturated_ratio": 0.1,  # share of a node's class sessions saturated
        "saturated_min": 5,  # ... and at least this many sessions
        "storm_ratio": 0.1,  # connects in 5 minutes / online clients, per class
        "storm_min": 50,  # ... and at least this many connects
        "online_drop_ratio": 0.5,  # online now / 15-minute peak, per node
        "online_drop_min_peak": 100,  # ... on nodes with at least this many at the peak
        "api_error_ratio": 0.1,  # failed / all API requests over 10 minutes
        "sample_limit_ratio": 0.8,  # samples scraped / sample_limit
        "poll_slow_ratio": 0.8,  # poll duration / poll interval
        "stale_intervals": 3,  # snapshot age in poll intervals
    })
    #: `for:` per alert.
    for_: dict[str, str] = field(default_factory=lambda: {
        "EMQXClientExporterDown": "5m",
        "EMQXClientExporterTargetMissing": "15m",
        "EMQXClientExporterEMQXUnreachable": "3m",
        "EMQXNodeStopped": "2m",
        "EMQXClientExporterNodeWalkFailing": "5m",
        "EMQXClientExporterSnapshotStale": "2m",
        "EMQXClientExporterPollSlow": "15m",
        "EMQXClientExporterSeriesCapReached": "15m",
        "EMQXClientExporterScrapeNearSampleLimit": "15m",
        "EMQXClientExporterAPIErrors": "10m",
        "EMQXClientMqueueFilling": "5m",
        "EMQXClientInflightFull": "10m",
        "EMQXClientDroppingMessages": "10m",
        "EMQXClientPublishDropping": "10m",
        "EMQXWatchedClientOffline": "5m",
        "EMQXClientReconnectLoop": "5m",
        "EMQXClientsMqueueSaturated": "15m",
        "EMQXClientsInflightSaturated": "15m",
        "EMQXClientsReconnectStorm": "1m",
        "EMQXClientsOnlineDrop": "3m",
    })
    #: One `for:` for every alert (tests: "2s"); None keeps ``for_``.
    for_override: str | None = None
    #: How long a reconnect storm stays firing after the burst (it is short by nature).
    storm_keep_firing_for: str = "10m"
    #: Thresholds of the client-events group (`events:` configured in the exporter).
    events_thresholds: dict[str, float] = field(default_factory=lambda: {
        "keepalive_timeout_ratio": 0.05,  # keepalive timeouts in 5 min / online clients, per class
        "keepalive_timeout_min": 20,  # ... and at least this many
        "takeover_ratio": 0.02,  # takeovers in 5 min / online clients, per class
        "takeover_min": 20,  # ... and at least this many
    })
    #: `for:` of the client-events alerts.
    events_for: dict[str, str] = field(default_factory=lambda: {
        "EMQXClientsKeepaliveTimeoutSurge": "1m",
        "EMQXClientsTakeoverStorm": "1m",
        "EMQXClientExporterEventsDown": "5m",
    })
    #: How long an event surge stays firing after the burst (bursts are short by nature).
    events_keep_firing_for: str = "10m"

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Settings:
        settings = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            name = "for_" if key == "for" else key
            if name not in known:
                raise ValueError(f"unknown setting {key!r}; known: {sorted(known)}")
            current = getattr(settings, name)
            if isinstance(current, dict):
                unknown = set(value) - set(current)
                if unknown:
                    raise ValueError(f"{key}: unknown keys {sorted(unknown)}")
                current.update(value)
            else:
                setattr(settings, name, value)
        return settings


class Rules:
    """Builds the rule groups from one Settings."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.job = ", ".join(s.job_labels)
        self.g = ", ".join([*s.job_labels, s.cluster_label])  # one exporter's cluster
        self.t = s.thresholds

    # -- building blocks ----------------------------------------------------------------------
    def m(self, name: str, extra: str = "") -> str:
        """A selector of ``name`` restricted to the exporter."""
        matchers = ", ".join(x for x in (self.s.selector, extra) if x)
        return f"{name}{{{matchers}}}"

    def for_(self, alert: str) -> str:
        return self.s.for_override or self.s.for_[alert]

    def info_join(self, expr: str) -> str:
        """``expr`` per client, with `node` and `username` of emqx_client_info. One info series
        per client: for a lookback window after a client moved nodes there may be two."""
        return (f"max by ({self.g}, clientid, node, username) (\n"
                f"    (\n{indent(expr, 6)}\n    )\n"
                f"  * on ({self.g}, instance, clientid) group_left (node, username)\n"
                f"    topk by ({self.g}, instance, clientid) (1, {self.m('emqx_client_info')})\n)")

    def held(self, alert: str, current: str, recorded: str, scope: str) -> str:
        """``current``, or the last value of ``recorded`` while the alert fires, the series
        has no current value, and the exporter has not walked ``scope`` ("node" or "cluster")
        since. Pending alerts are not held: a condition nobody saw last for its `for:` must
        not fire on data that is gone. A client with current data anywhere (back online, moved
        to another node) is judged on it."""
        if scope == "node":
            walked = f"on ({self.g}, node) node:emqx_client_exporter_node_up:max == 1"
        else:
            walked = (f"on ({self.g}) min by ({self.g}) "
                      f"(node:emqx_client_exporter_node_up:max) == 1")
        current_data = f"on ({self.g}, clientid) " if recorded.startswith("clientid:") else ""
        return (f"(\n{indent(current, 2)}\n)\nor\n(\n"
                f"    last_over_time({recorded}[{self.s.hold}])\n"
                f"  unless {current_data}{recorded}\n"
                f"  and ignoring (alertname, alertstate, severity)\n"
                f'    ALERTS{{alertname="{alert}", alertstate="firing"}}\n'
                f"  unless {walked}\n)")

    def annotations(self, alert: str, summary: str, description: str,
                    dashboard: str = FLEET_UID, client: bool = False) -> dict[str, str]:
        cluster = self.s.cluster_label
        params = f"{{{{ with $labels.{cluster} }}}}var-cluster={{{{ . }}}}{{{{ end }}}}"
        if client:
            params += "&var-clientid={{ $labels.clientid }}"
        return {
            "summary": summary,
            "description": description,
            "runbook_url": f"{self.s.runbook_url}#{alert.lower()}",
            "dashboard_url": f"{self.s.grafana_url}/d/{dashboard}?{params}",
        }

    def alert(self, name: str, expr: str, severity: str, summary: str, description: str,
              **kwargs: Any) -> dict[str, Any]:
        keep = kwargs.pop("keep_firing_for", None)
        rule: dict[str, Any] = {"alert": name, "expr": expr + "\n", "for": self.for_(name)}
        if keep:
            rule["keep_firing_for"] = keep
        rule["labels"] = {"severity": severity}
        rule["annotations"] = self.annotations(name, summary, description, **kwargs)
        return rule

    # -- recording rules ----------------------------------------------------------------------
    def recording(self) -> list[dict[str, Any]]:
        g, m, t = self.g, self.m, self
        fill = {
            "mqueue": f"{m('emqx_client_mqueue_messages')}\n"
                      f"      / ({m('emqx_client_mqueue_capacity_messages')} > 0)",
            "inflight": f"{m('emqx_client_inflight_messages')}\n"
                        f"      / ({m('emqx_client_inflight_capacity_messages')} > 0)\n"
                        f"    and on ({g}, instance, clientid) {m('emqx_client_online')} == 1",
        }
        rules = [
            ("node:emqx_client_exporter_node_up:max",
             "# 1 when the last poll walked the node completely; the hold condition of alerts.\n"
             f"max by ({g}, node) ({m('emqx_client_exporter_node_up')})"),
            ("node:emqx_clients_online:sum",
             "# A node the exporter lists but cannot walk (stopped) counts 0, not nothing.\n"
             f"sum by ({g}, node) ({m('emqx_clients_online')})\nor\n"
             f"sum by ({g}, node) ({m('emqx_client_exporter_node_up')} == 0)"),
            ("node:emqx_clients_online:ratio_of_peak15m",
             "node:emqx_clients_online:sum\n  /\nmax_over_time(node:emqx_clients_online:sum[15m])"),
            ("node:emqx_clients_sessions:sum",
             f"sum by ({g}, node) ({m('emqx_clients_sessions')})"),
            ("node_class:emqx_clients_mqueue_saturated:ratio",
             f"sum by ({g}, node, class) ({m('emqx_clients_mqueue_saturated')})\n  /\n"
             f"sum by ({g}, node, class) ({m('emqx_clients_sessions')})"),
            ("node_class:emqx_clients_inflight_saturated:ratio",
             f"sum by ({g}, node, class) ({m('emqx_clients_inflight_saturated')})\n  /\n"
             f"sum by ({g}, node, class) ({m('emqx_clients_sessions')})"),
            ("class:emqx_clients_connects:increase5m",
             f"sum by ({g}, class) (increase({m('emqx_clients_connects_total')}[5m]))"),
            ("clientid:emqx_client_mqueue_fill:ratio", t.info_join(fill["mqueue"])),
            ("clientid:emqx_client_inflight_fill:ratio", t.info_join(fill["inflight"])),
            ("clientid:emqx_client_sent_messages_dropped:rate5m",
             t.info_join(f"sum by ({g}, instance, clientid) "
                         f"(rate({m('emqx_client_sent_messages_dropped_total')}[5m]))")),
            ("clientid:emqx_client_received_messages_dropped:rate5m",
             t.info_join(f"sum by ({g}, instance, clientid) "
                         f"(rate({m('emqx_client_received_messages_dropped_total')}[5m]))")),
            ("clientid:emqx_client_connects:changes15m",
             "# Each new connection moves the connected time; the first sample is no change.\n"
             + t.info_join(f"changes({m('emqx_client_connected_timestamp_seconds')}[15m])")),
            ("clientid:emqx_client_watched_online:max",
             "# Watched clients: those with a last-seen time, and those EMQX does not know\n"
             "# (online 0 without emqx_client_info). Other offline clients (allow list,\n"
             "# top-K) do not count.\n"
             f"max by ({g}, clientid) ({m('emqx_client_online')})\n"
             f"  and on ({g}, clientid)\n(\n"
             f"    max by ({g}, clientid) ({m('emqx_client_last_seen_timestamp_seconds')})\n"
             f"  or\n"
             f"    max by ({g}, clientid) (\n"
             f"      {m('emqx_client_online')}\n"
             f"        unless on ({g}, instance, clientid) {m('emqx_client_info')}\n"
             f"    )\n)"),
        ]
        return [{"record": name, "expr": expr + "\n"} for name, expr in rules]

    # -- alerts -------------------------------------------------------------------------------
    def exporter_alerts(self) -> list[dict[str, Any]]:
        g, m, t, job = self.g, self.m, self.t, self.job
        cl = self.s.cluster_label
        in_cluster = f"{{{{ with $labels.{cl} }}}} of cluster {{{{ . }}}}{{{{ end }}}}"
        # bad_row/bad_value count rejected values, not failed requests.
        failed = m("emqx_client_exporter_api_errors_total", 'reason!~"bad_row|bad_value"')
        errors = f"sum by ({g}, instance) (rate({failed}[10m]))"
        errors_rising = f"sum by ({g}, instance) (increase({failed}[5m])) > 0"
        reachable = f"on ({g}, instance) {m('emqx_client_exporter_up')} == 1"
        limit = f"{m('scrape_sample_limit')} > 0"
        interval = m("emqx_client_exporter_poll_interval_seconds")
        last_success = m("emqx_client_exporter_last_poll_success_timestamp_seconds")
        return [
            self.alert(
                "EMQXClientExporterDown", f"{m('up')} == 0", "critical",
                "Prometheus cannot scrape the EMQX client exporter.",
                "Scrapes of {{ $labels.instance }}{{ with $labels.pod }} (pod {{ . }}){{ end }} "
                "have failed for " + self.for_("EMQXClientExporterDown") + ". Client alerts of "
                "its clusters are held at their last state and no new one can fire."),
            self.alert(
                "EMQXClientExporterTargetMissing", f"absent({m('up')})", "warning",
                "Prometheus has no EMQX client exporter target.",
                "No scrape target matches the exporter's selector{{ with $labels.job }} (job "
                "{{ . }}){{ end }}: every other rule of this pack is silent."),
            self.alert(
                "EMQXClientExporterEMQXUnreachable",
                f"{m('emqx_client_exporter_up')} == 0", "critical",
                "The exporter cannot reach the EMQX management API.",
                f"{{{{ $labels.instance }}}} has not completed a poll{in_cluster} for "
                f"{self.for_('EMQXClientExporterEMQXUnreachable')}: client metrics are missing "
                "and client alerts are held at their last state."),
            self.alert(
                "EMQXNodeStopped",
                "# Listed as stopped by /nodes (node_up 0 without API errors), or gone from the\n"
                "# listing (EMQX 3/4 drop stopped nodes) within the hold window.\n"
                f"(\n    {m('emqx_client_exporter_node_up')} == 0\n"
                f"  unless on ({g}, instance) ({errors_rising})\n)\n"
                f"and {reachable}\nor\n(\n"
                f"    max by ({g}, node) (max_over_time({m('emqx_client_exporter_node_up')}"
                f"[{self.s.hold}]))\n"
                f"  unless on ({g}, node) {m('emqx_client_exporter_node_up')}\n"
                f")\nand on ({g}) max by ({g}) ({m('emqx_client_exporter_up')}) == 1",
                "critical", "An EMQX node is stopped.",
                f"EMQX node {{{{ $labels.node }}}}{in_cluster} is not running (EMQX lists it as "
                "stopped, or no longer lists it). Its clients are gone or moved to other nodes."),
            self.alert(
                "EMQXClientExporterNodeWalkFailing",
                f"(\n    {m('emqx_client_exporter_node_up')} == 0\n"
                f"  and on ({g}, instance) ({errors_rising})\n)\nand {reachable}",
                "warning", "The exporter cannot list the clients of an EMQX node.",
                f"Walking the client list of node {{{{ $labels.node }}}}{in_cluster} has failed "
                f"for {self.for_('EMQXClientExporterNodeWalkFailing')} while the API answers; "
                "that node's clients are missing from metrics and its client alerts are held."),
            self.alert(
                "EMQXClientExporterSnapshotStale",
                f"(\n    {m('emqx_client_exporter_snapshot_age_seconds')}\n"
                f"      > {t['stale_intervals']:g} * {interval}\n"
                f"  or\n    time() - {last_success}\n"
                f"      > {t['stale_intervals']:g} * {interval}\n"
                f")\nunless {m('emqx_client_exporter_up')} == 0",
                "warning", "The exporter serves stale data.",
                f"The data {{{{ $labels.instance }}}} serves{in_cluster} is "
                "{{ $value | humanizeDuration }} old although EMQX answered its last poll."),
            self.alert(
                "EMQXClientExporterPollSlow",
                f"{m('emqx_client_exporter_poll_duration_seconds')}\n"
                f"  > {t['poll_slow_ratio']:g} * {interval}\n"
                f"unless {m('emqx_client_exporter_up')} == 0",
                "warning", "Exporter polls take most of the poll interval.",
                f"Polls of {{{{ $labels.instance }}}}{in_cluster} take "
                "{{ $value | humanizeDuration }}: the snapshot will soon go stale."),
            self.alert(
                "EMQXClientExporterSeriesCapReached",
                f"{m('emqx_client_exporter_series_dropped')} > 0", "info",
                "The exporter leaves per-client series out (per_client.max_series).",
                f"{{{{ $labels.instance }}}}{in_cluster} leaves {{{{ $value | humanize }}}} "
                "per-client series out: watched or top-K clients may be missing."),
            self.alert(
                "EMQXClientExporterScrapeNearSampleLimit",
                "# scrape_sample_limit needs --enable-feature=extra-scrape-metrics; without it\n"
                "# the limit configured in the generator applies.\n"
                f"(\n    {m('scrape_samples_scraped')} / on ({job}, instance) ({limit})\n"
                f"  or\n    {m('scrape_samples_scraped')} / {self.s.sample_limit}\n"
                f"      unless on ({job}, instance) ({limit})\n)\n"
                f"> {t['sample_limit_ratio']:g}",
                "warning", "The exporter's scrape is close to the sample limit.",
                "Scrapes of {{ $labels.instance }} return {{ $value | humanizePercentage }} of "
                "the sample limit; over it every scrape fails as a whole."),
            self.alert(
                "EMQXClientExporterAPIErrors",
                f"{errors}\n  /\nsum by ({g}, instance) "
                f"(rate({m('emqx_client_exporter_api_requests_total')}[10m]))\n"
                f"  > {t['api_error_ratio']:g}\n"
                "# Only while the exporter is scraped and reaches EMQX: otherwise\n"
                "# EMQXClientExporterDown or EMQXClientExporterEMQXUnreachable speak.\n"
                f"and on ({job}, instance) {m('up')} == 1\n"
                f"unless on ({g}, instance) {m('emqx_client_exporter_up')} == 0",
                "warning", "Many EMQX API requests of the exporter fail.",
                f"{{{{ $value | humanizePercentage }}}} of the API requests of "
                f"{{{{ $labels.instance }}}}{in_cluster} failed over the last 10 minutes; "
                "polls may be partial."),
        ]

    def client_alerts(self) -> list[dict[str, Any]]:
        t = self.t
        cl = self.s.cluster_label
        who = ("Client {{ $labels.clientid }} ({{ with $labels.username }}username {{ . }}, "
               "{{ end }}node {{ $labels.node }}" + f"{{{{ with $labels.{cl} }}}}, cluster "
               "{{ . }}{{ end }})")
        where = ("{{ with $labels.class }} of class {{ . }}{{ end }} on node {{ $labels.node }}"
                 f"{{{{ with $labels.{cl} }}}} in cluster {{{{ . }}}}{{{{ end }}}}")
        drill = {"dashboard": DRILLDOWN_UID, "client": True}

        def per_client(name: str, recorded: str, op: str, key: str, summary: str,
                       text: str) -> dict[str, Any]:
            current = f"{recorded} {op} {t[key]:g}"
            return self.alert(name, self.held(name, current, recorded, "node"), "warning",
                              summary, f"{who} {text}", **drill)

        watched = "clientid:emqx_client_watched_online:max"
        saturated = (
            "node_class:emqx_clients_{0}_saturated:ratio > {1:g}\n"
            "and on ({2}, node, class)\n"
            "sum by ({2}, node, class) ({3}) >= {4:g}")
        storm = (f"class:emqx_clients_connects:increase5m\n  /\n"
                 f"sum by ({self.g}, class) ({self.m('emqx_clients_online')})\n"
                 f"  > {t['storm_ratio']:g}\n"
                 f"and\nclass:emqx_clients_connects:increase5m >= {t['storm_min']:g}")
        online = "node:emqx_clients_online:sum"
        of_peak = "node:emqx_clients_online:ratio_of_peak15m"
        drop = (f"{of_peak} < {t['online_drop_ratio']:g}\n"
                f"and\nmax_over_time({online}[15m]) >= {t['online_drop_min_peak']:g}")
        return [
            per_client("EMQXClientMqueueFilling", "clientid:emqx_client_mqueue_fill:ratio", ">=",
                       "client_mqueue_fill", "An MQTT client's session queue is nearly full.",
                       "has its message queue {{ $value | humanizePercentage }} full; when it "
                       "is full EMQX drops messages for it."),
            per_client("EMQXClientInflightFull", "clientid:emqx_client_inflight_fill:ratio", ">=",
                       "client_inflight_fill",
                       "A connected MQTT client has a full inflight window (slow consumer).",
                       "is connected but uses {{ $value | humanizePercentage }} of its QoS 1/2 "
                       "inflight window: it acknowledges slower than messages arrive."),
            per_client("EMQXClientDroppingMessages",
                       "clientid:emqx_client_sent_messages_dropped:rate5m", ">",
                       "client_drop_rate", "EMQX drops messages meant for an MQTT client.",
                       "loses {{ $value | humanize }} messages per second that EMQX "
                       "dropped instead of delivering (queue full, expired, too large)."),
            per_client("EMQXClientPublishDropping",
                       "clientid:emqx_client_received_messages_dropped:rate5m", ">",
                       "client_publish_drop_rate",
                       "EMQX drops messages an MQTT client publishes.",
                       "publishes {{ $value | humanize }} messages per second that EMQX drops "
                       "(no subscriber, authorization denied, QoS 2 PUBREL timeout, quota)."),
            self.alert(
                "EMQXWatchedClientOffline",
                self.held("EMQXWatchedClientOffline", f"{watched} == 0", watched, "cluster"),
                "warning", "A watched MQTT client is offline.",
                "Watched client {{ $labels.clientid }}" + f"{{{{ with $labels.{cl} }}}} in "
                "cluster {{ . }}{{ end }} is not connected."
                + ' {{ with printf "max(emqx_client_last_seen_timestamp_seconds{clientid=%q})'
                ' > 0" $labels.clientid | query }}Last seen online at '
                "{{ . | first | value | humanizeTimestamp }}.{{ else }}The exporter has not "
                "seen it online.{{ end }}", **drill),
            per_client("EMQXClientReconnectLoop", "clientid:emqx_client_connects:changes15m",
                       ">=", "client_reconnects", "An MQTT client reconnects over and over.",
                       "has connected {{ $value | humanize }} times in 15 minutes."),
            self.alert(
                "EMQXClientsMqueueSaturated",
                self.held("EMQXClientsMqueueSaturated", saturated.format(
                    "mqueue", t["saturated_ratio"], self.g,
                    self.m("emqx_clients_mqueue_saturated"), t["saturated_min"]),
                    "node_class:emqx_clients_mqueue_saturated:ratio", "node"),
                "warning", "Many MQTT sessions of one class have nearly full queues.",
                f"{{{{ $value | humanizePercentage }}}} of the sessions{where} have saturated "
                "message queues: these consumers lag as a group."),
            self.alert(
                "EMQXClientsInflightSaturated",
                self.held("EMQXClientsInflightSaturated", saturated.format(
                    "inflight", t["saturated_ratio"], self.g,
                    self.m("emqx_clients_inflight_saturated"), t["saturated_min"]),
                    "node_class:emqx_clients_inflight_saturated:ratio", "node"),
                "warning", "Many MQTT sessions of one class have full inflight windows.",
                f"{{{{ $value | humanizePercentage }}}} of the sessions{where} have saturated "
                "inflight windows: they acknowledge slower than messages arrive."),
            self.alert(
                "EMQXClientsReconnectStorm", storm, "warning",
                "MQTT clients reconnect in a storm.",
                "New connections{{ with $labels.class }} of class {{ . }}{{ end }}"
                f"{{{{ with $labels.{cl} }}}} in cluster {{{{ . }}}}{{{{ end }}}} amount to "
                "{{ $value | humanizePercentage }} of the online clients within 5 minutes.",
                keep_firing_for=self.s.storm_keep_firing_for),
            self.alert(
                "EMQXClientsOnlineDrop", self.held("EMQXClientsOnlineDrop", drop, of_peak, "node"),
                "critical",
                "Online MQTT clients of an EMQX node dropped sharply.",
                f"Connected clients on node {{{{ $labels.node }}}}{{{{ with $labels.{cl} }}}} in "
                "cluster {{ . }}{{ end }} are down to {{ $value | humanizePercentage }} of their "
                "15-minute peak (a stopped node counts 0)."),
        ]

    # -- client events (issue 20): EMQX's own disconnect reasons ------------------------------
    def event_alerts(self) -> list[dict[str, Any]]:
        """Alerts on EMQX's client events, a lower bound (QoS 0): they fire on what was seen,
        and `EMQXClientExporterEventsDown` says when events are being missed."""
        g, m, t, cl = self.g, self.m, self.s.events_thresholds, self.s.cluster_label

        def alert(name: str, expr: str, severity: str, summary: str, description: str,
                  **keep: str) -> dict[str, Any]:
            """As `Rules.alert`, with this group's own `for:` settings."""
            rule: dict[str, Any] = {"alert": name, "expr": expr + "\n",
                                    "for": self.s.for_override or self.s.events_for[name]}
            rule.update(keep)
            rule["labels"] = {"severity": severity}
            rule["annotations"] = self.annotations(name, summary, description)
            return rule

        def share(selector: str, ratio: str, minimum: str) -> str:
            """Events of a class in 5 minutes over its online clients, where both thresholds
            are passed; the value is the share."""
            seen = f"sum by ({g}, class) (increase({selector}[5m]))"
            online = f"sum by ({g}, class) ({m('emqx_clients_online')})"
            return (f"(\n  {seen}\n    / on ({g}, class)\n  {online}\n) > {t[ratio]:g}\n"
                    f"and on ({g}, class)\n{seen} >= {t[minimum]:g}")

        where = ("{{ with $labels.class }} of class {{ . }}{{ end }}"
                 f"{{{{ with $labels.{cl} }}}} in cluster {{{{ . }}}}{{{{ end }}}}")
        return [
            alert(
                "EMQXClientsKeepaliveTimeoutSurge",
                share(m("emqx_clients_disconnected_events_total", 'reason="keepalive_timeout"'),
                      "keepalive_timeout_ratio", "keepalive_timeout_min"),
                "warning", "Many MQTT clients of one class stopped answering (keepalive timeout).",
                f"EMQX ended {{{{ $value | humanizePercentage }}}} of the online clients{where} "
                "for keepalive timeout within 5 minutes: devices that went silent without "
                "closing their connection (network loss, power, a hung client).",
                keep_firing_for=self.s.events_keep_firing_for),
            alert(
                "EMQXClientsTakeoverStorm",
                share(m("emqx_clients_takeover_events_total"), "takeover_ratio", "takeover_min"),
                "warning", "MQTT connections are taken over by new ones with the same client id.",
                f"{{{{ $value | humanizePercentage }}}} of the online clients{where} were taken "
                "over by a new connection with the same client id within 5 minutes: clients "
                "sharing an id, or reconnecting before EMQX saw the old connection die.",
                keep_firing_for=self.s.events_keep_firing_for),
            alert(
                "EMQXClientExporterEventsDown",
                f"max by ({g}) ({m('emqx_client_exporter_events_up')}) == 0",
                "warning", "The exporter does not receive EMQX's client events.",
                f"The MQTT subscription to client events{{{{ with $labels.{cl} }}}} of cluster "
                "{{ . }}{{ end }} has been down: disconnect reasons and event counts miss what "
                "happens meanwhile (polled data is unaffected)."),
        ]

    def groups(self) -> dict[str, dict[str, Any]]:
        return {
            "recording.yml": {"groups": [
                {"name": "emqx-client-exporter.rules", "rules": self.recording()}]},
            "alerts.yml": {"groups": [
                {"name": "emqx-client-exporter", "rules": self.exporter_alerts()},
                {"name": "emqx-clients", "rules": self.client_alerts()},
                {"name": "emqx-client-events", "rules": self.event_alerts()},
            ]},
        }

    def inhibit_rules(self, client_alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A blind exporter silences what it cannot see; a stopped node, its clients."""
        clients = [r["alert"] for r in client_alerts]
        exporter_side = [*clients, "EMQXNodeStopped", "EMQXClientExporterNodeWalkFailing",
                         "EMQXClientExporterSnapshotStale", "EMQXClientExporterPollSlow",
                         "EMQXClientExporterAPIErrors"]
        per_node = [n for n in clients if n not in {"EMQXWatchedClientOffline",
                                                    "EMQXClientsReconnectStorm"}]
        return [
            {"source_matchers": ['alertname=~"EMQXClientExporterDown|'
                                 'EMQXClientExporterTargetMissing"'],
             "target_matchers": [f'alertname=~"{"|".join(exporter_side)}"'],
             "equal": list(self.s.job_labels)},
            {"source_matchers": ['alertname="EMQXClientExporterEMQXUnreachable"'],
             "target_matchers": [f'alertname=~"{"|".join(exporter_side)}"'],
             "equal": [*self.s.job_labels, self.s.cluster_label]},
            {"source_matchers": ['alertname=~"EMQXNodeStopped|EMQXClientExporterNodeWalkFailing"'],
             "target_matchers": [f'alertname=~"{"|".join(per_node)}"'],
             "equal": [*self.s.job_labels, self.s.cluster_label, "node"]},
            # During a storm every client reconnects: the storm speaks for the single loops.
            {"source_matchers": ['alertname="EMQXClientsReconnectStorm"'],
             "target_matchers": ['alertname="EMQXClientReconnectLoop"'],
             "equal": [*self.s.job_labels, self.s.cluster_label]},
        ]


def indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


HEADER = """\
# Generated by deploy/generate_rules.py; do not edit. Change the Settings (or pass
# --settings FILE) and run: python3 deploy/generate_rules.py
"""

PROMETHEUS_RULE_META = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {
        "name": "emqx-client-exporter",
        "labels": {
            "app.kubernetes.io/name": "emqx-client-exporter",
            "app.kubernetes.io/instance": "emqx-client-exporter",
            "app.kubernetes.io/component": "alerting",
        },
    },
}


ALERTMANAGER_NOTE = """\
# Route everything to the receiver "default" (add email_configs, webhook_configs, ... to it, or
# merge the inhibit_rules below into your own configuration).
# Check: amtool check-config deploy/alertmanager/alertmanager.yml
"""


def alertmanager_config(settings: Settings, inhibit_rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", *settings.job_labels, settings.cluster_label, "node"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [{"name": "default"}],
        "inhibit_rules": inhibit_rules,
    }


def render(settings: Settings) -> dict[str, str]:
    """Relative path -> file text of everything the generator writes."""
    rules = Rules(settings)
    groups = rules.groups()
    recording, alerts = groups["recording.yml"], groups["alerts.yml"]
    prometheus_rule = dict(PROMETHEUS_RULE_META)
    prometheus_rule["spec"] = {"groups": recording["groups"] + alerts["groups"]}
    rule_note = ("# The Prometheus resource's ruleSelector must match these labels\n"
                 "# (kube-prometheus-stack: add release: <helm release name>).\n")
    return {
        "prometheus/recording.yml": HEADER + dump(recording),
        "prometheus/alerts.yml": HEADER + dump(alerts),
        "kubernetes/prometheusrule.yaml": HEADER + rule_note + dump(prometheus_rule),
        "alertmanager/alertmanager.yml": HEADER + ALERTMANAGER_NOTE + dump(
            alertmanager_config(settings, rules.inhibit_rules(alerts["groups"][1]["rules"]))),
    }


def write(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write ``render()``'s files under ``out_dir``; the paths written."""
    paths = []
    for relative, text in files.items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--settings", type=Path, help="YAML file overriding Settings fields")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="default: deploy/")
    args = parser.parse_args(argv)
    data = yaml.safe_load(args.settings.read_text(encoding="utf-8")) if args.settings else {}
    for path in write(render(Settings.from_mapping(data or {})), args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
