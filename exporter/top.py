"""`emqx-client-exporter top`: the worst clients, live, in a terminal.

It runs the exporter's own pipeline with a top-K of every ranking (`selection.RANKINGS`), so the
scores, rates and rankings are exactly those `run` exports; this module only draws the table.
Rates need two polls: the table appears after the second one and refreshes after each next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.live import Live
from rich.table import Table

from exporter.config import Settings
from exporter.poller import PollReport
from exporter.selection import RANKING_HELP, RANKINGS, RankedClient, SelectionSettings
from exporter.service import Exporter

#: How each score is shown: (ranking, column title, format).
_COLUMNS = (
    ("mqueue_fill", "queue fill", "{:.0%}"),
    ("inflight_fill", "inflight fill", "{:.0%}"),
    ("drop_rate", "drops/s", "{:.3g}"),
    ("byte_rate", "bytes/s", "{:,.0f}"),
    ("reconnects", "reconnects", "{:.1f}"),
)


def top_settings(settings: Settings, limit: int) -> Settings:
    """The user's settings with a top-`limit` of every ranking as the only selection.

    Without hysteresis, so the table shows who is worst now rather than who was.
    """
    selection = SelectionSettings(top_k=tuple((name, limit) for name in RANKINGS),
                                  hysteresis=0.0, max_series=10_000_000)
    per_client = dataclasses.replace(settings.per_client, selection=selection, state_file=None)
    return dataclasses.replace(settings, per_client=per_client)


def worst(exporter: Exporter, ranking: str) -> list[tuple[str, RankedClient]]:
    """(cluster, client) of the ranking's members across clusters, worst first."""
    index = RANKINGS.index(ranking)
    rows = [(poller.label, member) for poller in exporter.pollers
            for member in poller.pipeline.rankings().get(ranking, [])]
    return sorted(rows, key=lambda row: row[1].scores[index], reverse=True)


def table(exporter: Exporter, ranking: str, limit: int) -> Table:
    rows = worst(exporter, ranking)[:limit]
    several = len(exporter.pollers) > 1
    title = f"worst clients by {ranking} ({RANKING_HELP[ranking]})"
    grid = Table(title=title, caption=_caption(exporter), expand=False)
    if several:
        grid.add_column("cluster", overflow="fold")
    grid.add_column("client", overflow="fold")
    grid.add_column("node", overflow="fold")
    grid.add_column("username", overflow="fold")
    for name, heading, _ in _COLUMNS:
        grid.add_column(heading + (" ▼" if name == ranking else ""), justify="right")
    for cluster, member in rows:
        cells = [member.clientid, member.node or "", member.username or ""]
        scores = [fmt.format(member.score(name)) for name, _, fmt in _COLUMNS]
        grid.add_row(*([cluster] if several else []), *cells, *scores)
    if not rows:
        grid.add_row(*([""] if several else []), f"no client scores above 0 by {ranking}",
                     *[""] * (2 + len(_COLUMNS)))
    return grid


def _caption(exporter: Exporter) -> str:
    parts = []
    for poller in exporter.pollers:
        s = poller.stats
        state = "up" if s.up else "DOWN"
        down = [n for n, ok in sorted(s.node_up.items()) if not ok]
        parts.append(f"{poller.label}: {state}, {sum(s.clients_listed.values())} clients"
                     + (f", nodes down: {', '.join(down)}" if down else ""))
    return "; ".join(parts)


def _console() -> Console:
    # Piped output (scripts, tests) gets wide lines rather than cut client ids.
    return Console() if sys.stdout.isatty() else Console(width=200)


async def run_top(settings: Settings, ranking: str, limit: int, *, once: bool) -> int:
    """Poll, wait an interval, poll again and show the table; then refresh until stopped."""
    exporter = Exporter(top_settings(settings, limit))
    interval = min(c.interval for c in settings.clusters)
    console = _console()
    try:
        reports = await exporter.poll_all_once()
        if not any(r.ok for r in reports):
            _fail(console, reports)
            return 1
        console.print(f"first poll done; rates need a second one in {interval:g} s "
                      f"(--interval to change) ...", style="dim", markup=False)
        await asyncio.sleep(interval)
        reports = await exporter.poll_all_once()
        if once:
            console.print(table(exporter, ranking, limit))
            return 0 if all(r.ok for r in reports) else 1
        with Live(table(exporter, ranking, limit), console=console,
                  auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                await exporter.poll_all_once()
                live.update(table(exporter, ranking, limit), refresh=True)
    finally:
        await exporter.stop()


def _fail(console: Console, reports: Sequence[PollReport]) -> None:
    for report in reports:
        console.print(f"poll failed: {report.error}", style="bold red", markup=False)
