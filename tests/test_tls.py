"""TLS to EMQX: a private CA, server name checks, client certificates and the insecure mode.

The simulator is served over HTTPS with certificates made by the `openssl` CLI for this run.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from exporter.config import load_settings
from exporter.errors import ConfigError
from exporter.poller import PollReport
from exporter.service import Exporter
from tests.certs import Certs, issue, make_ca, require_openssl
from tests.exposition import samples_text
from tests.harness import per_client


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA; `server` (emqx.test and 127.0.0.1), `named` (emqx.test only), `client`."""
    require_openssl()
    d = tmp_path_factory.mktemp("tls")
    make_ca(d)
    issue(d, "server", "/CN=emqx.test",
           "subjectAltName=DNS:emqx.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    issue(d, "named", "/CN=emqx.test",
           "subjectAltName=DNS:emqx.test\nextendedKeyUsage=serverAuth\n")
    issue(d, "client", "/CN=exporter", "extendedKeyUsage=clientAuth\n")
    return Certs(d)


def server_context(certs: Certs, cert: str = "server", *,
                   require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.pem(cert), certs.key(cert))
    if require_client_cert:  # EMQX's `verify = verify_peer` with `fail_if_no_peer_cert`
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs.pem("ca"))
    return context


@dataclass
class HttpsRig:
    cluster: SimCluster
    exporter: Exporter
    url: str

    async def poll(self) -> PollReport:
        (report,) = await self.exporter.poll_all_once()
        return report

    def exported_clients(self) -> set[str]:
        return set(per_client(samples_text(self.exporter.snapshot.text()), "emqx_client_online"))

    def truth(self) -> set[str]:
        return {row["clientid"] for row in self.cluster.rows()}


@asynccontextmanager
async def https_rig(context: ssl.SSLContext, tls: dict[str, Any]) -> AsyncIterator[HttpsRig]:
    """The simulator behind HTTPS on a free loopback port; the exporter with `tls` settings."""
    clock = ManualClock()
    cluster = SimCluster(SimSettings(nodes=2, clients=120), clock)
    server = TestServer(build_sim_app(cluster), host="127.0.0.1")
    await server.start_server(ssl=context)
    url = str(server.make_url("/")).rstrip("/")
    assert url.startswith("https://127.0.0.1:")
    settings = load_settings({"emqx_url": url, "api_key": "exporter", "api_secret": "secret",
                              "retries": 0, "tls": tls}, {}, None)
    exporter = Exporter(settings, clock=clock)
    try:
        yield HttpsRig(cluster, exporter, url)
    finally:
        await exporter.stop()
        await server.close()


def error_text(report: PollReport) -> str:
    assert report.error is not None
    return str(report.error)


async def test_private_ca_polls_every_client(certs: Certs) -> None:
    async with https_rig(server_context(certs), {"ca_file": certs.pem("ca")}) as r:
        report = await r.poll()
        assert report.ok, report.error
        assert r.exported_clients() == r.truth() and len(r.truth()) > 100


async def test_unknown_ca_is_unreachable_with_a_clear_cause(certs: Certs) -> None:
    async with https_rig(server_context(certs), {}) as r:
        report = await r.poll()
        assert not report.ok and report.error is not None
        assert report.error.reason == "unreachable"
        text = error_text(report)
        assert "certificate" in text and "unable to get local issuer certificate" in text
        assert "tls.ca_file" in text  # says what to do about it
        assert r.exporter.pollers[0].stats.api_errors == {"unreachable": 1}
        assert r.exported_clients() == set()


async def test_insecure_skip_verify_works_and_warns_once(certs: Certs) -> None:
    # The `named` certificate fails both checks: unknown CA, and not issued for 127.0.0.1.
    with capture_logs() as logs:
        async with https_rig(server_context(certs, "named"), {"insecure_skip_verify": True}) as r:
            for _ in range(3):
                report = await r.poll()
                assert report.ok, report.error
            assert r.exported_clients() == r.truth()
    warnings = [e for e in logs if e["event"] == "tls_verification_disabled"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"


async def test_client_certificate_accepted_by_a_verifying_server(certs: Certs) -> None:
    context = server_context(certs, require_client_cert=True)
    tls = {"ca_file": certs.pem("ca"), "cert_file": certs.pem("client"),
           "key_file": certs.key("client")}
    async with https_rig(context, tls) as r:
        report = await r.poll()
        assert report.ok, report.error
        assert r.exported_clients() == r.truth()


async def test_missing_client_certificate_is_rejected(certs: Certs) -> None:
    context = server_context(certs, require_client_cert=True)
    async with https_rig(context, {"ca_file": certs.pem("ca")}) as r:
        report = await r.poll()
        assert not report.ok and report.error is not None
        assert report.error.reason == "unreachable"
        assert "tls.cert_file" in error_text(report)  # the hint names the missing setting
        assert r.exported_clients() == set()


async def test_server_name_override(certs: Certs) -> None:
    # The certificate is valid for emqx.test only; the URL names 127.0.0.1.
    context = server_context(certs, "named")
    async with https_rig(context, {"ca_file": certs.pem("ca"), "server_name": "emqx.test"}) as r:
        report = await r.poll()
        assert report.ok, report.error
        assert r.exported_clients() == r.truth()
    async with https_rig(context, {"ca_file": certs.pem("ca")}) as r:
        report = await r.poll()
        assert report.error is not None and report.error.reason == "unreachable"
        text = error_text(report)
        assert "mismatch" in text and "tls.server_name" in text
    async with https_rig(context, {"ca_file": certs.pem("ca"), "server_name": "other.test"}) as r:
        report = await r.poll()
        assert report.error is not None and "other.test" in error_text(report)


@pytest.mark.parametrize(("tls", "key", "words"), [
    ({"ca_file": "missing.pem"}, "tls.ca_file", "no such file"),
    ({"ca_file": "ca.key"}, "tls.ca_file", "NO_CERTIFICATE"),  # a key is no certificate
    ({"cert_file": "client.pem"}, "tls.cert_file", "set tls.key_file"),
    ({"cert_file": "client.pem", "key_file": "server.key"}, "tls.cert_file", "MISMATCH"),
    ({"key_file": "client.key"}, "tls.cert_file", "is required with tls.key_file"),
])
def test_unusable_tls_files_are_config_errors_naming_the_key(
        certs: Certs, tls: dict[str, str], key: str, words: str) -> None:
    paths = {k: str(certs.dir / v) for k, v in tls.items()}
    flags = {"emqx_url": "https://127.0.0.1:9", "api_key": "exporter", "api_secret": "secret",
             "tls": paths}

    def build() -> None:
        # Missing files fail while loading the settings, unusable ones in the TLS layer.
        Exporter(load_settings(flags, {}, None))

    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.key == key and words in caught.value.message
