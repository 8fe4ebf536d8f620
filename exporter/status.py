"""The status page an operator opens first during an incident: `/` (HTML) and `/status.json`.

`build_status` gathers a plain data model from the running exporter; `render_html` and
`to_json` turn it into the two views, so both always show the same facts. The HTML has no
external assets, fits a phone screen, and escapes every value that came from outside.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.dialects import Dialect
from exporter.eventsource import describe as describe_events
from exporter.pipeline import CAP_HINT, SelectionSummary
from exporter.selection import DEFAULT_RANKING, DEFAULT_RANKING_NAME, RANKING_HELP

if TYPE_CHECKING:
    from exporter.poller import ClusterPoller
    from exporter.service import Exporter


@dataclass(frozen=True, slots=True)
class NodeStatus:
    name: str
    #: "up", "walk failed" (EMQX lists it as running, we could not walk it), "stopped" (EMQX
    #: says so) or "not polled" (known from an earlier poll only).
    state: str
    clients: int | None
    last_error_reason: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    #: Rows EMQX reported for the node that its listing never gave; None: nothing to compare.
    unlisted: int | None = None


@dataclass(frozen=True, slots=True)
class TopEntry:
    clientid: str
    node: str | None
    #: The scores the ranking orders by (the default ranking has several), by name.
    scores: dict[str, float]


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    name: str
    up: bool
    emqx_version: str | None
    dialect: str | None
    listing: str
    auth: str
    last_poll_at: float | None
    last_poll_age_seconds: float | None
    last_poll_duration_seconds: float | None
    #: "ok", "partial: N of M nodes failed", "failed: reason: message" or "not polled yet".
    outcome: str
    last_success_at: float | None
    #: The last failure of a whole poll (reason, message, when), even if polls work again.
    last_poll_error: tuple[str, str, float] | None
    nodes: list[NodeStatus]
    selection: dict[str, object] | None
    #: The selection in plain words: who got per-client series, who did not, what to do.
    selection_text: list[str]
    #: Ranking name → its worst clients with their score in that ranking.
    top: dict[str, list[TopEntry]] = field(default_factory=dict)
    #: Rows EMQX reported but the last poll never listed, in words; None: nothing to compare.
    unlisted: str | None = None
    #: The client events subscription: "off ...", "up: ..." or "DOWN ...".
    events: str = ""


@dataclass(frozen=True, slots=True)
class Status:
    version: str
    generated_at: float
    snapshot_series: int
    snapshot_age_seconds: float | None
    clusters: list[ClusterStatus]
    links: list[tuple[str, str]]


def listing_mode(dialect: Dialect | None) -> str:
    """How a dialect lists clients: `page (per node)`, `cursor (cluster-wide)`, ..."""
    if dialect is None:
        return "unknown"
    return f"{dialect.listing_kind} ({'per node' if dialect.per_node else 'cluster-wide'})"


def explain(summary: SelectionSummary) -> list[str]:
    """Who got per-client series and who did not, in words (`check` and the status page)."""
    cap = (f"per_client.max_series {summary.max_series} / {summary.series_per_client} series "
           f"per client = {summary.max_clients} clients")
    if summary.mode == "watch only":
        lines = [f"watch only: {summary.watched} watched clients looked up, "
                 f"{summary.exported} got per-client series"]
    elif summary.mode == "all":
        lines = [f"per-client series for all {summary.exported} clients listed "
                 f"(cap: {cap})"]
    else:
        lines = [f"per-client series for {summary.exported} of {summary.listed} clients listed"]
    if summary.left_out:
        why = ("chosen by the default ranking (worst first by " + ", ".join(DEFAULT_RANKING)
               + ")" if summary.mode == "default ranking" else "chosen by the selection")
        lines.append(f"{summary.left_out} clients left out by the cap ({cap}); {why}")
        lines.append(f"to change this: {CAP_HINT}")
    elif summary.mode == "configured":
        lines.append("chosen by the configured watch list, allow list or top-K; "
                     "none left out by the cap")
    if summary.watched:
        lines.append(f"watched: {summary.watched}, of which {summary.watched_offline} offline")
    return lines


def _outcome(poller: ClusterPoller) -> str:
    report = poller.last_report
    if report is None:
        return "not polled yet"
    if report.error is not None and not report.ok:
        return f"failed: {report.error.reason}: {report.error}"
    failed = sum(1 for o in report.outcomes if o.error is not None)
    if failed:
        return f"partial: {failed} of {len(report.outcomes)} nodes failed"
    return "ok"


def _nodes(poller: ClusterPoller) -> list[NodeStatus]:
    report = poller.last_report
    outcomes = {o.node: o for o in report.outcomes} if report is not None else {}
    stopped = ({n.name for n in report.nodes if not n.running} if report is not None
               else set())
    unlisted = report.unlisted if report is not None else {}
    # Known nodes stay listed when a poll cannot even list them (`node_up` 0, not absent).
    names = sorted(set(outcomes) | set(poller.known_nodes)
                   | {n for n in poller.last_failures if n})
    nodes = []
    for name in names:
        outcome = outcomes.get(name)
        state = ("not polled" if outcome is None else "up" if outcome.error is None
                 else "stopped" if name in stopped else "walk failed")
        note = poller.last_failures.get(name)
        nodes.append(NodeStatus(
            name=name, state=state,
            clients=outcome.clients if outcome is not None and outcome.error is None else None,
            last_error_reason=note.reason if note else None,
            last_error=note.message if note else None,
            last_error_at=note.at if note else None, unlisted=unlisted.get(name)))
    return nodes


def unlisted_text(unlisted: dict[str, int]) -> str | None:
    """The rows EMQX reported but never listed, in words (`check`, the status page)."""
    if not unlisted:
        return None
    total = sum(unlisted.values())
    if not total:
        return "0: every row EMQX reported was listed"
    where = ", ".join(f"{node}: {rows}" for node, rows in sorted(unlisted.items()) if rows)
    return (f"{total} rows EMQX reported but never listed ({where}): offset drift under "
            "churn or lost rows; see emqx_client_exporter_clients_unlisted")


def _orders_by(ranking: str) -> tuple[str, ...]:
    return DEFAULT_RANKING if ranking == DEFAULT_RANKING_NAME else (ranking,)


def _top(summary: SelectionSummary | None) -> dict[str, list[TopEntry]]:
    if summary is None:
        return {}
    return {name: [TopEntry(m.clientid, m.node, {s: m.score(s) for s in _orders_by(name)})
                   for m in members]
            for name, members in summary.top.items()}


def _selection(summary: SelectionSummary | None) -> dict[str, object] | None:
    """The summary's figures; its rankings are in `ClusterStatus.top` (without usernames)."""
    if summary is None:
        return None
    figures: dict[str, object] = {k: v for k, v in asdict(summary).items() if k != "top"}
    figures.update(max_clients=summary.max_clients, cap_binds=summary.cap_binds)
    return figures


