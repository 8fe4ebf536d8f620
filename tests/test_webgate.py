"""The scrape endpoint behind a web config: TLS, mutual TLS, basic auth, headers, live reload.

Real TLS on a free loopback port with certificates made for this run by tests/test_tls.py's
helpers: one CA for the server and the good client, another CA for a client nobody trusts.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp.test_utils import TestServer

from exporter import webauth
from exporter.config import load_settings
from exporter.errors import ConfigError
from exporter.server import build_app
from exporter.service import Exporter
from exporter.webauth import Credentials, TokenBucket, Verdict
from exporter.webgate import WebGate
from tests.certs import Certs, issue, make_ca, require_openssl
from tests.exposition import samples_text
from tests.harness import value

PASSWORD = "scrape-me"
#: Cost 4, bcrypt's lowest, keeps the tests fast; the code treats every cost alike.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
RELOAD_METRIC = "emqx_client_exporter_web_config_last_reload_successful"


@dataclass(frozen=True)
class WebCerts:
    good: Certs  # ca, server (127.0.0.1), rotated (127.0.0.1, CN rotated), client
    other: Certs  # a CA the exporter does not trust, and a client certificate it signed


@pytest.fixture(scope="module")
def web_certs(tmp_path_factory: pytest.TempPathFactory) -> WebCerts:
    require_openssl()
    good = tmp_path_factory.mktemp("web-tls")
    make_ca(good)
    server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    issue(good, "server", "/CN=exporter.test", server_ext)
    issue(good, "rotated", "/CN=rotated.test", server_ext)
    issue(good, "client", "/CN=prometheus",
          "subjectAltName=DNS:prometheus.test\nextendedKeyUsage=clientAuth\n")
    issue(good, "stranger", "/CN=stranger",
          "subjectAltName=DNS:stranger.test\nextendedKeyUsage=clientAuth\n")
    other = tmp_path_factory.mktemp("other-tls")
    make_ca(other, "someone else's CA")
    issue(other, "client", "/CN=prometheus",
          "subjectAltName=DNS:prometheus.test\nextendedKeyUsage=clientAuth\n")
    return WebCerts(Certs(good), Certs(other))


def client_context(certs: WebCerts, client: Certs | None = None,
                   name: str = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.good.pem("ca"))
    if client is not None:
        context.load_cert_chain(client.pem(name), client.key(name))
    return context


def auth(user: str = "prometheus", password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def write(path: Path, data: dict[str, Any]) -> Path:
    # A new file renamed into place, as cert-manager and editors do: a new inode each time.
    scratch = path.with_suffix(".tmp")
    scratch.write_text(yaml.safe_dump(data))
    os.replace(scratch, path)
    return path


@dataclass
class Gated:
    url: str
    gate: WebGate
    exporter: Exporter

    async def get(self, path: str, context: ssl.SSLContext | None = None,
                  headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """GET on a fresh connection (new handshake); the body is read before returning."""
        connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
        async with aiohttp.ClientSession(connector=connector) as session:
            response = await session.get(self.url + path, headers=headers)
            await response.read()
            return response


@asynccontextmanager
async def gated(web_config: Path | None, **settings: Any) -> AsyncIterator[Gated]:
    """The exporter's app (nothing polled) behind a WebGate, served on a free loopback port."""
    loaded = load_settings({"emqx_url": "http://127.0.0.1:9", "api_key": "k", "api_secret": "s",
                            "web_config": str(web_config) if web_config else None, **settings},
                           {}, None)
    gate = WebGate(loaded.web_config, loaded.open_paths)
    exporter = Exporter(loaded)
    server = TestServer(build_app(exporter, poll=False, gate=gate), host="127.0.0.1")
    await server.start_server(ssl=gate.ssl_context)
    scheme = "https" if gate.ssl_context else "http"
    try:
        yield Gated(f"{scheme}://127.0.0.1:{server.port}", gate, exporter)
    finally:
        await server.close()
        await exporter.stop()


def tls_config(certs: Certs, name: str = "server", **extra: Any) -> dict[str, Any]:
    return {"cert_file": certs.pem(name), "key_file": certs.key(name), **extra}


async def test_tls_serves_metrics_to_clients_that_trust_the_ca(
        web_certs: WebCerts, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": tls_config(web_certs.good)})
    async with gated(path) as g:
        response = await g.get("/metrics", client_context(web_certs))
        assert response.status == 200
        assert "emqx_client_exporter_poll_interval_seconds" in await response.text()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await g.get("/metrics", ssl.create_default_context())  # CA unknown to the client
        plain = Gated(g.url.replace("https://", "http://"), g.gate, g.exporter)
        refused = await plain.get("/metrics")  # no plain HTTP on the TLS port: Go's answer
        assert refused.status == 400
        assert "emqx_client_exporter" not in await refused.text()


async def test_mutual_tls_needs_a_certificate_of_the_client_ca(
        web_certs: WebCerts, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": tls_config(
        web_certs.good, client_ca_file=web_certs.good.pem("ca"),
        client_auth_type="RequireAndVerifyClientCert")})
    async with gated(path) as g:
        ok = await g.get("/metrics", client_context(web_certs, web_certs.good))
        assert ok.status == 200
        for context in (client_context(web_certs),  # no certificate
                        client_context(web_certs, web_certs.other)):  # a stranger's CA
            with pytest.raises(aiohttp.ClientError):
                await g.get("/metrics", context)


