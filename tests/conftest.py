"""Shared fixtures: sample responses per EMQX version, promtool, and golden-file updating."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.realbroker import broker_pool, generate_tests, real_cluster, real_emqx

__all__ = ["broker_pool", "real_cluster", "real_emqx"]  # fixtures of the real-broker tests

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/* from the current output instead of comparing")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def compare_golden(name: str, body: str, update: bool) -> None:
    """`body` equals tests/golden/<name> byte for byte; `--update-golden` rewrites the file."""
    path = GOLDEN / name
    if update:
        path.parent.mkdir(exist_ok=True)
        path.write_text(body)
    assert body == path.read_text(), f"{path} differs; rerun with --update-golden to accept"


def fixture_bytes(version: str, name: str) -> bytes:
    return (FIXTURES / version / name).read_bytes()


def require_tool(name: str) -> str:
    """Path of a Prometheus tool; skip locally when absent, fail in CI where it must exist."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (apt-get install prometheus)")
        pytest.skip(f"{name} not installed (Debian package prometheus)")
    return path


@pytest.fixture
def promtool() -> str:
    return require_tool("promtool")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    generate_tests(metafunc)