def cluster_status(poller: ClusterPoller, now: float) -> ClusterStatus:
    report = poller.last_report
    summary = report.result.selection if report is not None and report.result else None
    auth = poller.client.auth
    return ClusterStatus(
        name=poller.label, up=poller.stats.up, emqx_version=poller.version,
        dialect=poller.dialect.name if poller.dialect else None,
        listing=listing_mode(poller.dialect),
        auth=auth.kind if auth is not None else "none",
        last_poll_at=report.started if report else None,
        last_poll_age_seconds=max(0.0, now - report.started) if report else None,
        last_poll_duration_seconds=report.duration if report else None,
        outcome=_outcome(poller), last_success_at=poller.stats.last_success,
        last_poll_error=(None if (note := poller.last_failures.get("")) is None
                         else (note.reason, note.message, note.at)),
        nodes=_nodes(poller),
        selection=_selection(summary),
        selection_text=explain(summary) if summary is not None else [],
        top=_top(summary),
        unlisted=unlisted_text(report.unlisted) if report is not None else None)


def build_status(exporter: Exporter, now: float | None = None) -> Status:
    """Everything the status page shows, as plain data."""
    now = exporter.clock() if now is None else now
    created = exporter.snapshot.created
    links = [("metrics", "/metrics"), ("status as JSON", "/status.json"),
             ("readiness", "/-/ready")]
    if exporter.settings.dashboard_url:
        links.append(("dashboards", exporter.settings.dashboard_url))
    return Status(
        version=__version__, generated_at=now, snapshot_series=exporter.snapshot.series,
        snapshot_age_seconds=max(0.0, now - created) if created else None,
        clusters=[replace(cluster_status(p, now), events=describe_events(
            exporter.events.subscriptions.get(p.label))) for p in exporter.pollers],
        links=links)


def to_json(status: Status) -> str:
    return json.dumps(asdict(status), indent=2, sort_keys=True)


