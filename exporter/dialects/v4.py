"""EMQX 4.x: `/api/v4`, `_page`/`_limit`, a `code` envelope with errors inside HTTP 200."""

from __future__ import annotations

from exporter.dialects.legacy import LegacyDialect
from exporter.records import Generation


class V4Dialect(LegacyDialect):
    """EMQX 4.0 to 4.4. Always walks `/nodes/{node}/clients`: 4.0's `/clients` lists one
    node only, and per-node walks avoid cross-node offset drift on 4.1+."""

    name = "v4"
    generation: Generation = "v4"
    listing = ("clients",)
    lookup_path = ("clients",)
    endpoint = "clients"
