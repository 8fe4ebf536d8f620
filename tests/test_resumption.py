"""A TLS session never outlives the web configuration that admitted it.

A resumed session skips the client certificate check: it carries the certificate verified when
it was made. Each web configuration has its own SSLContext (session cache and ticket keys),
and every connection is made with the newest, so after a tightening an old session finds no
cache entry and a ticket it cannot decrypt: the client does a full handshake and meets the new
policy. Checked for both ways of tightening, in TLS 1.2 (session IDs and tickets) and 1.3.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import Certs
from tests.test_webgate import WebCerts, gated, tls_config, web_certs, write

__all__ = ["web_certs"]  # the fixture, shared with test_webgate

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: refused without an HTTP answer
    session: ssl.SSLSession | None
    reused: bool


def client(certs: WebCerts, version: ssl.TLSVersion, issuer: Certs | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.good.pem("ca"))
    context.minimum_version = context.maximum_version = version
    if issuer is not None:
        context.load_cert_chain(issuer.pem("client"), issuer.key("client"))
    return context


async def connect(port: int, context: ssl.SSLContext,
                  session: ssl.SSLSession | None = None) -> Outcome:
    """GET /metrics on a new connection, offering `session` for resumption."""
    def exchange() -> Outcome:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            try:
                sock = context.wrap_socket(plain, server_hostname="127.0.0.1", session=session)
                reused = bool(sock.session_reused)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                raw = b""
                while chunk := sock.recv(65536):  # TLS 1.3 tickets arrive after the handshake
                    raw += chunk
            except (ssl.SSLError, OSError):
                return Outcome(None, None, False)
            if not raw:
                return Outcome(None, None, reused)
            return Outcome(int(raw.split(b" ", 2)[1]), sock.session, reused)

    return await asyncio.to_thread(exchange)


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS12", "TLS13"])
async def test_a_session_is_refused_after_the_client_ca_is_replaced(
        web_certs: WebCerts, tmp_path: Path, version: ssl.TLSVersion) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": tls_config(
        web_certs.good, client_ca_file=web_certs.good.pem("ca"),
        client_auth_type="RequireAndVerifyClientCert")})
    async with gated(path) as g:
        port = int(g.url.rsplit(":", 1)[1])
        admitted = client(web_certs, version, web_certs.good)
        first = await connect(port, admitted)
        assert first.status == 200 and first.session is not None
        # Unchanged configuration: the session resumes (so the refusal below is the change's).
        again = await connect(port, admitted, first.session)
        assert (again.status, again.reused) == (200, True)
        write(path, {"tls_server_config": tls_config(
            web_certs.good, client_ca_file=web_certs.other.pem("ca"),
            client_auth_type="RequireAndVerifyClientCert")})
        resumed = await connect(port, admitted, again.session or first.session)
        assert (resumed.status, resumed.reused) == (None, False)
        # The new CA's clients are admitted: the new configuration is in force.
        assert (await connect(port, client(web_certs, version, web_certs.other))).status == 200


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS12", "TLS13"])
async def test_a_session_without_a_certificate_is_refused_once_one_is_required(
        web_certs: WebCerts, tmp_path: Path, version: ssl.TLSVersion) -> None:
    verify_if_given = {"tls_server_config": tls_config(
        web_certs.good, client_ca_file=web_certs.good.pem("ca"),
        client_auth_type="VerifyClientCertIfGiven")}
    path = write(tmp_path / "web.yml", verify_if_given)
    async with gated(path) as g:
        port = int(g.url.rsplit(":", 1)[1])
        anonymous = client(web_certs, version, None)
        first = await connect(port, anonymous)
        assert first.status == 200 and first.session is not None
        again = await connect(port, anonymous, first.session)
        assert (again.status, again.reused) == (200, True)
        write(path, {"tls_server_config": {**verify_if_given["tls_server_config"],
                                           "client_auth_type": "RequireAndVerifyClientCert"}})
        resumed = await connect(port, anonymous, again.session or first.session)
        assert (resumed.status, resumed.reused) == (None, False)
        assert (await connect(port, client(web_certs, version, web_certs.good))).status == 200