# --- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:.75rem;
line-height:1.4;color:#1b1b1b;background:#fafafa}
h1{font-size:1.3rem}h2{font-size:1.15rem;margin-top:1.5rem}h3{font-size:1rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .4rem;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}.num{text-align:right}
.ok{color:#1a7f37;font-weight:600}.bad{color:#b3261e;font-weight:600}
.warn{color:#8a5a00;font-weight:600}dl{display:grid;grid-template-columns:max-content 1fr;
gap:.2rem .8rem;margin:.5rem 0}dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
nav a{margin-right:1rem}.wrap{overflow-x:auto}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _state_class(state: str) -> str:
    return "ok" if state in ("up", "ok") else "warn" if state.startswith(
        ("partial", "not polled", "stopped")) else "bad"


def _events_class(events: str) -> str:
    return "ok" if events.startswith("up") else "bad" if events.startswith("DOWN") else ""


def _poll_error(error: tuple[str, str, float] | None) -> str:
    if error is None:
        return "none"
    reason, message, at = error
    return f"{_e(reason)}: {_e(message)} at {_e(_when(at))}"


def _cluster_html(c: ClusterStatus) -> str:
    out = [f"<section><h2>Cluster {_e(c.name)}: "
           f"<span class='{'ok' if c.up else 'bad'}'>{'up' if c.up else 'DOWN'}</span></h2>",
           "<dl>",
           f"<dt>EMQX</dt><dd>{_e(c.emqx_version or 'unknown')}</dd>",
           f"<dt>dialect</dt><dd>{_e(c.dialect or 'unknown')}</dd>",
           f"<dt>listing</dt><dd>{_e(c.listing)}</dd>",
           f"<dt>auth</dt><dd>{_e(c.auth)}</dd>",
           f"<dt>events</dt><dd class='{_events_class(c.events)}'>{_e(c.events)}</dd>",
           f"<dt>last poll</dt><dd>{_e(_when(c.last_poll_at))} "
           f"({_e(_seconds(c.last_poll_age_seconds))} ago, took "
           f"{_e(_seconds(c.last_poll_duration_seconds))})</dd>",
           f"<dt>outcome</dt><dd class='{_state_class(c.outcome)}'>{_e(c.outcome)}</dd>",
           f"<dt>last success</dt><dd>{_e(_when(c.last_success_at))}</dd>",
           f"<dt>last failed poll</dt><dd>{_poll_error(c.last_poll_error)}</dd>",
           *([] if c.unlisted is None else [f"<dt>unlisted rows</dt><dd class='"
                                            f"{'warn' if c.unlisted[0] != '0' else 'ok'}'>"
                                            f"{_e(c.unlisted)}</dd>"]),
           "</dl>", "<h3>Nodes</h3><div class='wrap'><table><thead><tr><th>node</th>"
           "<th>state</th><th class='num'>clients</th><th>last error</th></tr></thead><tbody>"]
    for n in c.nodes:
        error = "-" if n.last_error is None else (
            f"{_e(n.last_error_reason)}: {_e(n.last_error)} at {_e(_when(n.last_error_at))}")
        out.append(f"<tr><td>{_e(n.name)}</td><td class='{_state_class(n.state)}'>"
                   f"{_e(n.state)}</td><td class='num'>"
                   f"{_e('-' if n.clients is None else n.clients)}</td><td>{error}</td></tr>")
    if not c.nodes:
        out.append("<tr><td colspan='4'>no node known yet</td></tr>")
    out.append("</tbody></table></div><h3>Selection</h3>")
    if c.selection_text:
        out.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in c.selection_text)
                   + "</ul>")
    else:
        out.append("<p>no successful poll yet</p>")
    for name, entries in c.top.items():
        scores = _orders_by(name)
        title = ("worst clients by the default ranking" if name == DEFAULT_RANKING_NAME
                 else f"top by {name} ({RANKING_HELP[name]})")
        heads = "".join(f"<th class='num'>{_e(s)}</th>" for s in scores)
        out.append(f"<h3>{_e(title)}</h3><div class='wrap'><table><thead><tr><th>#</th>"
                   f"<th>client</th><th>node</th>{heads}</tr></thead><tbody>")
        for rank, entry in enumerate(entries, start=1):
            cells = "".join(f"<td class='num'>{_e(f'{entry.scores[s]:.4g}')}</td>"
                            for s in scores)
            out.append(f"<tr><td>{rank}</td><td>{_e(entry.clientid)}</td>"
                       f"<td>{_e(entry.node or '')}</td>{cells}</tr>")
        if not entries:
            out.append(f"<tr><td colspan='{3 + len(scores)}'>no client scores above 0</td></tr>")
        out.append("</tbody></table></div>")
    out.append("</section>")
    return "\n".join(out)


def render_html(status: Status) -> str:
    """The status page: one section per cluster, links first."""
    links = "".join(f"<a href='{_e(url)}'>{_e(label)}</a>" for label, url in status.links)
    body = "\n".join(_cluster_html(c) for c in status.clusters)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>emqx-client-exporter status</title><style>{_CSS}</style></head><body>"
        f"<h1>emqx-client-exporter {_e(status.version)}</h1><nav>{links}</nav>"
        f"<p>Generated {_e(_when(status.generated_at))}; snapshot: "
        f"{_e(status.snapshot_series)} series, "
        f"{_e(_seconds(status.snapshot_age_seconds))} old.</p>\n{body}\n</body></html>\n")

