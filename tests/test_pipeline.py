"""PollRun as a unit: a walk and a lookup from their constructors, de-duplication, failed walks."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter import pipeline as pipeline_module
from exporter.aggregate import AggregateSettings, Classifier
from exporter.columns import Columns
from exporter.config import PerClientSettings
from exporter.pipeline import Pipeline, PipelineResult, PollRun, render_batches, series_per_client
from exporter.records import ClientRecord, record_type
from exporter.selection import Pattern, SelectionSettings
from exporter.snapshot import compose
from exporter.timeparse import TimeParser
from tests.exposition import samples_text
from tests.harness import per_client, value

V5 = record_type("v5")
A, B, C = "emqx@a", "emqx@b", "emqx@c"
PER_CLIENT = PerClientSettings()
SERIES = series_per_client(PER_CLIENT.parts)


def client(clientid: str, node: str = A, **fields: Any) -> ClientRecord:
    values: dict[str, Any] = {"node": node, "connected": True,
                              "connected_at": "2026-01-01T00:00:00Z", "mqueue_len": 0,
                              "mqueue_max": 100, "received_bytes": 0}
    values.update(fields)
    return V5(clientid=clientid, **values)


def pipeline(**selection: Any) -> Pipeline:
    return Pipeline(PER_CLIENT, AggregateSettings(), Classifier([]), TimeParser(ZoneInfo("UTC")),
                    selection=SelectionSettings(**selection))


def exposition(result: PipelineResult, now: float = 0.0) -> list[tuple[str, Any, float]]:
    return samples_text(compose([result.rendered], now).text())


def test_a_walk_counts_a_client_listed_twice_once_and_keeps_the_first_row() -> None:
    p = pipeline()
    run = p.start_walk(1000.0)
    run.add_page(A, [client("x", mqueue_len=5), client("y")])
    run.add_page(B, [client("x", node=B, mqueue_len=9), client("z", node=B)])
    result = run.finish([A, B])
    assert (result.clients, result.duplicates, result.listed) == (3, 1, {A: 2, B: 1})
    samples = exposition(result)
    assert per_client(samples, "emqx_client_mqueue_messages") == {"x": 5, "y": 0, "z": 0}
    assert value(samples, "emqx_clients_sessions", node=A) == 2


def test_rates_start_with_the_second_walk() -> None:
    p = pipeline(top_k=(("byte_rate", 1),))
    first = p.start_walk(1000.0)
    assert first.per_second is None and not first.lookup
    first.add_page(A, [client("x", received_bytes=100)])
    summary = first.finish([A]).selection
    assert summary is not None and summary.top["byte_rate"] == []  # no rate yet
    second = p.start_walk(1010.0)
    second.add_page(A, [client("x", received_bytes=600)])
    summary = second.finish([A]).selection
    assert summary is not None
    assert [(m.clientid, m.score("byte_rate")) for m in summary.top["byte_rate"]] == [
        ("x", 50.0)]  # 500 bytes in 10 s


def test_a_lookup_watches_without_walking_and_aggregates_only_what_nodes_report() -> None:
    p = pipeline(watch=frozenset({"here", "unknown", "gone"}), watch_only=True)
    run = p.start_lookup(1000.0, {A: (40, 42), B: (7, None)})
    assert run.lookup
    run.add_page(None, [client("here")])
    run.mark_unknown({"unknown"})  # its lookup failed: neither online nor offline
    result = run.finish([])
    samples = exposition(result)
    assert per_client(samples, "emqx_client_online") == {"here": 1, "gone": 0}
    assert len(p.state) == 0  # a lookup keeps no counter state
    assert value(samples, "emqx_clients_online", node=A) == 40
    assert value(samples, "emqx_clients_sessions", node=A) == 42
    assert value(samples, "emqx_clients_sessions", node=B) is None  # not reported: absent
    summary = result.selection
    assert summary is not None
    assert (summary.mode, summary.listed, summary.watched, summary.watched_offline) == (
        "watch only", 1, 3, 1)


def test_a_failed_walk_gives_its_room_under_the_cap_to_the_other_nodes() -> None:
    everyone = (Pattern("clientid", re.compile(".*")),)
    p = pipeline(allow=everyone, max_series=3 * SERIES)
    run = p.start_walk(1000.0)
    run.add_page(A, [client("a1"), client("a2")])
    run.add_page(B, [client("b1", node=B), client("b2", node=B), client("b3", node=B)])
    run.fail([A])  # a1 and a2 are dropped with their node: two places come back
    run.add_page(C, [client("c1", node=C), client("c2", node=C), client("c3", node=C)])
    result = run.finish([B, C])
    samples = exposition(result)
    assert set(per_client(samples, "emqx_client_online")) == {"b1", "c1", "c2"}
    assert result.listed == {B: 3, C: 3}
    assert result.selection is not None and result.selection.left_out == 3  # b2, b3, c3
    assert result.series_dropped == 3 * SERIES


def test_a_failed_node_takes_its_watched_clients_and_top_k_candidates_with_it() -> None:
    p = pipeline(watch=frozenset({"w"}), top_k=(("mqueue_fill", 1),))
    run = p.start_walk(1000.0)
    run.add_page(A, [client("w"), client("worst", mqueue_len=90)])
    run.add_page(B, [client("next", node=B, mqueue_len=10)])
    run.fail([A])
    result = run.finish([B])
    samples = exposition(result)
    # w is not reported offline: its node was not walked, so it is not known to be gone
    assert set(per_client(samples, "emqx_client_online")) == {"next"}
    assert result.selection is not None
    assert [m.clientid for m in result.selection.top["mqueue_fill"]] == ["next"]


def test_each_top_k_holds_the_worst_of_many_pages_ties_included() -> None:
    p = pipeline(top_k=(("mqueue_fill", 10), ("inflight_fill", 3)), hysteresis=0.0)
    queues = [(i * 7919) % 500 for i in range(600)]  # 0..499, most values twice
    fleet = [client(f"c{i:03d}", mqueue_len=q, mqueue_max=1000, inflight=i % 4, inflight_max=40)
             for i, q in enumerate(queues)]
    fleet += [client(f"full{i}", mqueue_len=1000, mqueue_max=1000) for i in range(3)]
    fleet.append(client("unlimited", mqueue_len=10**6, mqueue_max=0))  # no fill: not ranked
    run = p.start_walk(1000.0)
    for start in range(0, len(fleet), 37):
        run.add_page(A, fleet[start:start + 37])
    summary = run.finish([A]).selection
    assert summary is not None
    ranked = sorted(fleet[:600], key=lambda r: r.mqueue_len or 0, reverse=True)
    worst = {"full0", "full1", "full2"} | {r.clientid for r in ranked[:7]}
    assert (ranked[6].mqueue_len or 0) > (ranked[7].mqueue_len or 0)  # no tie at the edge
    assert {m.clientid for m in summary.top["mqueue_fill"]} == worst
    assert [m.score("inflight_fill") for m in summary.top["inflight_fill"]] == [3 / 40] * 3


def test_a_client_new_in_this_poll_has_no_rate_beside_those_that_do() -> None:
    p = pipeline(top_k=(("drop_rate", 2),), hysteresis=0.0)
    first = p.start_walk(1000.0)
    first.add_page(A, [client("a", sent_dropped=0), client("b", sent_dropped=0)])
    first.finish([A])
    second = p.start_walk(1010.0)
    second.add_page(A, [client("a", sent_dropped=50), client("fresh", sent_dropped=10**6),
                        client("b", sent_dropped=20)])
    summary = second.finish([A]).selection
    assert summary is not None
    assert [(m.clientid, m.score("drop_rate")) for m in summary.top["drop_rate"]] == [
        ("a", 5.0), ("b", 2.0)]


def _walk_text(pages: list[tuple[str, list[ClientRecord]]], fail: tuple[str, ...] = (),
               **selection: Any) -> tuple[str, PollRun]:
    p = pipeline(**selection)
    run = p.start_walk(1000.0)
    for node, records in pages:
        run.add_page(node, records)
    run.fail(fail)
    result = run.finish([node for node, _ in pages if node not in fail])
    return compose([result.rendered], 0.0).text(), run


def _pages() -> list[tuple[str, list[ClientRecord]]]:
    return [(A, [client(f"a{i}", mqueue_len=i) for i in range(3)]),
            (B, [client(f"b{i}", node=B, mqueue_len=10 * i) for i in range(5)]),
            (A, [client("a9", mqueue_len=50)])]


def test_batches_rendered_during_the_walk_are_what_the_end_would_render(
        monkeypatch: pytest.MonkeyPatch) -> None:
    at_the_end, _ = _walk_text(_pages())
    monkeypatch.setattr(pipeline_module, "RENDER_BATCH", 2)
    text, run = _walk_text(_pages())
    assert run.nodes[A].rendered_chunks == 1 and run.nodes[B].rendered_chunks == 1
    assert text == at_the_end  # the same lines in the same order
    assert len(per_client(samples_text(text), "emqx_client_online")) == 9


def test_a_failed_node_takes_the_text_rendered_for_it_during_the_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "RENDER_BATCH", 2)
    text, run = _walk_text(_pages(), fail=(A,))
    assert A not in run.nodes
    assert set(per_client(samples_text(text), "emqx_client_online")) == {
        f"b{i}" for i in range(5)}


def test_when_the_cap_starts_binding_mid_walk_the_default_ranking_chooses_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No selection configured: clients stream until the cap's room is gone, then all are
    # ranked by the default ranking; what was rendered early is not exported twice or at all.
    at_the_end, _ = _walk_text(_pages(), max_series=4 * SERIES)
    monkeypatch.setattr(pipeline_module, "RENDER_BATCH", 2)
    text, run = _walk_text(_pages(), max_series=4 * SERIES)
    assert run.nodes[A].rendered_chunks == 1  # rendered before the cap bound
    assert text == at_the_end
    online = per_client(samples_text(text), "emqx_client_online")
    assert len(online) == 4 and "b4" in online and "a9" in online  # the fullest queues


def test_render_batches_join_small_chunks_and_split_large_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "RENDER_BATCH", 4)
    chunks = [Columns([client(f"{n}{i}") for i in range(size)])
              for n, size in (("x", 1), ("y", 6), ("z", 2))]
    batches = list(render_batches(chunks))
    assert [b.clientids for b in batches] == [["x0", "y0", "y1", "y2"], ["y3", "y4", "y5", "z0"],
                                              ["z1"]]
    assert list(render_batches([])) == []
