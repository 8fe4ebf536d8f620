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
  (besides `instance`), ``cluster_label`` the exporter's cluster label.
- Every alert carries the `instance` of the exporter that saw it (with ``--shard``, the
  replica that owns the node), so an inhibition with `equal: [..., instance]` silences only
  what the broken exporter was responsible for. Alerts group by job labels, instance, cluster.
- Client and fleet alerts are *held* while the exporter cannot see their data: when the
  series behind a firing alert vanish and the exporter did not walk the node (or cluster)
  they belong to (EMQX unreachable, node stopped, exporter down), the alert keeps its last
  value for up to ``hold`` instead of resolving. Rates are also held while their window lacks
  two samples after a gap. Once the exporter walks the node again, the current data decides.
- Counters are read through rate()/increase()/changes() only, so resets never fire an alert.
- Groups: ``Rules.groups()`` lists them; a new group is one more method returning its rules
  and one more entry there (its alerts then get unit tests and a runbook section).
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

#: The recorded node status (one per exporter and node).
NODE_UP = "node:emqx_client_exporter_node_up:max"
#: The group of alerts about the exporter itself; every other alert group is about clients.
EXPORTER_GROUP = "emqx-client-exporter"
#: The client-events group: its alerts come from the MQTT subscription, not from the polls, so no
#: poll failure inhibits them (`EMQXClientExporterEventsDown` speaks for a lost subscription).
EVENTS_GROUP = "emqx-client-events"
#: `reason` values of api_errors_total that mean EMQX rejected the credential (exporter/errors.py).
CREDENTIAL_REASONS = "unauthorized|login_locked|forbidden"

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
        "unlisted_min": 10,  # rows EMQX reports for a node but the walk did not list ...
        "unlisted_ratio": 0.05,  # ... and this share of the node's count (beyond churn)
    })
    #: `for:` per alert.
    for_: dict[str, str] = field(default_factory=lambda: {
        "EMQXClientExporterDown": "5m",
        "EMQXClientExporterTargetMissing": "5m",
        "EMQXClientExporterEMQXUnreachable": "3m",
        "EMQXClientExporterCredentialsRejected": "3m",
        "EMQXClientExporterRateLimited": "3m",
        "EMQXNodeStopped": "2m",
        "EMQXClientExporterNodeWalkFailing": "5m",
        "EMQXClientExporterSnapshotStale": "2m",
        "EMQXClientExporterPollSlow": "15m",
        "EMQXClientExporterSeriesCapReached": "15m",
        "EMQXClientExporterScrapeNearSampleLimit": "15m",
        "EMQXClientExporterAPIErrors": "10m",
        "EMQXClientExporterListingIncomplete": "15m",
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
    #: How far back a rejected login still explains a failing poll: longer than the exporter's
    #: longest pause between login retries (30 minutes), so the alert holds between retries.
    credential_window: str = "35m"
    #: The window of the per-client rates (recorded as `...:rate5m`); tests shorten it.
    rate_window: str = "5m"
    #: Samples a per-client rate needs in its window: after a gap (exporter restarted), a
    #: rate of two samples, maybe of one snapshot scraped twice, is noise, not a figure. 5 is
    #: half the default window at 30 s scrapes; until then firing rate alerts hold.
    rate_min_samples: int = 5

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
        self.g = ", ".join([*s.job_labels, s.cluster_label])  # one cluster, whoever polls it
        # One exporter's view of one cluster: with --shard, each replica's share of the nodes.
        self.gi = ", ".join([*s.job_labels, "instance", s.cluster_label])
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
        return (f"max by ({self.gi}, clientid, node, username) (\n"
                f"    (\n{indent(expr, 6)}\n    )\n"
                f"  * on ({self.g}, instance, clientid) group_left (node, username)\n"
                f"    topk by ({self.g}, instance, clientid) (1, {self.m('emqx_client_info')})\n)")

    def rate(self, counter: str) -> str:
        """Per-client rate of ``counter``, only where its window holds enough samples."""
        window, n = self.s.rate_window, self.s.rate_min_samples
        return (f"sum by ({self.gi}, clientid) (\n  rate({counter}[{window}])\n"
                f"    and count_over_time({counter}[{window}]) >= {n}\n)")

    def held(self, alert: str, current: str, recorded: str, scope: str,
             present: str | None = None) -> str:
        """``current``, or the last value of ``recorded`` while the alert fires, the series
        has no current value, and the exporter (that instance) has not walked ``scope``
        ("node", "cluster", or "poll": a complete poll) since. Pending alerts are not held: a
        condition nobody saw last for its `for:` must not fire on data that is gone. A client
        with current data anywhere (back online, moved to another node) is judged on it.

        ``present``: the client's input series, for rates. After a gap (exporter killed,
        restarted) the node is walked at once but the rate's window holds one sample: while
        the input is there and the rate is not, the alert holds too."""
        # The node status from the same source as the data it is judged with: the recording
        # group may not have run on the newest scrape yet, and a raw node_up 1 beside a
        # recorded value still missing (or a raw input gone beside a recorded node_up 1) would
        # resolve the alert for one evaluation. So: the recorded status with recorded data,
        # the raw one with the raw ``present``. "poll": `unless recorded` alone ends the hold.
        up = self.m("emqx_client_exporter_node_up") if present else NODE_UP
        walked = {
            "node": f"on ({self.gi}, node) {up} == 1",
            "cluster": f"on ({self.gi}) min by ({self.gi}) ({up}) == 1",
            "poll": "",
        }[scope]
        current_data = f"on ({self.g}, clientid) " if recorded.startswith("clientid:") else ""
        last = (f"last_over_time({recorded}[{self.s.hold}])\n"
                f"  unless {current_data}{recorded}\n"
                f"  and ignoring (alertname, alertstate, severity)\n"
                f'    ALERTS{{alertname="{alert}", alertstate="firing"}}')
        if not walked:
            hold = f"    {last}"
        elif present is None:
            hold = f"    {last}\n  unless {walked}"
        else:
            hold = (f"  (\n      {indent(last, 4).lstrip()}\n    unless {walked}\n  )\n"
                    f"  or\n  (\n      {indent(last, 4).lstrip()}\n"
                    f"    and on ({self.gi}, clientid) {present}\n  )")
        return f"(\n{indent(current, 2)}\n)\nor\n(\n{hold}\n)"

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
        gi, m, t = self.gi, self.m, self
        up = m("emqx_client_exporter_node_up")
        fill = {
            "mqueue": f"{m('emqx_client_mqueue_messages')}\n"
                      f"      / ({m('emqx_client_mqueue_capacity_messages')} > 0)",
            "inflight": f"{m('emqx_client_inflight_messages')}\n"
                        f"      / ({m('emqx_client_inflight_capacity_messages')} > 0)\n"
                        f"    and on ({gi}, clientid) {m('emqx_client_online')} == 1",
        }
        rules = [
            ("node:emqx_clients_online:sum",
             "# Only nodes the exporter walked completely (node_up 1): a node it could not walk\n"
             "# (listing failed, EMQX unreachable, stopped) has no figure, not 0, so a listing\n"
             "# failure never reads as a drop. A walked node without online clients counts 0.\n"
             f"(\n    sum by ({gi}, node) ({m('emqx_clients_online')})\n"
             f"  and on ({gi}, node) {up} == 1\n)\nor\n"
             f"max by ({gi}, node) ({up} == 1) * 0"),
            ("node:emqx_clients_online:ratio_of_peak15m",
             "# Both figures come from complete walks only.\n"
             "node:emqx_clients_online:sum\n  /\nmax_over_time(node:emqx_clients_online:sum[15m])"),
            ("node:emqx_clients_sessions:sum",
             f"sum by ({gi}, node) ({m('emqx_clients_sessions')})"),
            ("node_class:emqx_clients_mqueue_saturated:ratio",
             f"sum by ({gi}, node, class) ({m('emqx_clients_mqueue_saturated')})\n  /\n"
             f"sum by ({gi}, node, class) ({m('emqx_clients_sessions')})"),
            ("node_class:emqx_clients_inflight_saturated:ratio",
             f"sum by ({gi}, node, class) ({m('emqx_clients_inflight_saturated')})\n  /\n"
             f"sum by ({gi}, node, class) ({m('emqx_clients_sessions')})"),
            ("class:emqx_clients_connects:increase5m",
             f"sum by ({gi}, class) (increase({m('emqx_clients_connects_total')}[5m]))"),
            ("clientid:emqx_client_mqueue_fill:ratio", t.info_join(fill["mqueue"])),
            ("clientid:emqx_client_inflight_fill:ratio", t.info_join(fill["inflight"])),
            ("clientid:emqx_client_sent_messages_dropped:rate5m",
             "# A rate only over a window with enough samples (rate_min_samples).\n"
             + t.info_join(self.rate(m("emqx_client_sent_messages_dropped_total")))),
            ("clientid:emqx_client_received_messages_dropped:rate5m",
             t.info_join(self.rate(m("emqx_client_received_messages_dropped_total")))),
            ("clientid:emqx_client_connects:changes15m",
             "# Each new connection moves the connected time; the first sample is no change.\n"
             + t.info_join(f"changes({m('emqx_client_connected_timestamp_seconds')}[15m])")),
            ("clientid:emqx_client_watched_online:max",
             "# Watched clients: those with a last-seen time, and those EMQX does not know\n"
             "# (online 0 without emqx_client_info). Other offline clients (allow list,\n"
             "# top-K) do not count.\n"
             f"max by ({gi}, clientid) ({m('emqx_client_online')})\n"
             f"  and on ({gi}, clientid)\n(\n"
             f"    max by ({gi}, clientid) ({m('emqx_client_last_seen_timestamp_seconds')})\n"
             f"  or\n"
             f"    max by ({gi}, clientid) (\n"
             f"      {m('emqx_client_online')}\n"
             f"        unless on ({gi}, clientid) {m('emqx_client_info')}\n"
             f"    )\n)"),
            ("instance:emqx_client_exporter_series_dropped:polled",
             "# series_dropped of complete polls only: a failed poll reports 0, which is no news.\n"
             f"max by ({gi}) ({m('emqx_client_exporter_series_dropped')})\n"
             f"  and on ({gi}) {m('emqx_client_exporter_up')} == 1"),
            # Last: an alert that sees this evaluation's node status sees its other figures too.
            (NODE_UP,
             "# 1 when the exporter's last poll walked the node completely: node status, and\n"
             "# the end of the hold of client alerts (read with this group's figures).\n"
             f"max by ({gi}, node) ({up})"),
        ]
        return [{"record": name, "expr": expr + "\n"} for name, expr in rules]

    # -- alerts -------------------------------------------------------------------------------
    def recent(self, errors: str, window: str) -> str:
        """Instances whose ``errors`` counter rose within ``window``: increase() > 0, or a
        series that appeared within it (a reason's first error creates its series at 1,
        which increase() cannot see)."""
        return (f"(\n    sum by ({self.gi}) (increase({errors}[{window}])) > 0\n  or\n"
                f"    sum by ({self.gi}) ({errors} unless {errors} offset {window})\n)")

    def exporter_alerts(self) -> list[dict[str, Any]]:
        g, gi, m, t, job = self.g, self.gi, self.m, self.t, self.job
        cl = self.s.cluster_label
        in_cluster = f"{{{{ with $labels.{cl} }}}} of cluster {{{{ . }}}}{{{{ end }}}}"
        for_cluster = f"{{{{ with $labels.{cl} }}}} for cluster {{{{ . }}}}{{{{ end }}}}"
        errors_total = "emqx_client_exporter_api_errors_total"
        # bad_row/bad_value count rejected values, not failed requests.
        failed = m(errors_total, 'reason!~"bad_row|bad_value"')
        errors = f"sum by ({gi}) (rate({failed}[10m]))"
        # A reason's first failure creates its series: recent() sees it at once, so a walk
        # failing for the first time is not taken for a stopped node.
        errors_rising = self.recent(failed, "5m")
        reachable = f"on ({gi}) {m('emqx_client_exporter_up')} == 1"
        # Why a poll fails: a rejected credential is retried minutes apart (no request in
        # between), a 429 at every poll; any other failing request makes it "unreachable".
        rejected = m(errors_total, f'reason=~"{CREDENTIAL_REASONS}"')
        limited = m(errors_total, 'reason="rate_limited"')
        others = m(errors_total,
                   f'reason!~"{CREDENTIAL_REASONS}|rate_limited|bad_row|bad_value"')
        any_but_rejected = m(errors_total, f'reason!~"{CREDENTIAL_REASONS}|bad_row|bad_value"')
        polls_fail = f"{m('emqx_client_exporter_up')} == 0"
        credentials = (f"{polls_fail}\nand on ({gi})\n"
                       f"{self.recent(rejected, self.s.credential_window)}\n"
                       f"unless on ({gi})\n{self.recent(any_but_rejected, '5m')}")
        rate_limited = (f"{polls_fail}\nand on ({gi})\n{self.recent(limited, '5m')}\n"
                        f"unless on ({gi})\n{self.recent(others, '5m')}")
        limit = f"{m('scrape_sample_limit')} > 0"
        interval = m("emqx_client_exporter_poll_interval_seconds")
        last_success = m("emqx_client_exporter_last_poll_success_timestamp_seconds")
        dropped = "instance:emqx_client_exporter_series_dropped:polled"
        listed = m("emqx_client_exporter_clients_listed")
        unlisted = m("emqx_client_exporter_clients_unlisted")
        return [
            self.alert(
                "EMQXClientExporterDown", f"{m('up')} == 0", "critical",
                "Prometheus cannot scrape the EMQX client exporter.",
                "Scrapes of {{ $labels.instance }}{{ with $labels.pod }} (pod {{ . }}){{ end }} "
                "have failed for " + self.for_("EMQXClientExporterDown") + ". Client alerts it "
                "raised are held at their last state and no new one can fire."),
            self.alert(
                "EMQXClientExporterTargetMissing",
                "# No target at all, or one that was a target within `hold` and is no longer\n"
                "# (a replica gone from service discovery: its `up` is stale, not 0).\n"
                f"absent({m('up')})\nor\n"
                f"max by ({job}, instance) (max_over_time({m('up')}[{self.s.hold}]))\n"
                f"  unless on ({job}, instance) {m('up')}",
                "warning", "Prometheus has no EMQX client exporter target.",
                "{{ with $labels.instance }}Target {{ . }} was scraped within the last "
                f"{self.s.hold} and is no longer a target: client alerts it raised are held and "
                "no new one can fire.{{ else }}No scrape target matches the exporter's "
                "selector{{ with $labels.job }} (job {{ . }}){{ end }}: every other rule of "
                "this pack is silent.{{ end }}"),
            self.alert(
                "EMQXClientExporterEMQXUnreachable",
                "# Credentials and rate limiting have their own alerts.\n"
                f"{polls_fail}\nunless on ({gi}) (\n{indent(credentials, 2)}\n)\n"
                f"unless on ({gi}) (\n{indent(rate_limited, 2)}\n)", "critical",
                "The exporter cannot reach the EMQX management API.",
                f"{{{{ $labels.instance }}}} has not completed a poll{in_cluster} for "
                f"{self.for_('EMQXClientExporterEMQXUnreachable')}: client metrics are missing "
                "and client alerts are held at their last state."),
            self.alert(
                "EMQXClientExporterCredentialsRejected", credentials, "critical",
                "EMQX rejects the exporter's credentials.",
                f"EMQX rejects the credentials of {{{{ $labels.instance }}}}{for_cluster} (401, "
                "403 or a locked login): no poll completes. The login is retried after a "
                "growing pause (up to 30 minutes); a reload (SIGHUP) retries at once."),
            self.alert(
                "EMQXClientExporterRateLimited", rate_limited, "warning",
                "EMQX (or a proxy in front of it) rate-limits the exporter.",
                f"The requests of {{{{ $labels.instance }}}}{for_cluster} are answered 429 (Too "
                "Many Requests): polls do not complete. The exporter waits as Retry-After says; "
                "raise the limit or poll less often."),
            self.alert(
                "EMQXNodeStopped",
                "# Listed as stopped by /nodes (node_up 0 without API errors), or gone from the\n"
                "# listing (EMQX 3/4 drop stopped nodes) within the hold window.\n"
                f"(\n    {m('emqx_client_exporter_node_up')} == 0\n"
                f"  unless on ({gi})\n{indent(errors_rising, 2)}\n)\n"
                f"and {reachable}\nor\n"
                "# Gone from the listing: listed by this exporter within `hold`, by no exporter\n"
                "# now, while this one polls (a dead exporter's nodes are not gone; with\n"
                "# --shard, a node dealt to another replica is still listed).\n"
                f"(\n    max by ({gi}, node) (max_over_time({m('emqx_client_exporter_node_up')}"
                f"[{self.s.hold}]))\n"
                f"  unless on ({g}, node) {m('emqx_client_exporter_node_up')}\n"
                f")\nand {reachable}",
                "critical", "An EMQX node is stopped.",
                f"EMQX node {{{{ $labels.node }}}}{in_cluster} is not running (EMQX lists it as "
                "stopped, or no longer lists it). Its clients are gone or moved to other nodes."),
            self.alert(
                "EMQXClientExporterNodeWalkFailing",
                f"(\n    {m('emqx_client_exporter_node_up')} == 0\n"
                f"  and on ({gi})\n{indent(errors_rising, 2)}\n)\nand {reachable}",
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
                "# Held through failed polls and exporter restarts: only a complete poll decides.\n"
                + self.held("EMQXClientExporterSeriesCapReached", f"{dropped} > 0", dropped,
                            "poll"), "info",
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
                f"{errors}\n  /\nsum by ({gi}) "
                f"(rate({m('emqx_client_exporter_api_requests_total')}[10m]))\n"
                f"  > {t['api_error_ratio']:g}\n"
                "# Only while the exporter is scraped and reaches EMQX: otherwise\n"
                "# EMQXClientExporterDown or EMQXClientExporterEMQXUnreachable speak.\n"
                f"and on ({job}, instance) {m('up')} == 1\n"
                f"unless on ({gi}) {m('emqx_client_exporter_up')} == 0",
                "warning", "Many EMQX API requests of the exporter fail.",
                f"{{{{ $value | humanizePercentage }}}} of the API requests of "
                f"{{{{ $labels.instance }}}}{in_cluster} failed over the last 10 minutes; "
                "polls may be partial."),
            self.alert(
                "EMQXClientExporterListingIncomplete",
                "# Rows EMQX counts for a walked node that the walk did not list (offset drift,\n"
                "# rows skipped), beyond the churn of clients connecting during a walk.\n"
                f"{unlisted} >= {t['unlisted_min']:g}\n"
                f"and on ({gi}, node)\n"
                f"  {unlisted}\n    > on ({gi}, node)\n"
                f"  ({unlisted} + on ({gi}, node) {listed}) * {t['unlisted_ratio']:g}\n"
                f"and on ({gi}, node) {m('emqx_client_exporter_node_up')} == 1",
                "warning", "The exporter's walks miss clients EMQX reports.",
                "EMQX reports {{ $value | humanize }} more clients on node {{ $labels.node }}"
                f"{in_cluster} than the walks of {{{{ $labels.instance }}}} list: those clients "
                "are missing from metrics and alerts."),
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
                       text: str, present: str | None = None) -> dict[str, Any]:
            current = f"{recorded} {op} {t[key]:g}"
            return self.alert(name, self.held(name, current, recorded, "node", present),
                              "warning", summary, f"{who} {text}", **drill)

        watched = "clientid:emqx_client_watched_online:max"
        saturated = (
            "node_class:emqx_clients_{0}_saturated:ratio > {1:g}\n"
            "and on ({2}, node, class)\n"
            "sum by ({2}, node, class) ({3}) >= {4:g}")
        storm = (f"class:emqx_clients_connects:increase5m\n  /\n"
                 f"sum by ({self.gi}, class) ({self.m('emqx_clients_online')})\n"
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
                       "dropped instead of delivering (queue full, expired, too large).",
                       self.m("emqx_client_sent_messages_dropped_total")),
            per_client("EMQXClientPublishDropping",
                       "clientid:emqx_client_received_messages_dropped:rate5m", ">",
                       "client_publish_drop_rate",
                       "EMQX drops messages an MQTT client publishes.",
                       "publishes {{ $value | humanize }} messages per second that EMQX drops "
                       "(no subscriber, authorization denied, QoS 2 PUBREL timeout, quota).",
                       self.m("emqx_client_received_messages_dropped_total")),
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
                    "mqueue", t["saturated_ratio"], self.gi,
                    self.m("emqx_clients_mqueue_saturated"), t["saturated_min"]),
                    "node_class:emqx_clients_mqueue_saturated:ratio", "node"),
                "warning", "Many MQTT sessions of one class have nearly full queues.",
                f"{{{{ $value | humanizePercentage }}}} of the sessions{where} have saturated "
                "message queues: these consumers lag as a group."),
            self.alert(
                "EMQXClientsInflightSaturated",
                self.held("EMQXClientsInflightSaturated", saturated.format(
                    "inflight", t["saturated_ratio"], self.gi,
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
                "15-minute peak (seen by {{ $labels.instance }})."),
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
        """Rule files and their groups. The exporter group comes first; every later alert
        group is about clients (what the exporter sees), so a blind exporter inhibits it: a new
        group is one more entry in ``client_groups``."""
        client_groups = [
            {"name": "emqx-clients", "rules": self.client_alerts()},
        ]
        return {
            "recording.yml": {"groups": [
                {"name": "emqx-client-exporter.rules", "rules": self.recording()}]},
            "alerts.yml": {"groups": [
                {"name": EXPORTER_GROUP, "rules": self.exporter_alerts()}, *client_groups,
                {"name": EVENTS_GROUP, "rules": self.event_alerts()}]},
        }

    def inhibit_rules(self, alert_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A blind exporter silences what it, and only it, cannot see (`equal` on `instance`:
        one down replica of a sharded job does not silence the others); a stopped or
        unwalkable node, the client alerts of that node."""
        clients = [r["alert"] for g in alert_groups if g["name"] not in (EXPORTER_GROUP,
                                                                          EVENTS_GROUP)
                   for r in g["rules"]]
        exporter_side = [*clients, "EMQXNodeStopped", "EMQXClientExporterNodeWalkFailing",
                         "EMQXClientExporterSnapshotStale", "EMQXClientExporterPollSlow",
                         "EMQXClientExporterAPIErrors", "EMQXClientExporterSeriesCapReached",
                         "EMQXClientExporterListingIncomplete"]
        job, cluster = list(self.s.job_labels), self.s.cluster_label

        def rule(sources: list[str], targets: list[str], equal: list[str]) -> dict[str, Any]:
            def matcher(names: list[str]) -> str:
                return (f'alertname="{names[0]}"' if len(names) == 1
                        else f'alertname=~"{"|".join(names)}"')
            return {"source_matchers": [matcher(sources)], "target_matchers": [matcher(targets)],
                    "equal": equal}

        # Alerts without a `node` label never match the node rules' `equal`.
        return [
            rule(["EMQXClientExporterDown", "EMQXClientExporterTargetMissing"], exporter_side,
                 [*job, "instance"]),
            rule(["EMQXClientExporterEMQXUnreachable", "EMQXClientExporterCredentialsRejected",
                  "EMQXClientExporterRateLimited"], exporter_side, [*job, "instance", cluster]),
            # A stopped node is stopped for every exporter.
            rule(["EMQXNodeStopped"], clients, [*job, cluster, "node"]),
            rule(["EMQXClientExporterNodeWalkFailing"],
                 [*clients, "EMQXClientExporterListingIncomplete"],
                 [*job, "instance", cluster, "node"]),
            # During a storm every client reconnects: the storm speaks for the single loops.
            rule(["EMQXClientsReconnectStorm"], ["EMQXClientReconnectLoop"],
                 [*job, "instance", cluster]),
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
            alertmanager_config(settings, rules.inhibit_rules(alerts["groups"]))),
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
