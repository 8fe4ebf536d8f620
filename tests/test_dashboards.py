"""The shipped dashboards: a panel that shows an opt-in per-client part names the
`per_client.parts` key and the part to turn on (issue 18, first contact)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.contract import CLIENT_COLUMNS, PARTS_BY_NAME

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
#: Family name → the opt-in part that exports it (or splits it by a label).
OPT_IN = {col.family.name: col.part for col in CLIENT_COLUMNS
          if not PARTS_BY_NAME[col.part].default}
SPLITS = {col.family.name: (col.split.switch, col.split.label) for col in CLIENT_COLUMNS
          if col.split is not None}


def panels(items: list[Any]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def needed_parts(expr: str) -> set[str]:
    parts = {part for family, part in OPT_IN.items() if re.search(rf"\b{family}\b", expr)}
    for family, (switch, label) in SPLITS.items():
        if re.search(rf"by \([^)]*\b{label}\b[^)]*\) \(rate\({family}\b", expr):
            parts.add(switch)
    return parts


@pytest.mark.parametrize("path", sorted(GRAFANA.glob("*.json")), ids=lambda p: p.name)
def test_opt_in_panels_name_the_part_to_turn_on(path: Path) -> None:
    checked = 0
    for panel in panels(json.loads(path.read_text())["panels"]):
        needed = set().union(*(needed_parts(t.get("expr", ""))
                               for t in panel.get("targets", [])))
        for part in needed:
            checked += 1
            description = panel.get("description", "")
            assert "per_client.parts" in description and f"`{part}`" in description, (
                panel["title"], part, description)
    if path.name == "emqx-clients-drilldown.json":
        assert checked >= 8  # session x2, packets, awaiting_rel, process x2, qos, reasons