async def test_verify_if_given_admits_no_certificate_but_refuses_a_wrong_one(
        web_certs: WebCerts, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": tls_config(
        web_certs.good, client_ca_file=web_certs.good.pem("ca"),
        client_auth_type="VerifyClientCertIfGiven")})
    async with gated(path) as g:
        assert (await g.get("/metrics", client_context(web_certs))).status == 200
        good = client_context(web_certs, web_certs.good)
        assert (await g.get("/metrics", good)).status == 200
        with pytest.raises(aiohttp.ClientError):
            await g.get("/metrics", client_context(web_certs, web_certs.other))


async def test_client_allowed_sans_refuse_other_verified_clients(
        web_certs: WebCerts, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": tls_config(
        web_certs.good, client_ca_file=web_certs.good.pem("ca"),
        client_auth_type="RequireAndVerifyClientCert",
        client_allowed_sans=["prometheus.test"])})
    async with gated(path) as g:
        assert (await g.get("/metrics", client_context(web_certs, web_certs.good))).status == 200
        stranger = client_context(web_certs, web_certs.good, "stranger")
        with pytest.raises(aiohttp.ClientError):  # the handshake fails: no HTTP answer at all
            await g.get("/metrics", stranger)


async def test_basic_auth_right_wrong_missing_and_open_probe(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"basic_auth_users": {"prometheus": HASH}})
    async with gated(path) as g:
        assert (await g.get("/metrics", headers=auth())).status == 200
        for headers in (auth(password="wrong"), auth(user="nobody"), {},
                        {"Authorization": "Bearer x"}, {"Authorization": "Basic !!"}):
            refused = await g.get("/metrics", headers=headers)
            assert refused.status == 401, headers
            assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "emqx_client_exporter" not in await refused.text()
        assert (await g.get("/", headers={})).status == 401
        assert (await g.get("/-/ready", headers={})).status == 401
        assert (await g.get("/-/healthy")).status == 200  # probes stay open by default
    async with gated(path, open_paths=[]) as g:
        assert (await g.get("/-/healthy")).status == 401
        assert (await g.get("/-/healthy", headers=auth())).status == 200


async def test_headers_of_http_server_config_on_every_answer(tmp_path: Path) -> None:
    headers = {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff",
               "Strict-Transport-Security": "max-age=31536000", "X-XSS-Protection": ""}
    path = write(tmp_path / "web.yml", {"http_server_config": {"headers": headers},
                                        "basic_auth_users": {"prometheus": HASH}})
    async with gated(path) as g:
        for response in (await g.get("/metrics", headers=auth()), await g.get("/metrics")):
            assert response.headers["X-Frame-Options"] == "deny"
            assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert "X-XSS-Protection" not in response.headers  # blank: unset


async def test_rate_limit_answers_429_past_the_burst(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"rate_limit": {"interval": "1h", "burst": 2}})
    async with gated(path) as g:
        codes = [(await g.get("/-/healthy")).status for _ in range(3)]
        assert codes == [200, 200, 429]


