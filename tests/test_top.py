"""`top --once` against the simulator: the worst clients table from the exporter's own pipeline."""

from __future__ import annotations

import re

import pytest

from emqx_simulator import SimSettings
from exporter.cli import main
from tests.test_cli import KEY, _restore_logging, threaded_sim  # noqa: F401 (autouse)


def rows(out: str) -> list[list[str]]:
    """The table's body rows as cells (rich draws them between │ characters)."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in out.splitlines() if line.startswith("│")]


def test_once_shows_the_worst_by_queue_fill(capsys: pytest.CaptureFixture[str]) -> None:
    sim = SimSettings(version="5.8.9", nodes=3, clients=200)
    with threaded_sim(sim) as (cluster, url):
        for row in cluster.rows():
            cluster.patch(row["clientid"], mqueue_len=0)  # only the two below have a queue
        cluster.patch("client-0000042", mqueue_len=1000, mqueue_max=1000)
        cluster.patch("client-0000007", mqueue_len=250, mqueue_max=1000)
        truth = {r["clientid"]: r for r in cluster.rows()}
        assert main(["top", "--emqx-url", url, *KEY, "--interval", "0.5", "--once",
                     "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "worst clients by mqueue_fill" in out
    table = rows(out)
    assert [r[0] for r in table] == ["client-0000042", "client-0000007"]
    assert [r[3] for r in table] == ["100%", "25%"]
    for clientid, node, username, *_ in table:
        assert node == truth[clientid]["node"] and username == truth[clientid]["username"]


def test_once_sorts_by_byte_rate_from_the_second_poll(capsys: pytest.CaptureFixture[str]) -> None:
    sim = SimSettings(version="5.8.9", nodes=3, clients=300)
    with threaded_sim(sim) as (_, url):
        assert main(["top", "--emqx-url", url, *KEY, "--interval", "1", "--once",
                     "--sort", "byte_rate", "--limit", "7"]) == 0
    out = capsys.readouterr().out
    assert "worst clients by byte_rate" in out and "bytes/s ▼" in out
    table = rows(out)
    assert 0 < len(table) <= 7
    rates = [float(r[6].replace(",", "")) for r in table]
    assert rates == sorted(rates, reverse=True) and rates[0] > 0
    assert all(re.fullmatch(r"emqx@10\.0\.0\.\d", r[1]) for r in table)


def test_unreachable_cluster_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--emqx-url", "http://127.0.0.1:9", *KEY, "--once"]) == 1
    assert "poll failed" in capsys.readouterr().out
