"""A whole `/metrics` body, byte for byte: a deterministic simulator (fixed population, manual
clock) and the exporter polling it twice, 30 s apart, both exposition formats.

Only what a run cannot make deterministic is masked, because it is measured on the wall clock:
`poll_duration_seconds` and the request latency histogram's `_sum` and finite buckets (a slow
machine moves a request to a later bucket). The histogram's `+Inf` bucket and `_count` are
request counts and stay. `pytest --update-golden` rewrites the files after an intended change.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from emqx_simulator import SimSettings
from exporter import columnar
from exporter.columnar import ArrowDecoder
from tests.conftest import compare_golden
from tests.exposition import samples_openmetrics, samples_text
from tests.harness import rig

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}
MASK = "MASKED"
#: Lines whose value is a wall-clock measurement (label sets kept, so they are still checked).
WALL_CLOCK = re.compile(
    r"^(emqx_client_exporter_poll_duration_seconds(?:\{[^}]*\})?"
    r"|emqx_client_exporter_api_request_duration_seconds_sum\{[^}]*\}"
    r"|emqx_client_exporter_api_request_duration_seconds_bucket\{[^}]*le=\"(?!\+Inf)[^\"]*\"\})"
    r" \S+$", re.MULTILINE)


#: The decoder the exporter names for each path (`exporter_listing_pages_total`).
DECODER = {True: "arrow", False: "msgspec"}


def masked(body: str) -> str:
    return WALL_CLOCK.sub(rf"\1 {MASK}", body)


@pytest.mark.parametrize("arrow", [
    pytest.param(True, marks=pytest.mark.skipif(not columnar.available, reason="pyarrow")),
    False], ids=["arrow", "typed"])
@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
async def test_golden_metrics_body(openmetrics: bool, arrow: bool, update_golden: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Pages decoded into columns by Arrow (`exporter.columnar`) and into records by msgspec
    # give the same body, byte for byte.
    decoded: list[bool] = []
    decode = ArrowDecoder.decode

    def counted(self: ArrowDecoder, body: bytes) -> Any:
        found = decode(self, body)
        decoded.append(found is not None)
        return found

    monkeypatch.setattr(ArrowDecoder, "decode", counted)
    monkeypatch.setattr(columnar, "available", arrow)
    sim = SimSettings(nodes=2, clients=12, class_prefixes=True)
    config = {"classes": [{"name": "sensors", "clientid": "sensor-.*"}],
              "aggregate": {"labels": ["node", "class"]},
              "per_client": {"allow": ["sensor-.*"], "watch": ["app-0000006", "ghost"],
                             "max_series": 10_000}}
    async with rig(sim, **config) as r:
        await r.poll()
        r.clock.advance(30)
        await r.poll()
        _, raw = await r.raw(OPENMETRICS if openmetrics else {})
    body = raw.decode()
    assert decoded and all(decoded) == arrow  # every listing page, on the path asked for
    # ... as the exporter says too; the decoder is the one line that may differ.
    pages = f'emqx_client_exporter_listing_pages_total{{decoder="{DECODER[arrow]}"}} 2'
    assert pages in body
    body = body.replace(pages, pages.replace(DECODER[arrow], "arrow|msgspec"))
    # The body parses as what it claims to be (raises if not), before masking.
    (samples_openmetrics if openmetrics else samples_text)(body)
    masked_body = masked(body)
    # One poll duration; two endpoints (nodes, clients_v2) of 11 finite buckets and a sum.
    assert masked_body.count(MASK) == 1 + 2 * 12, "the masked lines changed; review the mask"
    compare_golden(f"metrics-{'openmetrics.om.txt' if openmetrics else 'text.prom'}",
                   masked_body, update_golden)
