"""A real Prometheus scrapes the exporter over mutual TLS with basic auth.

The exporter daemon runs with a web config (its certificate, the client CA with
RequireAndVerifyClientCert, one bcrypt user); Prometheus (Debian package) scrapes it with its own
`tls_config` and `basic_auth` settings in two jobs: one with the right password, whose target is
up with the exporter's series, and one with a wrong password, whose target is down with 401.
Then the server certificate is rotated on disk, and the scrapes go on without a restart.
Marked ``prometheus``: skipped locally without the binary, required in CI.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import ssl
import sys
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml

from emqx_simulator import SimCluster, SimSettings
from tests.certs import Certs, issue, make_ca, require_openssl
from tests.conftest import require_tool
from tests.ports import free_port
from tests.prometheus_server import (
    Prometheus,
    prometheus_server,
    running,
    tail,
    wait_http_ok,
)
from tests.test_prometheus_e2e import serve_simulator
from tests.test_rules import ROOT
from tests.test_webgate import subject, tls_connection

PASSWORD = "correct horse battery staple"
BUDGET_SECONDS = 40.0


@pytest.fixture(scope="module")
def scrape_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    require_openssl()
    d = tmp_path_factory.mktemp("scrape-tls")
    make_ca(d)
    for name in ("server", "rotated"):
        issue(d, name, f"/CN={name}.test",
              "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    issue(d, "prometheus", "/CN=prometheus", "extendedKeyUsage=clientAuth\n")
    return Certs(d)


def scrape_job(name: str, target: str, certs: Certs, password: str) -> dict[str, Any]:
    return {
        "job_name": name,
        "scheme": "https",
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "tls_config": {"ca_file": certs.pem("ca"), "cert_file": certs.pem("prometheus"),
                       "key_file": certs.key("prometheus")},
        "basic_auth": {"username": "prometheus", "password": password},
        "static_configs": [{"targets": [target]}],
    }


def _seconds(stamp: str) -> float:
    """Prometheus' RFC 3339 time with nanoseconds as epoch seconds."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def target_state(prom: Prometheus, job: str) -> dict[str, Any] | None:
    """The job's one active target; None until Prometheus has discovered it."""
    targets = (await prom.api("targets", {"state": "active"}))["activeTargets"]
    found: list[dict[str, Any]] = [t for t in targets if t["labels"]["job"] == job]
    assert len(found) <= 1, found
    return found[0] if found else None


async def wait_until(prom: Prometheus, job: str, health: str, deadline: float) -> dict[str, Any]:
    """The target once it has `health` (and, when up, the exporter's series are stored)."""
    while True:
        target = await target_state(prom, job)
        if target is not None and target["health"] == health and (
                health != "up" or await prom.query(f'emqx_clients_online{{job="{job}"}}')):
            return target
        if time.monotonic() > deadline:
            raise AssertionError(f"{job}: {target}\n{tail(prom.log)}")
        await asyncio.sleep(0.3)


@pytest.mark.prometheus
async def test_prometheus_scrapes_over_mutual_tls_with_basic_auth(
        tmp_path: Path, scrape_certs: Certs) -> None:
    binary = require_tool("prometheus")
    deadline = time.monotonic() + BUDGET_SECONDS
    sim = SimSettings(clients=200)
    cluster = SimCluster(sim)
    live = tmp_path / "live"  # what cert-manager would rotate
    live.mkdir()
    shutil.copy(scrape_certs.pem("server"), live / "tls.crt")
    shutil.copy(scrape_certs.key("server"), live / "tls.key")
    web_config = tmp_path / "web-config.yml"
    web_config.write_text(yaml.safe_dump({
        "tls_server_config": {
            "cert_file": str(live / "tls.crt"), "key_file": str(live / "tls.key"),
            "client_ca_file": scrape_certs.pem("ca"),
            "client_auth_type": "RequireAndVerifyClientCert"},
        "basic_auth_users": {
            "prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(6)).decode()},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMQX_")}
    client_tls = ssl.create_default_context(cafile=scrape_certs.pem("ca"))
    client_tls.load_cert_chain(scrape_certs.pem("prometheus"), scrape_certs.key("prometheus"))

    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_simulator(cluster))
        port = free_port()
        config = tmp_path / "exporter.yml"
        config.write_text(yaml.safe_dump({
            "emqx_url": sim_url, "api_key": sim.api_key, "api_secret": sim.api_secret,
            "listen": f"127.0.0.1:{port}", "interval": 1, "web_config": str(web_config)}))
        log = tmp_path / "exporter.log"
        exporter = await stack.enter_async_context(running(
            [sys.executable, "-m", "exporter", "run", "--config", str(config)], log, cwd=ROOT,
            env=env))
        session = await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_tls),
            headers={"Authorization": "Basic " + base64.b64encode(
                f"prometheus:{PASSWORD}".encode()).decode()}))
        await wait_http_ok(session, f"https://127.0.0.1:{port}/-/ready", deadline, exporter, log)

        target = f"127.0.0.1:{port}"
        prom = await stack.enter_async_context(prometheus_server(
            binary, tmp_path / "prometheus",
            {"global": {"scrape_interval": "1s"},
             "scrape_configs": [scrape_job("secure", target, scrape_certs, PASSWORD),
                                scrape_job("wrong-password", target, scrape_certs, "guess")]},
            deadline))

        good = await wait_until(prom, "secure", "up", deadline)
        assert good["lastError"] == "" and good["scrapeUrl"].startswith("https://")
        for expr in ('emqx_client_exporter_up{job="secure"}',
                     'emqx_client_exporter_web_config_last_reload_successful{job="secure"}',
                     'up{job="secure"}'):
            (sample,) = await prom.query(expr)
            assert float(sample["value"][1]) == 1.0, expr
        nodes = {s["metric"]["node"] for s in await prom.query(
            'emqx_clients_online{job="secure"}')}
        assert nodes == set(cluster.node_names)

        bad = await wait_until(prom, "wrong-password", "down", deadline)
        assert "401" in bad["lastError"], bad["lastError"]  # "server returned HTTP status 401 ..."
        assert not await prom.query('emqx_clients_online{job="wrong-password"}')
        (down,) = await prom.query('up{job="wrong-password"}')
        assert float(down["value"][1]) == 0.0

        # The certificate is rotated on disk: Prometheus goes on scraping, now of the new one.
        for suffix, source in (("crt", scrape_certs.pem("rotated")),
                               ("key", scrape_certs.key("rotated"))):
            shutil.copy(source, live / f"tls.{suffix}.new")
            os.replace(live / f"tls.{suffix}.new", live / f"tls.{suffix}")
        async with tls_connection(f"https://127.0.0.1:{port}", client_tls) as (_, fresh):
            assert subject(fresh) == "rotated.test"
        rotated_at = time.time()
        while True:
            state = await target_state(prom, "secure")
            assert state is not None
            if _seconds(state["lastScrape"]) > rotated_at + 1:
                break
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.3)
        assert state["health"] == "up" and state["lastError"] == "", state

    assert exporter.returncode == 0, tail(log)
