"""Credentials against real EMQX: API key (v5) / application (v4), the v5 dashboard login, and
wrong credentials (401: up 0, reason unauthorized, and the secret in no log line)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tests.harness import per_client, value
from tests.mqtt import devices
from tests.real_exporter import exporting
from tests.realbroker import Broker

pytestmark = pytest.mark.real_emqx

WRONG_SECRET = "not-the-secret-3f9a"
CLIENT = "i17-auth-probe"


async def test_api_key_or_application_reads_the_clients(real_emqx: Broker) -> None:
    with devices(real_emqx, [CLIENT], keepalive_s=600):
        async with exporting(real_emqx) as rig:
            samples = await rig.poll()
    assert value(samples, "emqx_client_exporter_up") == 1
    assert per_client(samples, "emqx_client_online")[CLIENT] == 1


@pytest.mark.real_emqx("5.3.2", "5.8.9")  # v4's dashboard user is on another listener
async def test_dashboard_login(real_emqx: Broker) -> None:
    if real_emqx.api != "v5":  # a user's own EMQX (EMQX_URL) of another generation
        pytest.skip("POST /api/v5/login is v5; v4's dashboard user is on another listener")
    with devices(real_emqx, [CLIENT], keepalive_s=600):
        async with exporting(real_emqx, api_key=None, api_secret=None, username="admin",
                             password="public") as rig:
            samples = await rig.poll()
    assert value(samples, "emqx_client_exporter_up") == 1
    assert per_client(samples, "emqx_client_online")[CLIENT] == 1
    requests = {dict(labels).get("endpoint") for n, labels, _ in samples
                if n == "emqx_client_exporter_api_requests_total"}
    assert "login" in requests


async def test_a_wrong_secret_is_unauthorized_and_never_logged(real_emqx: Broker) -> None:
    await _rejected(real_emqx, "key")


@pytest.mark.real_emqx("5.3.2", "5.8.9")
async def test_a_wrong_dashboard_password_is_unauthorized_and_never_logged(
        real_emqx: Broker) -> None:
    if real_emqx.api != "v5":  # a user's own EMQX (EMQX_URL) of another generation
        pytest.skip("dashboard login is v5")
    await _rejected(real_emqx, "login")


async def _rejected(real_emqx: Broker, kind: str) -> None:
    config = ({"api_secret": WRONG_SECRET} if kind == "key" else
              {"api_key": None, "api_secret": None, "username": "admin",
               "password": WRONG_SECRET})
    with capture_logs() as logs:
        async with exporting(real_emqx, **config) as rig:
            samples = await rig.poll()
    assert value(samples, "emqx_client_exporter_up") == 0
    assert value(samples, "emqx_client_exporter_api_errors_total", reason="unauthorized") == 1
    assert not per_client(samples, "emqx_client_online")
    assert logs, "the failure is logged"
    assert WRONG_SECRET not in repr(logs)
    assert all(WRONG_SECRET not in f"{n}{labels}" for n, labels, _ in samples)
