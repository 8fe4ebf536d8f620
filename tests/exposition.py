"""Helpers to parse and check exposition text in tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def samples_text(text: str) -> list[Sample]:
    """Every sample of a text-format body, parsed by prometheus_client."""
    return [(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in parse_text(text) for s in family.samples]


def samples_openmetrics(text: str) -> list[Sample]:
    return [(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in parse_om(text)  # type: ignore[no-untyped-call]
            for s in family.samples]


def by_name(samples: Iterable[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for n, labels, value in samples if n == name}


def promtool_check(promtool: str, text: str) -> str:
    """Run `promtool check metrics`; returns its output, asserts it found no problem."""
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                            capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    return output
