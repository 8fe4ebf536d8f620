"""A cluster's pipeline in a worker process gives what it gives in-process; its failures show."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from exporter.aggregate import AggregateSettings, Classifier, ClassRule
from exporter.config import PerClientSettings
from exporter.pipeline import Pipeline, PipelineResult
from exporter.records import ClientRecord, record_type
from exporter.selection import Pattern, SelectionSettings
from exporter.timeparse import TimeParser
from exporter.worker import PipelineHost, ProcessPipeline, WorkerFailedError, WorkerLostError
from tests.harness import rig, value

V5 = record_type("v5")
LEAN = record_type("v5", only=frozenset({"node", "connected", "mqueue_len", "received_bytes"}))
NODES = ("emqx@a", "emqx@b")
WATCH = frozenset({"client-003", "client-gone"})


def records(poll: int) -> list[ClientRecord]:
    """Two nodes' clients whose counters, queues and connections change from poll to poll."""
    out: list[ClientRecord] = [V5(
        clientid=f"client-{i:03d}", node=NODES[i % 2], connected=i % 7 != 0,
        connected_at=f"2026-12-01T00:00:{i if i % 5 else poll:02d}Z",
        received_bytes=1000 * i * poll, sent_bytes=10 * i, received_messages=poll * i,
        sent_messages=i, sent_dropped=poll * (i % 3), mqueue_len=(i * poll) % 50,
        mqueue_max=100, inflight=i % 4, inflight_max=32, subscriptions=i % 3,
        username=f"user-{i % 4}", listener="tcp:default", proto_ver=5) for i in range(40)]
    # A record of another class on the same page (held v3 rows can be), and a duplicate.
    out.append(LEAN(clientid="lean-1", node=NODES[0], connected=True, mqueue_len=3,
                    received_bytes=poll))
    out.append(V5(clientid="client-001", node=NODES[1]))
    return out


def factory(cap_clients: int = 12) -> partial[Pipeline]:
    selection = SelectionSettings(
        watch=WATCH, top_k=(("mqueue_fill", 3), ("byte_rate", 2)),
        max_series=cap_clients * 20, allow=(Pattern("clientid", re.compile("client-0[0-2].*")),))
    classes = Classifier([ClassRule("username", re.compile("user-[01]"), "low")])
    return partial(Pipeline, PerClientSettings(), AggregateSettings(labels=("node", "class")),
                   classes, TimeParser(ZoneInfo("UTC")), (("cluster", "c1"),), selection)


def drive(host: PipelineHost, polls: int = 4) -> list[PipelineResult]:
    """Polls with pages of 9, one losing node b mid-walk, and a watch-only lookup."""
    results = []
    for poll in range(1, polls + 1):
        if poll == 2:
            lookup = host.start_lookup(1000.0 + 30 * poll - 15, {NODES[0]: (20, 25),
                                                                   NODES[1]: (None, 18)})
            lookup.add_page(None, [r for r in records(poll) if r.clientid in WATCH])
            lookup.mark_unknown({"client-gone"})
            results.append(lookup.finish([]))
        run = host.start_walk(1000.0 + 30 * poll)
        page = records(poll)
        for start in range(0, len(page), 9):
            run.add_page(None, page[start:start + 9])
        walked = list(NODES)
        if poll == 3:
            run.fail([NODES[1]])
            walked = [NODES[0]]
        results.append(run.finish(walked))
    return results


@pytest.fixture
def process_host() -> Iterator[ProcessPipeline]:
    host = ProcessPipeline(factory(), log_level="warning", label="test")
    yield host
    host.close()


def test_the_worker_process_renders_what_the_pipeline_renders(
        process_host: ProcessPipeline) -> None:
    in_thread = factory()()
    expected = drive(in_thread)
    got = drive(process_host)
    assert got == expected  # every rendered byte, count and selection summary
    assert expected[-1].selection is not None and expected[-1].selection.top
    assert process_host.rankings() == in_thread.rankings() != {}
    assert dict(process_host.last_seen) == in_thread.last_seen != {}
    footprint = process_host.footprint()
    assert footprint.clients == len(in_thread.state) > 0
    assert footprint.state_bytes == in_thread.state.nbytes()
    assert footprint.worker_peak_rss_bytes is not None and footprint.worker_peak_rss_bytes > 0


def test_last_seen_times_from_before_reach_the_worker(process_host: ProcessPipeline) -> None:
    process_host.remember_seen({"client-gone": 42.0})
    assert process_host.last_seen["client-gone"] == 42.0  # readable before any poll
    (result,) = drive(process_host, polls=1)
    text = b"".join(b"".join(chunks) for chunks in result.rendered.values()).decode()
    assert 'emqx_client_last_seen_timestamp_seconds{cluster="c1",clientid="client-gone"} 42.0' \
        in text
    assert process_host.last_seen["client-gone"] == 42.0


def test_a_lost_worker_fails_the_call_and_the_next_poll_starts_a_new_one(
        process_host: ProcessPipeline) -> None:
    drive(process_host, polls=2)
    pid = process_host.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match="exit code -9"):
        process_host.start_walk(5000.0).add_page(None, records(1))
    with capture_logs() as logs:
        (result,) = drive(process_host, polls=1)
    assert process_host.pid not in (None, pid) and process_host.restarts == 1
    assert [e["event"] for e in logs] == ["pipeline_worker_restarted"]
    assert result.clients == 41  # a fresh pipeline: the baseline poll of a new process


def exploding() -> Pipeline:
    """A pipeline whose counter state raises, as a bug of ours would (runs in the worker)."""
    pipeline = factory()()

    def observe(*_: object) -> Any:
        raise OverflowError("int too big to convert")

    pipeline.state.observe = observe  # type: ignore[method-assign,assignment]
    return pipeline


def test_a_bug_in_the_worker_is_reported_with_where_it_happened() -> None:
    host = ProcessPipeline(exploding, log_level="warning")
    try:
        run = host.start_walk(1.0)
        run.add_page(None, records(1))  # not answered: the failure comes with the next answer
        run.add_page(None, records(1))
        with pytest.raises(WorkerFailedError, match=r"OverflowError: int too big .* at test_w"):
            run.finish(list(NODES))
        assert host.pid is not None  # the worker survives its pipeline's exception
        host.start_walk(2.0).finish([])  # and the next poll starts clean
    finally:
        host.close()
    assert host.pid is None


async def test_a_killed_worker_shows_as_down_and_internal_then_recovers() -> None:
    async with rig(SimSettings(version="5.8.9", nodes=2, clients=120),
                   pipeline_worker="process") as r:
        poller = r.exporter.pollers[0]
        assert isinstance(poller.pipeline, ProcessPipeline)
        await r.poll()
        assert value(await r.scrape(), "emqx_client_exporter_up") == 1
        assert poller.pipeline.pid is not None
        os.kill(poller.pipeline.pid, signal.SIGKILL)
        await r.poll()
        down = await r.scrape()
        assert value(down, "emqx_client_exporter_up") == 0
        assert value(down, "emqx_client_exporter_api_errors_total", reason="internal") == 1
        assert value(down, "emqx_clients_online") is None  # a failed poll serves none of it
        await r.poll()
        again = await r.scrape()
        assert value(again, "emqx_client_exporter_up") == 1
        assert value(again, "emqx_clients_online", node="emqx@10.0.0.1") is not None
        status = await r.client.get("/status.json")
        assert "started again 1 times" in (await status.json())["clusters"][0]["pipeline"]
