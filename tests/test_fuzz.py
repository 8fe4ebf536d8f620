"""Property-based fuzzing: adversarial client rows through every dialect's decoding, the whole
pipeline and both exposition formats.

For any rows (any unicode and control characters in ids, numbers out of range, nulls, nested
junk, missing keys): decoding never raises, both bodies parse with prometheus_client, every
decoded client's id round-trips exactly as a label value, and no exported per-client or
aggregate counter is negative or beyond 2^63.
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import contract
from exporter.aggregate import AggregateSettings, Classifier
from exporter.config import PerClientSettings
from exporter.dialects import Dialect, make_dialect
from exporter.pipeline import Pipeline
from exporter.records import NUMBER_MAX
from exporter.render import as_label
from exporter.snapshot import compose
from exporter.timeparse import TimeParser
from tests.conftest import fixture_bytes
from tests.exposition import samples_openmetrics, samples_text
from tests.test_dialects import answer

ALL_PARTS = frozenset(p.name for p in contract.PARTS)
NODE = "emqx@127.0.0.1"

#: (dialect, fixture whose envelope and first row are the template, client-id key)
DIALECTS: dict[str, tuple[Dialect, str, str, str]] = {
    "v3": (make_dialect("v3", "3.2.8"), "v3", "v3-connections.json", "client_id"),
    "v4": (make_dialect("v4", "4.4.19"), "v4", "v4.4-clients.json", "clientid"),
    "v5-page": (make_dialect("v5", "5.6.2", listing="page"), "v5", "v5-clients.json",
                "clientid"),
    "v5-cursor": (make_dialect("v5", "5.8.9", listing="cursor"), "v5",
                  "v5-clients-v2-page.json", "clientid"),
}

# Any text JSON can carry (lone surrogates cannot be encoded at all).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
)
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=6)
DELETE = object()


def rows_strategy(template: dict[str, Any], id_key: str) -> st.SearchStrategy[list[Any]]:
    keys = sorted(template)
    edits = st.dictionaries(st.sampled_from(keys), st.one_of(junk, st.just(DELETE)),
                            max_size=len(keys))

    def row(clientid: Any, changes: dict[str, Any]) -> Any:
        built = {**template, id_key: clientid}
        for key, new in changes.items():
            if new is DELETE:
                built.pop(key, None)
            else:
                built[key] = new
        return built

    ids = st.one_of(text, text, junk)
    one = st.one_of(st.builds(row, ids, edits), junk)  # now and then not even a mapping
    return st.lists(one, min_size=1, max_size=6)


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_any_rows_decode_render_and_parse(name: str) -> None:
    dialect, version, fixture, id_key = DIALECTS[name]
    envelope = json.loads(fixture_bytes(version, fixture))
    template = envelope["data"][0]
    if name == "v5-cursor":
        envelope["meta"].pop("cursor", None)

    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(rows_strategy(template, id_key))
    def check(rows: list[Any]) -> None:
        body = json.dumps({**envelope, "data": rows}).encode()
        page = dialect.parse_list(answer(body), dialect.list_request(NODE))  # never raises
        assert len(page.records) + page.bad_rows == len(rows)
        pipeline = Pipeline(PerClientSettings(parts=ALL_PARTS, labels=("node", "username")),
                            AggregateSettings(), Classifier([]), TimeParser(ZoneInfo("UTC")))
        run = pipeline.start_walk(0.0)
        run.add_page(NODE, page.records)
        snapshot = compose([run.finish([NODE]).rendered], 0.0)
        expected: dict[str, tuple[str, str]] = {}
        for r in page.records:  # a client listed twice in a poll counts once: the first
            expected.setdefault(r.clientid, (as_label("node", r.node),
                                             as_label("username", r.username)))
        for samples in (samples_text(snapshot.text("text")),
                        samples_openmetrics(snapshot.text("openmetrics") + "# EOF\n")):
            online = {(labels := dict(pairs))["clientid"]: (labels.get("node", ""),
                                                          labels.get("username", ""))
                      for n, pairs, _ in samples if n == "emqx_client_online"}
            assert online == expected  # label values round-trip exactly
            for n, _, value in samples:
                if n.endswith(("_total", "_bytes", "_messages")) and n.startswith("emqx_"):
                    assert 0 <= value <= NUMBER_MAX, n

    check()
