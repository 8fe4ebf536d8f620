"""Rendering: label escaping, golden exposition, both formats re-parsed, promtool clean."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exporter import contract
from exporter.aggregate import AggregateSettings, Classifier
from exporter.columns import Columns
from exporter.config import PerClientSettings
from exporter.dialects.v4 import V4Dialect
from exporter.dialects.v5 import V5PageDialect
from exporter.pipeline import Pipeline, PipelineResult
from exporter.records import ClientRecord, record_type
from exporter.render import field_label_column, info_suffixes
from exporter.snapshot import compose
from exporter.timeparse import TimeParser
from tests.conftest import GOLDEN, compare_golden, fixture_bytes
from tests.exposition import (
    by_name,
    promtool_check,
    samples_openmetrics,
    samples_text,
)
from tests.test_dialects import answer

ALL_PARTS = frozenset(p.name for p in contract.PARTS)


def one_poll(pipeline: Pipeline, records: list[ClientRecord],
             nodes: tuple[str, ...] = ("emqx@127.0.0.1",)) -> PipelineResult:
    run = pipeline.start_walk(0.0)
    run.add_page(None, records)
    return run.finish(list(nodes))


def sample_records() -> list[ClientRecord]:
    v5 = V5PageDialect("5.8.9")
    v4 = V4Dialect("4.4.19")
    records = list(v5.parse_list(answer(fixture_bytes("v5", "v5-clients.json")),
                                 v5.list_request("n")).records)
    records += v5.parse_list(answer(fixture_bytes("v5", "v5-clients-offline-session.json")),
                             v5.list_request("n")).records
    records += v4.parse_list(answer(fixture_bytes("v4", "v4.4-clients.json")),
                             v4.list_request("n")).records
    return records


def run(records: list[ClientRecord], parts: frozenset[str] = contract.DEFAULT_PARTS,
        info_labels: tuple[str, ...] = contract.DEFAULT_INFO_LABELS,
        **kwargs: object) -> tuple[str, str]:
    pipeline = Pipeline(PerClientSettings(parts=parts, info_labels=info_labels),
                        AggregateSettings(), Classifier([]),
                        TimeParser(ZoneInfo("UTC")), **kwargs)  # type: ignore[arg-type]
    snapshot = compose([one_poll(pipeline, records).rendered], 0.0)
    return (snapshot.text("text"), snapshot.text("openmetrics") + "# EOF\n")


@pytest.mark.parametrize("parts", [contract.DEFAULT_PARTS, ALL_PARTS], ids=["default", "all"])
def test_golden_exposition(parts: frozenset[str], update_golden: bool) -> None:
    text, om = run(sample_records(), parts)
    name = "default" if parts == contract.DEFAULT_PARTS else "all-parts"
    for suffix, body in ((".prom", text), (".om.txt", om)):
        compare_golden(f"render-{name}{suffix}", body, update_golden)


def test_values_follow_the_records() -> None:
    text, om = run(sample_records(), ALL_PARTS)
    for samples in (samples_text(text), samples_openmetrics(om)):
        online = by_name(samples, "emqx_client_online")
        assert online[(("clientid", "01"),)] == 1
        assert online[(("clientid", "dev-offline"),)] == 0
        assert online[(("clientid", "server"),)] == 1
        received = by_name(samples, "emqx_client_received_bytes_total")
        assert received[(("clientid", "01"),)] == 49 and received[(("clientid", "server"),)] == 137
        # v5 timestamps carry their offset: 12:34:56.789+08:00 is 04:34:56.789Z
        connected = by_name(samples, "emqx_client_connected_timestamp_seconds")
        assert connected[(("clientid", "01"),)] == pytest.approx(1704083696.789)
        # capacity "infinity" and 0 are omitted, numbers kept
        subs_cap = by_name(samples, "emqx_client_subscriptions_capacity")
        assert subs_cap == {}
        assert by_name(samples, "emqx_client_inflight_capacity_messages")[
            (("clientid", "01"),)] == 32
        disconnected = by_name(samples, "emqx_client_disconnected_timestamp_seconds")
        assert list(disconnected) == [(("clientid", "dev-offline"),)]
        heap = by_name(samples, "emqx_client_process_heap_bytes")
        assert heap[(("clientid", "01"),)] == 610 * 8
        qos = by_name(samples, "emqx_client_received_messages_total")
        assert set(qos) >= {(("clientid", "01"), ("qos", "0")), (("clientid", "01"), ("qos", "2"))}
        reasons = by_name(samples, "emqx_client_sent_messages_dropped_total")
        assert (("clientid", "01"), ("reason", "other")) in reasons
        assert by_name(samples, "emqx_clients_sessions") == {(("node", "emqx@127.0.0.1"),): 3}
        assert by_name(samples, "emqx_clients_online") == {(("node", "emqx@127.0.0.1"),): 2}


AWKWARD_IDS = ['quote"d', "back\\slash", "new\nline", "ünïcødé-客户端", "", "trailing\\",
               'all\\"\n']


def test_awkward_client_ids_round_trip() -> None:
    record = record_type("v5")
    records: list[ClientRecord] = [record(clientid=cid, username=cid, connected=True,
                                          received_bytes=i) for i, cid in enumerate(AWKWARD_IDS)]
    text, om = run(records, info_labels=("username", *contract.DEFAULT_INFO_LABELS))
    for samples in (samples_text(text), samples_openmetrics(om)):
        received = by_name(samples, "emqx_client_received_bytes_total")
        assert received == {(("clientid", cid),): i for i, cid in enumerate(AWKWARD_IDS)}
        info = by_name(samples, "emqx_client_info")
        # An empty username is an absent label (the same series to Prometheus).
        assert {dict(k).get("username", "") for k in info} == set(AWKWARD_IDS)


@pytest.mark.promtool
def test_promtool_accepts_the_exposition(promtool: str) -> None:
    text, _ = run(sample_records(), ALL_PARTS)
    promtool_check(promtool, text)
    record = record_type("v5")
    awkward, _ = run([record(clientid=cid, connected=True) for cid in AWKWARD_IDS])
    promtool_check(promtool, awkward)


def test_const_labels_and_identity_labels() -> None:
    pipeline = Pipeline(PerClientSettings(labels=("node",)), AggregateSettings(),
                        Classifier([]), TimeParser(ZoneInfo("UTC")),
                        const_labels=(("cluster", "prod"),))
    text = compose([one_poll(pipeline, sample_records()).rendered], 0.0).text()
    online = by_name(samples_text(text), "emqx_client_online")
    assert (("clientid", "01"), ("cluster", "prod"), ("node", "emqx@127.0.0.1")) in online
    assert by_name(samples_text(text), "emqx_clients_online") == {
        (("cluster", "prod"), ("node", "emqx@127.0.0.1")): 2}


def test_golden_files_are_committed() -> None:
    assert (GOLDEN / "render-default.prom").exists(), json.dumps(str(Path(GOLDEN)))


def test_info_suffixes_write_each_combination_as_its_columns_would() -> None:
    # One pass over the records and one text per distinct combination must give what a column
    # per label gives, joined: escaping, EMQX's `undefined` username, and a value the version
    # does not report (`zone` None from 5.1 on) left out rather than written empty.
    v5 = record_type("v5")
    records = Columns([
        v5(clientid="a", node="n1", listener='tcp:"odd"', zone=None, username="undefined",
           proto_ver=5, clean_start=True),
        v5(clientid="b", node="n1", listener="tcp:default", zone="z", username="bob",
           proto_ver=4, clean_start=False),
        v5(clientid="c", node="n1", listener='tcp:"odd"', zone=None, username="undefined",
           proto_ver=5, clean_start=True),
    ])
    for names in (["node"], ["zone"], ["listener", "zone", "username", "proto_ver",
                                         "clean_start"]):
        columns = [field_label_column(records, n) for n in names]
        want = ["".join(piece for piece in row if not piece.endswith('=""'))
                for row in zip(*columns, strict=True)]
        assert info_suffixes(records, names) == want, names
    assert info_suffixes(records, ["zone", "username"]) == ["", ',zone="z",username="bob"', ""]
    assert info_suffixes(records, ["listener"])[0] == ',listener="tcp:\\"odd\\""'
