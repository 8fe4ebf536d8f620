"""Arrow's columns of a listing page are the typed decoder's records to the value, or nothing.

`exporter.columnar` takes a v5 listing page through pyarrow where Arrow reads it as the typed
decoder (`records.record_type`) does, and leaves every other page to that decoder. These tests
decode the same bodies both ways: simulated pages of several versions, bodies made to hold
each value the typed decoder refuses, and generated rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emqx_simulator import SimSettings
from exporter import columnar
from exporter.api import Request
from exporter.columnar import ArrowDecoder, ArrowRows, field_values, select_rows
from exporter.columns import ArrowColumns, Columns, columns_of
from exporter.dialects import make_dialect
from exporter.dialects.base import ListingKind, Page
from exporter.dialects.paged import Meta, page_decoders, peek_meta
from exporter.records import ALL_FIELDS, NUMBER_MAX, ClientRecord, record_type
from exporter.state import COUNTER_FIELDS
from tests.harness import per_client, rig, sim_api, value

pytestmark = pytest.mark.skipif(not columnar.available, reason="pyarrow (the fast extra)")

RECORD = record_type("v5")


@pytest.fixture(autouse=True)
def arrow_on() -> Iterator[None]:
    yield
    columnar.enable(True)


def typed(body: bytes, record_cls: type[ClientRecord] = RECORD) -> tuple[list[ClientRecord], Meta]:
    page = page_decoders(record_cls).decode(body)
    return page.data, page.meta


def arrow(body: bytes, record_cls: type[ClientRecord] = RECORD) -> tuple[
        list[ClientRecord], Meta] | None:
    found = ArrowDecoder(record_cls).decode(body)
    if found is None:
        return None
    rows, meta = found
    return list(rows), Meta(**meta)


def row(clientid: str | None = "c1", **values: Any) -> dict[str, Any]:
    return {"clientid": clientid, "node": "emqx@n1", "connected": True, "recv_oct": 10,
            "subscriptions_max": "infinity", "awaiting_rel_max": 100, **values}


def body_of(*rows: dict[str, Any], meta: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"data": list(rows), "meta": meta or {"count": len(rows)}},
                      separators=(",", ":")).encode()


async def both_ways(version: str, listing: ListingKind, sim: SimSettings,
                    attrs: frozenset[str] | None) -> list[tuple[Page, Page]]:
    """Every page of a walk, parsed with Arrow and without."""
    pages = []
    async with sim_api(sim) as (_, client):
        dialect = make_dialect("v5", version, listing=listing, page_size=50, attrs=attrs)
        request: Request | None = dialect.list_request(None)
        while request is not None:
            response = await client.send(request)
            columnar.enable(False)
            plain = dialect.parse_list(response, request)
            columnar.enable(True)
            fast = dialect.parse_list(response, request)
            pages.append((fast, plain))
            request = plain.next
    return pages


SOME = frozenset({"clientid", "node", "connected", *COUNTER_FIELDS, "subscriptions_max",
                  "expiry_interval", "mqueue_len", "mqueue_max", "durable", "is_expired"})


@pytest.mark.parametrize(("version", "listing", "extra"), [
    ("5.3.2", "page", {}),
    ("5.8.9", "cursor", {"durable_sessions": 40, "expired_durable_sessions": 7}),
    ("5.0.10", "page", {}),  # session expiry in milliseconds
], ids=["5.3.2-page", "5.8.9-cursor-durable", "5.0.10-expiry-ms"])
@pytest.mark.parametrize("attrs", [None, SOME], ids=["all-fields", "some-fields"])
async def test_simulated_pages_read_the_same_both_ways(
        version: str, listing: ListingKind, extra: dict[str, Any],
        attrs: frozenset[str] | None) -> None:
    sim = SimSettings(version=version, nodes=2, clients=230, class_prefixes=True, **extra)
    pages = await both_ways(version, listing, sim, attrs)
    assert len(pages) > 3
    for fast, plain in pages:
        assert isinstance(fast.records, ArrowRows)  # the fast path was taken ...
        assert list(fast.records) == list(plain.records)  # ... and reads what the other does
        assert (fast.next, fast.total, fast.left_out, fast.notes) == (
            plain.next, plain.total, plain.left_out, plain.notes)
        assert fast.bad_rows == plain.bad_rows == 0
    if "expired_durable_sessions" in extra:  # left out on both paths
        assert not any(r.is_expired for fast, _ in pages for r in fast.records)
        assert any(r.durable and r.mqueue_len is None for fast, _ in pages for r in fast.records)
    if version == "5.0.10":
        assert any(r.expiry_interval for fast, _ in pages for r in fast.records)


@pytest.mark.parametrize("bad", [
    row(recv_oct=-1), row(recv_oct=1.0), row(recv_oct=1.5), row(recv_oct=NUMBER_MAX + 1),
    row(recv_oct="12"), row(recv_oct=True), row(heap_size=NUMBER_MAX // 8 + 1),
    row(subscriptions_max=-1), row(subscriptions_max=-5), row(connected="yes"), row(node=7),
    {"node": "emqx@n1", "recv_oct": 1}, row(clientid=None),
], ids=["negative", "float-int", "float", "past-int64", "number-text", "bool-number",
        "words-past-max", "limit-minus-one", "limit-negative", "bool-text", "text-number",
        "no-clientid", "null-clientid"])
def test_a_value_the_typed_decoder_refuses_leaves_the_page_to_it(bad: dict[str, Any]) -> None:
    body = body_of(row("fine"), bad)
    with pytest.raises(msgspec.ValidationError):
        typed(body)
    assert arrow(body) is None


@pytest.mark.parametrize("body", [
    b'{"data":[{"clientid":"a","recv_oct":1,"recv_oct":2}],"meta":{}}',  # a key twice
    b'{"data":[{"clientid":"a"}],"meta":{}}\n{"data":[],"meta":{}}',  # two documents
    b'[{"clientid":"a"}]', b'{"data":{}}', b'{"data":[1]}', b'{"data":[{"clientid":"\xff"}]}',
    b'\xef\xbb\xbf{"data":[],"meta":{}}', b'{"data":[{"clientid":"a\\ud800"}]}',
    b'{"data":[{"clientid":"a"}],"meta":{"count":"7"}}',
    body_of(row("a", subscriptions_max="unlimited")),  # a limit's text other than "infinity"
    b'{"data":null,"meta":{}}', b'{"meta":{}}', b'{"data":[],"meta":null}', b'{"data":[]}',
], ids=["key-twice", "two-documents", "list", "data-object", "row-number", "bad-utf8", "bom",
        "lone-surrogate", "meta-count-text", "limit-other-text", "data-null", "data-absent",
        "meta-null",
        "meta-absent"])
def test_a_body_arrow_might_read_otherwise_is_left_to_the_typed_decoder(body: bytes) -> None:
    assert arrow(body) is None


def test_limits_mix_numbers_and_infinity_on_one_page() -> None:
    # Zones with and without a subscription limit list both on one page; "infinity" is written
    # with spaces once, as a pretty-printer would: that key is not rewritten, so the page is
    # left to the typed decoder.
    rows = [row("a", subscriptions_max=10), row("b"), row("c", subscriptions_max=0),
            row("d", awaiting_rel_max="infinity")]
    body = body_of(*rows)
    decoded = arrow(body)
    assert decoded is not None and decoded == typed(body)
    records = decoded[0]
    assert [r.subscriptions_max for r in records] == [10, "infinity", 0, "infinity"]
    page = ArrowColumns(ArrowDecoder(RECORD).decode(body)[0])  # type: ignore[index]
    assert page.capacity("subscriptions_max").tolist() == [10, -1, -1, -1]
    assert page.capacity("subscriptions_max").tolist() == Columns(records).capacity(
        "subscriptions_max").tolist()
    spaced = body.replace(b'"subscriptions_max":"infinity"', b'"subscriptions_max": "infinity"', 1)
    assert arrow(spaced) is None


def test_infinity_inside_a_string_is_text() -> None:
    # Text that looks like a limit inside a client id is escaped in JSON and stays as it is.
    odd = 'x","subscriptions_max":"infinity'
    body = body_of(row(odd, subscriptions_max=5))
    decoded = arrow(body)
    assert decoded is not None and decoded == typed(body)
    assert decoded[0][0].clientid == odd and decoded[0][0].subscriptions_max == 5


_VALUES = st.one_of(st.none(), st.integers(-3, 2**64), st.booleans(), st.floats(0, 10),
                    st.sampled_from(["infinity", "7", "", "ü\n\"x"]))
_KEYS = ["clientid", "recv_oct", "send_msg.dropped", "mqueue_len", "subscriptions_max",
         "awaiting_rel_max", "heap_size", "connected", "node", "durable", "is_expired"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"clientid": st.one_of(st.text(max_size=8), st.none())},
    optional=dict.fromkeys(_KEYS[1:], _VALUES)), max_size=6))
def test_generated_rows_read_the_same_or_are_left_alone(rows: list[dict[str, Any]]) -> None:
    body = body_of(*rows)
    try:
        expected: tuple[list[ClientRecord], Meta] | None = typed(body)
    except msgspec.ValidationError:
        expected = None
    decoded = arrow(body)
    if expected is None:
        assert decoded is None
    elif decoded is not None:
        assert decoded == expected


def test_the_meta_read_from_the_end_is_the_page_s_own() -> None:
    meta: dict[str, Any] = {"cursor": "g2wAAAAB", "hasnext": True, "count": 3}
    body = body_of(row("a"), meta=meta)
    assert peek_meta(body) == Meta(**meta) == typed(body)[1]
    # A key named meta nested in the last row (5.7.1+ client attributes are the user's) is
    # not taken for the document's.
    nested = json.dumps({"meta": meta, "data": [row("a", client_attrs={"meta": {"count": 9}})]},
                        separators=(",", ":")).encode()
    assert peek_meta(nested) is None
    # Text like it inside a string is escaped, so not found either.
    quoted = body_of(row('"meta":{"count":9}}'), meta={"count": 1})
    assert peek_meta(quoted) == Meta(count=1)
    assert peek_meta(b'{"data":[],"meta":{"count":"x"}}') is None  # a wrong type: no guess
    assert peek_meta(body_of(row("a")) + b"  \n") == Meta(count=1)


def test_rows_read_as_columns_and_as_records_agree() -> None:
    rows = [row(f"c{i}", recv_oct=i * 10, connected=i % 2 == 0, durable=i == 3,
                mqueue_len=i, mqueue_max=1000) for i in range(6)]
    body = body_of(*rows, row("gone", is_expired=True))
    found = ArrowDecoder(RECORD).decode(body)
    assert found is not None
    fast = found[0].sessions(expiry_in_ms=False)
    plain_records = typed(body)[0][:-1]
    plain_records[3].mqueue_len = plain_records[3].mqueue_max = None  # `durable_queue`
    assert list(fast) == plain_records and len(fast) == 6
    assert fast[-1] == plain_records[-1] and fast[1:3] == plain_records[1:3]
    with pytest.raises(IndexError):
        fast[6]
    fast_columns, plain_columns = columns_of(fast), columns_of(plain_records)
    assert isinstance(fast_columns, ArrowColumns) and type(plain_columns) is Columns
    assert fast_columns.clientids == plain_columns.clientids
    assert np.array_equal(fast_columns.counters(), plain_columns.counters())
    assert np.array_equal(fast_columns.offline(), plain_columns.offline())
    assert np.array_equal(fast_columns.fill("mqueue_len")[0], plain_columns.fill("mqueue_len")[0])
    for field in sorted(ALL_FIELDS):
        assert fast_columns.values(field) == plain_columns.values(field), field
    chosen = np.array([4, 0, 2])
    assert fast_columns.take(chosen) == plain_columns.take(chosen)
    assert fast_columns.subset(chosen).clientids == ["c4", "c0", "c2"]
    assert field_values(fast, "node") == field_values(plain_records, "node")
    kept = select_rows(fast, [True, False] * 3)
    assert isinstance(kept, ArrowRows) and list(kept) == plain_records[::2]


def test_without_pyarrow_every_page_takes_the_typed_decoder() -> None:
    body = body_of(row("a"))
    assert columnar.enable(False) is False
    assert ArrowDecoder(RECORD).decode(body) is None
    assert columnar.enable(True) is True
    assert ArrowDecoder(RECORD).decode(body) is not None


async def test_the_exporter_counts_the_pages_each_decoder_took() -> None:
    # One 5.8.9 page with a wrong-typed value goes to msgspec (which drops that value and
    # counts it); the other pages Arrow decodes; a v4 cluster's pages are msgspec's.
    sim = SimSettings(version="5.8.9", nodes=1, clients=100)
    async with rig(sim, page_size=25) as r:
        target = sorted(r.cluster.rows(r.cluster.node_names[0]), key=str)[0]
        clientid = str(target["clientid"])
        r.cluster.faults.add("bad_field", endpoint="GET /api/v5/clients_v2", clientid=clientid,
                             field="recv_oct", value="12x")
        await r.poll()
        samples = await r.scrape()
    pages = {dict(labels)["decoder"]: v for n, labels, v in samples
             if n == "emqx_client_exporter_listing_pages_total"}
    assert pages == {"arrow": 4.0, "msgspec": 1.0}  # 4 pages of 25, then 5.8.x's empty one
    assert value(samples, "emqx_client_exporter_api_errors_total", reason="bad_value") == 1
    assert clientid not in per_client(samples, "emqx_client_received_bytes_total")
    async with rig(SimSettings(api="v4", nodes=1, clients=60), page_size=25) as r:
        await r.poll()
        samples = await r.scrape()
    assert {dict(labels)["decoder"]: v for n, labels, v in samples
            if n == "emqx_client_exporter_listing_pages_total"} == {"msgspec": 3.0}
