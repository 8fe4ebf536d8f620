"""The metric contract as rules: unique names, Prometheus naming, HELP everywhere, EMQX's own
names left alone, and a table of per-client parts that reads only real record fields."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from exporter import contract as c
from exporter.contract import Family
from exporter.records import FIELDS

ALL: tuple[Family, ...] = c.CLIENT_FAMILIES + c.AGGREGATE_FAMILIES + c.DISTRIBUTION_FAMILIES
RECORD_FIELDS = {f.attr for f in FIELDS}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

#: Family names of EMQX's built-in Prometheus endpoints (REFERENCE.md §8.2: v4
#: `emqx_prometheus.erl`@v4.4.19 L126-135, v5 `emqx_prometheus.erl`@v5.8.9 L215-245, L574-900),
#: as far as they share our prefixes or could be mistaken for ours.
EMQX_BUILT_IN = frozenset({
    *(f"emqx_client_{event}" for event in (
        "connect", "connack", "connected", "authenticate", "auth_anonymous", "authorize",
        "subscribe", "unsubscribe", "disconnected", "check_authn_complete",
        "check_authz_complete")),
    *(f"emqx_session_{event}" for event in (
        "created", "resumed", "takenover", "discarded", "terminated")),
    *(f"emqx_{stat}_{end}" for stat in (
        "connections", "live_connections", "cluster_sessions", "sessions", "channels", "topics",
        "suboptions", "subscribers", "subscriptions", "subscriptions_shared", "retained",
        "delayed") for end in ("count", "max")),
    "emqx_bytes_received", "emqx_bytes_sent", "emqx_packets_received", "emqx_packets_sent",
    "emqx_messages_received", "emqx_messages_sent", "emqx_messages_dropped",
    "emqx_messages_dropped_expired", "emqx_messages_dropped_no_subscribers",
    "emqx_messages_forward", "emqx_messages_retained", "emqx_messages_delayed",
    "emqx_messages_delivered", "emqx_messages_acked", "emqx_delivery_dropped",
    "emqx_delivery_dropped_queue_full", "emqx_delivery_dropped_expired",
    "emqx_delivery_dropped_too_large", "emqx_delivery_dropped_no_local",
    "emqx_delivery_dropped_qos0_msg",
})


def written_names(fmt: c.FormatName) -> list[str]:
    """The family names as they appear in `# TYPE` lines of one format."""
    return [f.om_name if fmt == "openmetrics" else f.name for f in ALL if f.only in (None, fmt)]


@pytest.mark.parametrize("fmt", ["text", "openmetrics"])
def test_every_family_name_is_written_once_per_format(fmt: c.FormatName) -> None:
    names = written_names(fmt)
    assert [n for n, k in Counter(names).items() if k > 1] == []
    # A distribution's `_gcount`/`_gsum` gauges and a histogram's own samples never collide.
    samples = {n + suffix for n in names for suffix in ("", "_bucket", "_count", "_sum")}
    assert len(samples) == 4 * len(names)


def test_counters_end_in_total_and_nothing_else_does() -> None:
    for family in ALL:
        assert METRIC_NAME.fullmatch(family.name), family.name
        assert family.name.endswith("_total") == (family.type == "counter"), family.name
        assert family.name.endswith("_info") == (family.type == "info"), family.name


def test_openmetrics_names_drop_only_the_sample_suffix() -> None:
    assert c.CLIENT_RECEIVED_BYTES.om_name == "emqx_client_received_bytes"
    assert c.CLIENT_INFO.om_name == "emqx_client"
    assert c.CLIENT_MQUEUE.om_name == c.CLIENT_MQUEUE.name
    assert c.DIST_MQUEUE_FILL.family.om_name == "emqx_clients_mqueue_fill_ratio"


def test_names_carry_base_units_and_points_in_time_say_so() -> None:
    for family in ALL:
        assert not re.search(r"_(milliseconds|ms|kilobytes|kb|percent)(_|$)", family.name), (
            family.name)
        if "Unix time" in family.help:
            assert family.name.endswith("_timestamp_seconds"), family.name
        if family.name.endswith("_timestamp_seconds"):
            assert family.type == "gauge" and "Unix time" in family.help, family.name


def test_every_family_has_a_one_line_help_that_says_it_is_polled() -> None:
    for family in ALL:
        assert family.help and "\n" not in family.help, family.name
        assert family.help.endswith("a scrape never triggers a poll."), family.name


def test_no_family_reuses_a_name_of_emqx_built_in_endpoints() -> None:
    ours = {name for f in ALL for name in (f.name, f.om_name)}
    theirs = EMQX_BUILT_IN | {n + "_total" for n in EMQX_BUILT_IN}
    assert ours & theirs == set()


def test_data_families_have_their_own_prefix_apart_from_the_self_metrics() -> None:
    for family in ALL:
        assert family.name.startswith(("emqx_client_", "emqx_clients_")), family.name
        assert not family.name.startswith(c.SELF_PREFIX), family.name


def test_per_client_columns_read_real_record_fields_and_name_real_parts() -> None:
    part_names = {part.name for part in c.PARTS}
    assert len(part_names) == len(c.PARTS)
    for column in c.CLIENT_COLUMNS:
        assert column.part in part_names, column.family.name
        assert column.field is None or column.field in RECORD_FIELDS, column.field
        assert column.family.only is None
        if column.convert == "capacity":
            assert column.field is not None and column.field.endswith("_max")
            assert column.family.type == "gauge"
        if column.split is not None:
            assert column.split.switch in part_names
            assert {field for _, field in column.split.pieces} <= RECORD_FIELDS
            assert column.family.type == "counter"
    assert [col.field for col in c.CLIENT_COLUMNS if col.field is None] == [None]  # only info


def test_every_part_has_families_and_the_defaults_are_the_parts_marked_so() -> None:
    for part in c.PARTS:
        switch_only = any(col.split and col.split.switch == part.name
                          for col in c.CLIENT_COLUMNS)
        assert part.families or switch_only, part.name
        assert part.help, part.name
    assert c.PARTS_BY_NAME["bytes"].families == (c.CLIENT_RECEIVED_BYTES, c.CLIENT_SENT_BYTES)
    assert {"packets", "process", "messages_qos"}.isdisjoint(c.DEFAULT_PARTS)  # opt-in


def test_a_split_adds_one_line_per_piece_and_remainder_less_the_unsplit_line() -> None:
    by_family = {col.family: col.split for col in c.CLIENT_COLUMNS if col.split}
    assert by_family[c.CLIENT_RECEIVED_MESSAGES] is not None
    assert by_family[c.CLIENT_RECEIVED_MESSAGES].extra_series == 2      # qos 0, 1, 2
    assert by_family[c.CLIENT_SENT_DROPPED].extra_series == 3           # 3 reasons + other - 1
    assert by_family[c.CLIENT_RECEIVED_DROPPED].extra_series == 1       # 1 reason + other - 1


def test_label_choices_are_record_fields_and_private_ones_are_opt_in() -> None:
    assert set(c.IDENTITY_LABEL_CHOICES) <= RECORD_FIELDS
    assert set(c.INFO_LABEL_CHOICES) <= RECORD_FIELDS
    assert set(c.AGGREGATE_LABEL_CHOICES) - {"class"} <= RECORD_FIELDS
    assert set(c.DEFAULT_INFO_LABELS) <= set(c.INFO_LABEL_CHOICES)
    # A username or an IP address becomes a label only where the user asks for it.
    assert {"username", "ip_address"}.isdisjoint(c.DEFAULT_INFO_LABELS)


def test_distributions_have_ascending_bounds_and_both_format_shapes() -> None:
    assert len({d.name for d in c.DISTRIBUTIONS}) == len(c.DISTRIBUTIONS)
    for d in c.DISTRIBUTIONS:
        assert list(d.bounds) == sorted(set(d.bounds)) and d.bounds, d.name
        assert d.layout
        assert (d.family.name, d.family.type, d.family.only) == (
            d.name, "gaugehistogram", "openmetrics")
        bucket, count, total = d.text_families
        assert (bucket.name, bucket.type, bucket.only) == (d.name, "histogram", "text")
        assert (count.name, count.type, total.name, total.type) == (
            f"{d.name}_gcount", "gauge", f"{d.name}_gsum", "gauge")
        assert count.only == total.only == "text"
