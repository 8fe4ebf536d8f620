"""Snapshots: both exposition formats from one set of rendered samples, gzip built once, and a
body that depends on the samples only (the age comes from `created`, never from serving)."""

from __future__ import annotations

import gzip
import threading

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import contract as c
from exporter.render import Rendered
from exporter.snapshot import FAMILY_ORDER, compose, empty_snapshot, warm

FILL = c.DIST_MQUEUE_FILL
_HIST = (b'emqx_clients_mqueue_fill_ratio_bucket{node="a",le="0.5"} 1\n'
         b'emqx_clients_mqueue_fill_ratio_bucket{node="a",le="+Inf"} 2\n')
_TOTALS = (b'emqx_clients_mqueue_fill_ratio_gcount{node="a"} 2\n'
           b'emqx_clients_mqueue_fill_ratio_gsum{node="a"} 1.2\n')

#: What two clusters' polls rendered (lines as the renderers write them).
PROD: Rendered = {
    c.CLIENTS_ONLINE: [b'emqx_clients_online{cluster="prod",node="a"} 3\n'],
    c.CLIENT_RECEIVED_BYTES: [b'emqx_client_received_bytes_total{cluster="prod",clientid="x"} 5\n'
                              b'emqx_client_received_bytes_total{cluster="prod",clientid="y"} 0\n'],
    # A distribution: one gaugehistogram in OpenMetrics, a histogram and two gauges in text.
    FILL.family: [_HIST + _TOTALS],
    FILL.text_families[0]: [_HIST],
    FILL.text_families[1]: [_TOTALS.split(b"\n")[0] + b"\n"],
    FILL.text_families[2]: [_TOTALS.split(b"\n")[1] + b"\n"],
}
TEST: Rendered = {
    c.CLIENT_RECEIVED_BYTES: [b'emqx_client_received_bytes_total{cluster="test",clientid="x"} 7\n'],
    c.CLIENTS_ONLINE: [b'emqx_clients_online{cluster="test",node="b"} 1\n'],
}


def test_families_follow_the_contract_order_and_each_appears_once() -> None:
    snapshot = compose([TEST, PROD], created=100.0)
    families = [family for family, _ in snapshot.chunks]
    assert families == sorted(families, key=FAMILY_ORDER.index)
    assert len(families) == len(set(families))
    text = snapshot.text("text")
    assert text.count("# TYPE emqx_client_received_bytes_total counter") == 1
    # the clusters' samples of one family sit together under its one header, in cluster order
    body = text.split("# TYPE emqx_client_received_bytes_total counter\n")[1]
    assert body.startswith('emqx_client_received_bytes_total{cluster="test",clientid="x"} 7\n'
                           'emqx_client_received_bytes_total{cluster="prod",clientid="x"} 5\n')


def test_the_text_body_parses_and_has_no_openmetrics_only_family() -> None:
    text = compose([PROD, TEST], 0.0).text("text")
    families = {f.name: f for f in parse_text(text)}
    assert families["emqx_clients_mqueue_fill_ratio"].type == "histogram"
    assert families["emqx_clients_mqueue_fill_ratio_gcount"].type == "gauge"
    assert families["emqx_client_received_bytes"].type == "counter"
    assert "gaugehistogram" not in text and "# EOF" not in text


def test_the_openmetrics_body_parses_and_has_no_text_only_family() -> None:
    body = compose([PROD, TEST], 0.0).text("openmetrics")
    families = {f.name: f for f in parse_om(body + "# EOF\n")}  # type: ignore[no-untyped-call]
    assert families["emqx_clients_mqueue_fill_ratio"].type == "gaugehistogram"
    assert "emqx_clients_mqueue_fill_ratio_gcount" not in families  # a sample, not a family
    assert families["emqx_client_received_bytes"].type == "counter"
    assert "# TYPE emqx_client_received_bytes counter" in body
    assert body.count("# TYPE emqx_clients_mqueue_fill_ratio ") == 1


def test_series_count_each_sample_once_whatever_the_formats() -> None:
    # 2 + 1 client lines, 2 online lines, 2 buckets and 2 totals of the distribution
    assert compose([PROD, TEST], 0.0).series == 9
    assert compose([], 0.0).series == 0


def test_gzip_serves_the_same_bytes_is_built_once_and_is_cached() -> None:
    snapshot = compose([PROD, TEST], 0.0)
    for fmt in ("text", "openmetrics"):
        assert not snapshot.has_gzipped(fmt)
        packed = snapshot.gzipped(fmt)
        assert snapshot.has_gzipped(fmt)
        assert gzip.decompress(packed) == b"".join(snapshot.pieces(fmt))
        assert snapshot.gzipped(fmt) is packed


def test_concurrent_first_gzip_requests_share_one_compression() -> None:
    snapshot = compose([PROD, TEST] * 200, 0.0)
    start = threading.Barrier(8)
    results: list[bytes] = []

    def scrape() -> None:
        start.wait()
        results.append(snapshot.gzipped("openmetrics"))

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_warm_compresses_the_asked_formats_only() -> None:
    snapshot = compose([PROD], 0.0)
    warm(snapshot, ["openmetrics"])
    assert snapshot.has_gzipped("openmetrics") and not snapshot.has_gzipped("text")


def test_the_body_depends_on_the_samples_not_on_time_or_serving() -> None:
    early, late = compose([PROD, TEST], 100.0), compose([PROD, TEST], 5000.0)
    assert (early.created, late.created) == (100.0, 5000.0)
    for fmt in ("text", "openmetrics"):
        assert early.pieces(fmt) == late.pieces(fmt)
        assert early.gzipped(fmt) == late.gzipped(fmt)  # no time in the gzip header either
        early.text(fmt)
    assert early.created == 100.0  # serving does not make a snapshot younger


def test_the_empty_snapshot_has_no_body() -> None:
    snapshot = empty_snapshot()
    assert (snapshot.series, snapshot.created) == (0, 0.0)
    assert snapshot.pieces("text") == () and snapshot.text("openmetrics") == ""
    assert gzip.decompress(snapshot.gzipped("text")) == b""
    assert empty_snapshot(42.0).created == 42.0


def test_a_family_nobody_rendered_is_left_out_not_written_empty() -> None:
    text = compose([{c.CLIENTS_ONLINE: []}, TEST], 0.0).text("text")
    assert "emqx_clients_sessions" not in text
    assert text.count("# HELP") == 2  # online and received bytes