@asynccontextmanager
async def tls_connection(url: str, context: ssl.SSLContext) -> AsyncIterator[
        tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("https://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        yield reader, writer
    finally:
        writer.close()
        await writer.wait_closed()


def subject(writer: asyncio.StreamWriter) -> str:
    return str(dict(x[0] for x in writer.get_extra_info("peercert")["subject"])["commonName"])


async def healthy_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive request on an open connection; the status line of the answer."""
    writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: exporter\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await asyncio.wait_for(reader.readexactly(length), 5)
    return head.split(b"\r\n")[0]


async def test_certificate_rotated_on_disk_is_served_without_restart(
        web_certs: WebCerts, tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(web_certs.good.pem("server"), live / "tls.crt")
    shutil.copy(web_certs.good.key("server"), live / "tls.key")
    path = write(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(live / "tls.crt"), "key_file": str(live / "tls.key")}})
    context = client_context(web_certs)
    async with gated(path) as g, tls_connection(g.url, context) as (reader, writer):
        # A keep-alive connection opened before the rotation and used again after it.
        assert subject(writer) == "exporter.test"
        assert await healthy_on(reader, writer) == b"HTTP/1.1 200 OK"
        for suffix, source in (("crt", web_certs.good.pem("rotated")),
                               ("key", web_certs.good.key("rotated"))):
            shutil.copy(source, live / f"tls.{suffix}.new")
            os.replace(live / f"tls.{suffix}.new", live / f"tls.{suffix}")
        async with tls_connection(g.url, context) as (_, fresh):
            assert subject(fresh) == "rotated.test"  # a new handshake: the new certificate
        assert await healthy_on(reader, writer) == b"HTTP/1.1 200 OK"  # the old one goes on
        response = await g.get("/metrics", context)
        assert value(samples_text(await response.text()), RELOAD_METRIC) == 1


async def test_client_certificate_policy_changes_with_the_file(
        web_certs: WebCerts, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": tls_config(web_certs.good)})
    anonymous, known = client_context(web_certs), client_context(web_certs, web_certs.good)
    async with gated(path) as g:
        assert (await g.get("/metrics", anonymous)).status == 200
        write(path, {"tls_server_config": tls_config(
            web_certs.good, client_ca_file=web_certs.good.pem("ca"),
            client_auth_type="RequireAndVerifyClientCert")})
        # The handshake that notices the change was already negotiating under the old policy;
        # from the next one on, a certificate is required.
        assert (await g.get("/metrics", known)).status == 200
        with pytest.raises(aiohttp.ClientError):
            await g.get("/metrics", anonymous)
        assert (await g.get("/metrics", known)).status == 200
        write(path, {"tls_server_config": tls_config(web_certs.good)})
        assert (await g.get("/metrics", known)).status == 200
        assert (await g.get("/metrics", anonymous)).status == 200


async def test_bad_new_web_config_is_rejected_and_the_old_one_kept(
        web_certs: WebCerts, tmp_path: Path) -> None:
    good = {"tls_server_config": tls_config(web_certs.good),
            "basic_auth_users": {"prometheus": HASH}}
    path = write(tmp_path / "web.yml", good)
    context = client_context(web_certs)
    bad_files: list[dict[str, Any]] = [
        {**good, "basic_auth_users": {"prometheus": "plain-text"}},
        {**good, "tls_server_config": tls_config(web_certs.good, key_file=web_certs.good.key(
            "client"))},  # a key that is not the certificate's
        {**good, "tls_server_config": {**tls_config(web_certs.good), "min_version": "TLS14"}},
        {"basic_auth_users": {"prometheus": HASH}},  # TLS off: needs a restart
    ]
    async with gated(path) as g:
        for bad in bad_files:
            write(path, bad)
            response = await g.get("/metrics", context, auth())
            assert response.status == 200, bad  # old certificate and users still in force
            assert value(samples_text(await response.text()), RELOAD_METRIC) == 0, bad
            assert (await g.get("/metrics", context)).status == 401
        write(path, {**good, "basic_auth_users": {"other": HASH}})
        assert (await g.get("/metrics", context, auth())).status == 401  # new users apply
        response = await g.get("/metrics", context, auth("other"))
        assert value(samples_text(await response.text()), RELOAD_METRIC) == 1


async def test_unknown_users_cost_one_bcrypt_check_of_the_usual_cost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    original: Callable[[bytes, bytes], bool] = webauth._checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return original(password, hashed)

    monkeypatch.setattr(webauth, "_checkpw", spy)
    credentials = Credentials({"prometheus": HASH.encode()})
    header = auth()["Authorization"]
    assert await credentials.check(auth(user="nobody")["Authorization"]) is Verdict.REFUSED
    assert await credentials.check(auth(password="wrong")["Authorization"]) is Verdict.REFUSED
    assert calls == [HASH.encode(), HASH.encode()]  # the same bcrypt work for both
    # One costly user among cheap ones: an unknown user costs what most users cost, not the
    # costliest hash (which made unknown names stand out and gave attackers a lever).
    mixed = Credentials({"a": bcrypt.hashpw(b"x", bcrypt.gensalt(4)),
                         "b": bcrypt.hashpw(b"x", bcrypt.gensalt(4)),
                         "dear": bcrypt.hashpw(b"y", bcrypt.gensalt(6))})
    assert await mixed.check(auth(user="nobody", password="y")["Authorization"]) is (
        Verdict.REFUSED)
    assert calls[-1].startswith(b"$2b$04$")
    assert webauth.dummy_hash([b"$2y$12$" + b"a" * 53, b"$2y$10$" + b"b" * 53]).startswith(
        b"$2y$10$")  # a tie: the cheaper
    assert await credentials.check(header) is Verdict.OK
    for _ in range(3):  # verified once, then remembered
        assert await credentials.check(header) is Verdict.OK
    assert len(calls) == 4
    for _ in range(3):  # a refused credential too: a repeated bad one costs one bcrypt
        assert await credentials.check(auth(password="wrong")["Authorization"]) is (
            Verdict.REFUSED)
        assert await credentials.check(auth(user="nobody")["Authorization"]) is (
            Verdict.REFUSED)
    assert len(calls) == 4


async def test_caches_are_bounded_and_failures_never_evict_verified_credentials() -> None:
    users = {f"u{i}": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)) for i in range(3)}
    credentials = Credentials(users)
    for i in range(webauth.CACHE_SIZE + 10):
        assert await credentials.check(auth(f"u{i % 3}", "pw")["Authorization"]) is Verdict.OK
        assert await credentials.check(auth(f"u{i % 3}", f"x{i}")["Authorization"]) is (
            Verdict.REFUSED)
    assert len(credentials._verified) == 3
    assert len(credentials._failed) == webauth.CACHE_SIZE + 10


async def test_a_flood_of_bad_credentials_is_bounded_and_cached_ones_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    started: list[bytes] = []

    def slow(password: bytes, hashed: bytes) -> bool:
        started.append(password)
        release.wait(10)
        return False

    credentials = Credentials({"prometheus": HASH.encode()})
    header = auth()["Authorization"]
    assert await credentials.check(header) is Verdict.OK  # cached before the flood
    monkeypatch.setattr(webauth, "_checkpw", slow)
    flood = [asyncio.ensure_future(credentials.check(auth(password=f"bad{i}")["Authorization"]))
             for i in range(100)]
    same = [asyncio.ensure_future(credentials.check(auth(password="bad0")["Authorization"]))
            for _ in range(5)]
    await asyncio.sleep(0)
    # Past MAX_PENDING checks the flood is answered at once, without bcrypt...
    busy = [f for f in flood if f.done()]
    assert len(busy) == 100 - webauth.MAX_PENDING
    assert all(f.result() is Verdict.BUSY for f in busy)
    assert not any(f.done() for f in same)  # ...a repeated credential waits for its check
    # ...and the cached good credential passes while bcrypt's threads are stuck.
    assert await credentials.check(header) is Verdict.OK
    release.set()
    results = await asyncio.gather(*flood, *same)
    assert results.count(Verdict.REFUSED) == webauth.MAX_PENDING + 5
    assert len(started) == webauth.MAX_PENDING


async def test_bcrypt_gets_a_share_of_a_core_then_unchecked_credentials_wait() -> None:
    now = [0.0]
    budget = webauth._Budget(clock=lambda: now[0])
    budget.charge(0.25 * webauth.BCRYPT_SHARE)  # a quarter second of debt
    assert budget.allows()
    budget.charge(1.0 * webauth.BCRYPT_SHARE)  # 1.25 s of debt: over the allowed second
    assert not budget.allows()
    now[0] = 0.25
    assert budget.allows()  # drained in real time
    assert not budget.allows(pending=1)  # a check under way counts at the last one's cost
    credentials = Credentials({"prometheus": HASH.encode()})
    assert await credentials.check(auth()["Authorization"]) is Verdict.OK
    credentials.budget.charge(10.0)  # bcrypt has had its share
    assert await credentials.check(auth(password="new")["Authorization"]) is Verdict.BUSY
    assert await credentials.check(auth()["Authorization"]) is Verdict.OK  # remembered


def test_token_bucket_refills_one_token_per_interval() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 2, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    now[0] = 2.0
    assert [bucket.allow() for _ in range(2)] == [True, False]
    assert all(TokenBucket(0.0, 0).allow() for _ in range(5))


def test_a_web_config_that_does_not_load_stops_the_start(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": {"cert_file": "missing.pem",
                                                              "key_file": "missing.key"}})
    with pytest.raises(ConfigError) as caught:
        WebGate(str(path))
    assert caught.value.key == "web_config.tls_server_config.cert_file"


async def test_a_tls13_only_cipher_list_leaves_tls12_without_suites_as_in_go(
        web_certs: WebCerts, tmp_path: Path) -> None:
    """Go ignores TLS 1.3 suites in `cipher_suites`: a list of only those leaves TLS 1.2 with
    none, so TLS 1.2 handshakes fail (never OpenSSL's default list instead)."""
    for max_version, admitted in (("TLS13", {ssl.TLSVersion.TLSv1_3}), ("TLS12", set())):
        path = write(tmp_path / "web.yml", {
            "tls_server_config": tls_config(web_certs.good, max_version=max_version,
                                            cipher_suites=["TLS_AES_128_GCM_SHA256"]),
            "http_server_config": {"http2": False}})  # else Go's HTTP/2 rule refuses it
        async with gated(path) as g:
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                context = client_context(web_certs)
                context.minimum_version = context.maximum_version = version
                if version in admitted:
                    assert (await g.get("/metrics", context)).status == 200
                else:
                    with pytest.raises(aiohttp.ClientError):
                        await g.get("/metrics", context)
