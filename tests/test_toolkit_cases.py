"""The exporter-toolkit's own web-config tests, run against this exporter.

prometheus/exporter-toolkit tests its web configuration with the files of `web/testdata/*.yml`
and the tables of `web/tls_config_test.go` (TestYAMLFiles, TestServerBehaviour,
TestConfigReloading, TestUsers, TestTLSConfigIsEnabled). Each case here names the toolkit file
or test it mirrors and states the toolkit's expected outcome; the files and certificates are
written and generated here for this run (an RSA server certificate from a CA of its own, as
the toolkit's ECDHE_RSA cases need, and two self-signed client certificates, the second with
the DNS SAN `test3`). bcrypt costs are lowered (4 to 6, the toolkit's file has 10 to 18) to
keep the suite fast: the cost changes the time, not the outcome.

Differences left from Go's behaviour: none among these cases. Two outcomes differ in form only
and are asserted as they are here: a plain HTTP client of a TLS port gets the connection
closed (Go answers a 400 in plain HTTP), and a refused client certificate is refused with
OpenSSL's alert (Go's text differs).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter import tlsnative
from exporter.errors import ConfigError
from exporter.webconfig import parse_web_config
from exporter.webgate import WebGate
from tests.certs import openssl, require_openssl
from tests.test_webgate import auth, gated

#: The toolkit's user passwords (its TestUsers logs in as dave and carol).
PASSWORDS = {"alice": ("alice123", 5), "bob": ("bob123", 6), "carol": ("carol123", 4),
             "dave": ("dave123", 4)}


@dataclass(frozen=True)
class Kit:
    dir: Path
    hashes: dict[str, str] = field(default_factory=dict)

    def text(self, name: str) -> str:
        return (self.dir / name).read_text()

    def client(self, cert: str | None = None, *, min_version: ssl.TLSVersion | None = None,
               max_version: ssl.TLSVersion | None = None, ciphers: str | None = None,
               curve: str | None = None) -> ssl.SSLContext:
        """A client trusting the server's CA (the toolkit's tls-ca-chain.pem)."""
        context = ssl.create_default_context(cafile=str(self.dir / "tls-ca-chain.pem"))
        if cert:
            context.load_cert_chain(self.dir / f"{cert}.pem", self.dir / f"{cert}.key")
        if min_version is not None:
            context.minimum_version = min_version
        if max_version is not None:
            context.maximum_version = max_version
        if ciphers:
            context.set_ciphers(ciphers)
        if curve:
            context.set_ecdh_curve(curve)
        return context


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    require_openssl()
    d = tmp_path_factory.mktemp("toolkit")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "tls-ca-chain.pem", "-days", "2", "-subj", "/CN=toolkit cases CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/O=Prometheus/CN=localhost", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "tls-ca-chain.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "server.crt", "-extfile", "server.ext",
            cwd=d)
    for name, subject, extra in (("client_selfsigned", "/CN=test", ()),
                                 ("client2_selfsigned", "/CN=test3",
                                  ("-addext", "subjectAltName=DNS:test3"))):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                "-subj", subject, "-addext", "extendedKeyUsage=clientAuth", *extra, cwd=d)
    hashes = {user: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(cost)).decode()
              for user, (pw, cost) in PASSWORDS.items()}
    kit = Kit(d, hashes)
    for name, content in files(kit).items():
        (d / name).write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return kit


def files(kit: Kit) -> dict[str, Any]:
    """Our own web config for each of the toolkit's `web/testdata/*.yml`, by the same name."""
    server = {"cert_file": "server.crt", "key_file": "server.key"}
    if_given = {**server, "client_auth_type": "VerifyClientCertIfGiven"}
    gcm = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]
    return {
        "tls_config_noAuth.requireandverifyclientcert.good.yml": {"tls_server_config": {
            **server, "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": "client_selfsigned.pem"}},
        "tls_config_noAuth.requireanyclientcert.good.yml": {"tls_server_config": {
            **server, "client_auth_type": "RequireAnyClientCert"}},
        "tls_config_noAuth.requireanyclientcertkeyinline.good.yml": {"tls_server_config": {
            "cert_file": "server.crt", "key": kit.text("server.key"),
            "client_auth_type": "RequireAnyClientCert"}},
        "web_config_auth_clientCAs_invalid.bad.yml": {"tls_server_config": {
            **server, "client_ca_file": "somefile"}},
        "web_config_auth_clientCAs_missing.bad.yml": {"tls_server_config": {
            **server, "client_auth_type": "RequireAndVerifyClientCert"}},
        "web_config_auth_client_san.bad.yaml": {"tls_server_config": {
            **server, "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": "client2_selfsigned.pem", "client_allowed_sans": ["bad"]}},
        "web_config_auth_client_san.good.yaml": {"tls_server_config": {
            **server, "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": "client2_selfsigned.pem",
            "client_allowed_sans": ["one", "test3", "two"]}},
        "web_config_auth_user_list_invalid.bad.yml": {"tls_server_config": server,
                                                      "basic_auth_users": {"john": "doe"}},
        "web_config_empty.yml": "",
        "web_config_headers.good.yml": {"http_server_config": {"headers": {
            "X-Frame-Options": "deny",
            "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
            "X-Content-Type-Options": "nosniff", "X-XSS-Protection": "1",
            "Content-Security-Policy": "default-src 'self' *.test.example.net"}}},
        "web_config_headers_content_type_options.bad.yml": {
            "http_server_config": {"headers": {"X-Content-Type-Options": "sniff"}}},
        "web_config_headers_extra_header.bad.yml": {
            "http_server_config": {"headers": {"Content-Type": "foo"}}},
        "web_config_headers_frame_options.bad.yml": {
            "http_server_config": {"headers": {"X-Frame-Options": "foo"}}},
        "web_config_junk.yml": "\n".join(f"junk{i}Zq8Lr2Xw" for i in range(20)) + "\n",
        "web_config_junk_key.yml": {"tls_server_config": {"cert_filse": "server.crt"}},
        "web_config_noAuth.bad.yml": {"tls_server_config": {**server,
                                                            "client_ca_file": "/dev/null"}},
        "web_config_noAuth.good.blocking.yml": {"tls_server_config": {
            **server, "client_auth_type": "RequireAndVerifyClientCert"}},
        "web_config_noAuth.good.yml": {"tls_server_config": if_given},
        "web_config_noAuth_allCiphers.good.yml": {"tls_server_config": {
            **if_given, "cipher_suites": [
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                *gcm, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256",
                "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"]}},
        "web_config_noAuth_allCurves.good.yml": {"tls_server_config": {
            **if_given, "curve_preferences": ["CurveP256", "CurveP384", "CurveP521", "X25519"]}},
        "web_config_noAuth_certPath_empty.bad.yml": {"tls_server_config": {
            "cert_file": "", "key_file": "server.key"}},
        "web_config_noAuth_certPath_invalid.bad.yml": {"tls_server_config": {
            "cert_file": "somefile", "key_file": "server.key"}},
        "web_config_noAuth_certPath_keyPath_empty.bad.yml": {"tls_server_config": {
            "cert_file": "", "key_file": "", "client_auth_type": "x"}},
        "web_config_noAuth_certPath_keyPath_invalid.bad.yml": {"tls_server_config": {
            "cert_file": "somefile", "key_file": "somefile"}},
        "web_config_noAuth_cert_empty.bad.yml": {"tls_server_config": {
            "cert": "", "key_file": "server.key"}},
        "web_config_noAuth_inventedCiphers.bad.yml": {"tls_server_config": {
            **if_given, "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048"]}},
        "web_config_noAuth_inventedCurves.bad.yml": {"tls_server_config": {
            **if_given, "curve_preferences": ["CurveP257"]}},
        "web_config_noAuth_keyPath_empty.bad.yml": {"tls_server_config": {
            "cert_file": "server.crt", "key_file": ""}},
        "web_config_noAuth_keyPath_invalid.bad.yml": {"tls_server_config": {
            "cert_file": "server.cert", "key_file": "somefile"}},
        "web_config_noAuth_key_empty.bad.yml": {"tls_server_config": {
            "cert_file": "server.crt", "key": ""}},
        "web_config_noAuth_noHTTP2.good.yml": {
            "tls_server_config": {**if_given, "cipher_suites": gcm[1:], "max_version": "TLS12"},
            "http_server_config": {"http2": False}},
        "web_config_noAuth_noHTTP2Cipher.bad.yml": {
            "tls_server_config": {**if_given, "cipher_suites": gcm[1:], "max_version": "TLS12"}},
        "web_config_noAuth_someCiphers.good.yml": {"tls_server_config": {
            **if_given, "cipher_suites": gcm, "min_version": "TLS12", "max_version": "TLS12"}},
        "web_config_noAuth_someCiphers_noOrder.good.yml": {"tls_server_config": {
            **if_given, "cipher_suites": gcm[::-1], "prefer_server_cipher_suites": False,
            "min_version": "TLS12", "max_version": "TLS12"}},
        "web_config_noAuth_someCurves.good.yml": {"tls_server_config": {
            **if_given, "min_version": "TLS13", "curve_preferences": ["CurveP521"]}},
        "web_config_noAuth_tlsInline.good.yml": {"tls_server_config": {
            "cert": kit.text("server.crt"), "key": kit.text("server.key"),
            "client_auth_type": "VerifyClientCertIfGiven"}},
        "web_config_noAuth_wrongTLSVersion.bad.yml": {"tls_server_config": {
            **if_given, "min_version": "TLS111"}},
        "web_config_rate_limiter_nonblocking.yaml": {"rate_limit": {"interval": 0, "burst": 0}},
        "web_config_rate_limiter_one_second.yaml": {"rate_limit": {"interval": "1s",
                                                                   "burst": 0}},
        "web_config_users.good.yml": {"tls_server_config": server,
                                      "basic_auth_users": kit.hashes},
        "web_config_users_noTLS.good.yml": {"basic_auth_users": kit.hashes},
    }


def start(path: Path) -> WebGate:
    """What `run` does with --web.config.file before listening: load and prove the files."""
    return WebGate(str(path))


# --- TestYAMLFiles: run/ and validate/ of each file (both load the file the same way here).

@pytest.mark.parametrize(("toolkit", "go_expects", "key", "words"), [
    ("somefile", "error: no such file", "web_config", "No such file"),
    ("web_config_empty.yml", "no error", None, None),
    ("web_config_junk.yml", "error: yaml (a scalar, not a mapping)", "web_config",
     "must be a mapping"),
    ("web_config_junk_key.yml", "error: yaml (unknown field cert_filse)",
     "web_config.tls_server_config.cert_filse", "unknown setting"),
    ("web_config_noAuth_certPath_empty.bad.yml", "error: missing one of cert or cert_file",
     "web_config.tls_server_config.cert_file", "is required"),
    ("web_config_noAuth_cert_empty.bad.yml", "error: missing one of cert or cert_file",
     "web_config.tls_server_config.cert_file", "is required"),
    ("web_config_noAuth_keyPath_empty.bad.yml", "error: missing one of key or key_file",
     "web_config.tls_server_config.key_file", "is required"),
    ("web_config_noAuth_key_empty.bad.yml", "error: missing one of key or key_file",
     "web_config.tls_server_config.key_file", "is required"),
    ("web_config_noAuth_certPath_keyPath_empty.bad.yml",
     "error: missing one of cert or cert_file", "web_config.tls_server_config.cert_file",
     "is required"),
    ("web_config_noAuth_certPath_invalid.bad.yml", "error: no such file",
     "web_config.tls_server_config.cert_file", "No such file"),
    ("web_config_noAuth_keyPath_invalid.bad.yml", "error: no such file",
     "web_config.tls_server_config.cert_file", "No such file"),
    ("web_config_noAuth_certPath_keyPath_invalid.bad.yml", "error: no such file",
     "web_config.tls_server_config.cert_file", "No such file"),
    ("web_config_noAuth.bad.yml",
     "error: client CA's have been configured without a Client Auth Policy",
     "web_config.tls_server_config.client_auth_type", "without a Client Auth Policy"),
    ("web_config_auth_clientCAs_invalid.bad.yml", "error: no such file",
     "web_config.tls_server_config.client_ca_file", "No such file"),
    ("web_config_auth_user_list_invalid.bad.yml",
     "error: hashedSecret too short to be a bcrypted password",
     "web_config.basic_auth_users.john", "bcrypt hash"),
    ("web_config_noAuth_inventedCiphers.bad.yml", "error: unknown cipher",
     "web_config.tls_server_config.cipher_suites", "unknown cipher"),
    ("web_config_noAuth_inventedCurves.bad.yml", "error: unknown curve",
     "web_config.tls_server_config.curve_preferences", "unknown curve"),
    ("web_config_noAuth_wrongTLSVersion.bad.yml", "error: unknown TLS version",
     "web_config.tls_server_config.min_version", "unknown TLS version"),
])
def test_yaml_files(kit: Kit, toolkit: str, go_expects: str, key: str | None,
                    words: str | None) -> None:
    """TestYAMLFiles: the file is accepted, or refused naming the key, as Go does."""
    if key is None:
        start(kit.dir / toolkit)
        return
    with pytest.raises(ConfigError) as caught:
        start(kit.dir / toolkit)
    assert caught.value.key == key and words and words in caught.value.message, (
        go_expects, caught.value)


@pytest.mark.parametrize(("toolkit", "go_expects", "key", "words"), [
    # Not used by a toolkit test; Go loads it (RequireAndVerifyClientCert against the system's
    # roots), and so does this exporter: see test_server_behaviour's `missing CA` case.
    ("web_config_auth_clientCAs_missing.bad.yml", "no error (loads)", None, None),
    ("web_config_noAuth_noHTTP2Cipher.bad.yml",
     "error: TLSConfig.CipherSuites is missing an HTTP/2-required AES_128_GCM_SHA256 cipher",
     "web_config.tls_server_config.cipher_suites", "HTTP/2-required"),
    ("web_config_headers_content_type_options.bad.yml", "error: invalid value for",
     "web_config.http_server_config.headers.X-Content-Type-Options", "must be one of"),
    ("web_config_headers_frame_options.bad.yml", "error: invalid value for",
     "web_config.http_server_config.headers.X-Frame-Options", "must be one of"),
    ("web_config_headers_extra_header.bad.yml", 'error: HTTP header "..." can not be configured',
     "web_config.http_server_config.headers.Content-Type", "cannot be set"),
])
def test_files_refused_at_start_by_server_behaviour(
        kit: Kit, toolkit: str, go_expects: str, key: str | None, words: str | None) -> None:
    """TestServerBehaviour's files that Go refuses before serving (and one it accepts)."""
    if key is None:
        assert start(kit.dir / toolkit).ssl_context is not None
        return
    with pytest.raises(ConfigError) as caught:
        start(kit.dir / toolkit)
    assert caught.value.key == key and words and words in caught.value.message, (
        go_expects, caught.value)


# --- TestServerBehaviour, TestUsers and TestConfigReloading: real connections.

@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    cipher: str | None


class RefusedError(Exception):
    """No HTTP answer: the TLS handshake or the connection was refused."""


async def fetch(port: int, context: ssl.SSLContext | None, headers: dict[str, str] | None = None,
                path: str = "/metrics") -> Reply:
    """One request on a new connection, as the toolkit's client.Do; RefusedError without an answer.

    A blocking client in a thread: it reports the TLS alert the server sent, where asyncio's
    transport reports a closed connection."""
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    def exchange() -> tuple[bytes, str | None]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            sock = (context.wrap_socket(plain, server_hostname="localhost") if context
                    else plain)
            cipher = sock.cipher() if isinstance(sock, ssl.SSLSocket) else None
            sock.sendall(request)
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
                if _complete(raw):
                    break
            return raw, cipher[0] if cipher else None

    try:
        raw, cipher = await asyncio.to_thread(exchange)
    except (ssl.SSLError, OSError) as exc:
        raise RefusedError(f"{type(exc).__name__}: {exc}") from exc
    if not raw:
        raise RefusedError("connection closed without an answer")
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:])
    return Reply(int(head[0].split()[1]), fields, cipher)


def _complete(raw: bytes) -> bool:
    """A whole answer with a Content-Length (Go's 400 to plain HTTP leaves the socket open)."""
    head, blank, body = raw.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    return bool(blank and length and len(body) >= int(length[1]))


@asynccontextmanager
async def serving(kit: Kit, toolkit: str | None) -> AsyncIterator[int]:
    async with gated(kit.dir / toolkit if toolkit else None) as g:
        yield int(g.url.rsplit(":", 1)[1])


TLS11 = {"min_version": ssl.TLSVersion.TLSv1_1, "max_version": ssl.TLSVersion.TLSv1_1,
         "ciphers": "DEFAULT:@SECLEVEL=0"}
R128 = "ECDHE-RSA-AES128-GCM-SHA256"
R256 = "ECDHE-RSA-AES256-GCM-SHA384"
TLS12 = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class Case:
    go_test: str  # the toolkit's test and case name
    toolkit: str | None  # the testdata file mirrored; None: no web config
    go_expects: str
    tls: bool = True
    client: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = 200  # None: refused without an HTTP answer
    refusal: tuple[str, ...] = ()  # words one of which the refusal names
    cipher: str | None = None
    requests: int = 1


CASES = [
    Case("TestServerBehaviour/empty string YAMLConfigPath and default client", None,
         "no error", tls=False),
    Case("TestServerBehaviour/empty string YAMLConfigPath and TLS client", None,
         "error: server gave HTTP response to HTTPS client", status=None,
         refusal=("WRONG_VERSION_NUMBER", "wrong version number")),
    Case("TestServerBehaviour/valid tls config yml and default client",
         "web_config_noAuth.good.yml", "error: HTTP request to HTTPS server (Go answers 400)",
         tls=False, status=400),
    Case("TestServerBehaviour/valid tls config yml and tls client",
         "web_config_noAuth.good.yml", "no error"),
    Case("TestServerBehaviour/valid tls config yml (cert and key inline) and tls client",
         "web_config_noAuth_tlsInline.good.yml", "no error"),
    Case("TestServerBehaviour/valid tls config yml with TLS 1.1 client",
         "web_config_noAuth.good.yml", "error: protocol version not supported",
         client=TLS11, status=None, refusal=("PROTOCOL_VERSION", "protocol version")),
    Case("TestServerBehaviour/valid tls config yml with all ciphers",
         "web_config_noAuth_allCiphers.good.yml", "no error"),
    Case("TestServerBehaviour/valid tls config yml with some ciphers",
         "web_config_noAuth_someCiphers.good.yml", "no error",
         client={"ciphers": R128}, cipher=R128),
    Case("TestServerBehaviour/valid tls config yml with no common cipher",
         "web_config_noAuth_someCiphers.good.yml", "error: handshake failure",
         client={"ciphers": "ECDHE-RSA-AES256-SHA"}, status=None,
         refusal=("HANDSHAKE_FAILURE", "handshake failure")),
    Case("TestServerBehaviour/valid tls config yml with multiple client ciphers",
         "web_config_noAuth_someCiphers.good.yml", "no error, cipher AES_128_GCM",
         client={"ciphers": f"{R128}:{R256}"}, cipher=R128),
    # Not in the toolkit: the client's order reversed shows it is the server's order that won.
    Case("TestServerBehaviour/valid tls config yml with multiple client ciphers (reversed)",
         "web_config_noAuth_someCiphers.good.yml", "no error, the server's choice AES_128_GCM",
         client={"ciphers": f"{R256}:{R128}"}, cipher=R128),
    Case("TestServerBehaviour/valid tls config yml with multiple client ciphers, client "
         "chooses cipher", "web_config_noAuth_someCiphers_noOrder.good.yml",
         "no error, cipher AES_128_GCM", client={"ciphers": f"{R128}:{R256}"}, cipher=R128),
    Case("TestServerBehaviour/valid tls config yml with all curves",
         "web_config_noAuth_allCurves.good.yml", "no error"),
    Case("TestServerBehaviour/valid tls config yml with some curves",
         "web_config_noAuth_someCurves.good.yml", "no error", client={"curve": "secp521r1"}),
    Case("TestServerBehaviour/valid tls config yml with no common curves",
         "web_config_noAuth_someCurves.good.yml", "error: handshake failure",
         client={"curve": "secp384r1"}, status=None,
         refusal=("HANDSHAKE_FAILURE", "handshake failure")),
    Case("TestServerBehaviour/valid tls config yml with non-http2 ciphers",
         "web_config_noAuth_noHTTP2.good.yml", "no error"),
    Case("TestServerBehaviour/valid headers config", "web_config_headers.good.yml",
         "no error", tls=False),
    Case("TestServerBehaviour/valid tls config yml and tls client with RequireAnyClientCert "
         "(present certificate)", "tls_config_noAuth.requireanyclientcert.good.yml",
         "no error", client={"cert": "client_selfsigned"}),
    # Not in the toolkit: RequireAnyClientCert without a certificate.
    Case("TestServerBehaviour/RequireAnyClientCert (no certificate)",
         "tls_config_noAuth.requireanyclientcert.good.yml", "error: certificate required",
         status=None, refusal=("CERTIFICATE_REQUIRED", "certificate required")),
    Case("TestServerBehaviour/valid tls config yml (cert from file, key inline) and tls client "
         "with RequireAnyClientCert (present certificate)",
         "tls_config_noAuth.requireanyclientcertkeyinline.good.yml", "no error",
         client={"cert": "client_selfsigned"}),
    Case("TestServerBehaviour/valid tls config yml and tls client with "
         "RequireAndVerifyClientCert (present certificate)",
         "tls_config_noAuth.requireandverifyclientcert.good.yml", "no error",
         client={"cert": "client_selfsigned"}),
    Case("TestServerBehaviour/valid tls config yml and tls client with VerifyPeerCertificate "
         "(present good SAN DNS entry)", "web_config_auth_client_san.good.yaml", "no error",
         client={"cert": "client2_selfsigned"}),
    Case("TestServerBehaviour/valid tls config yml and tls client with VerifyPeerCertificate "
         "(present invalid SAN DNS entries)", "web_config_auth_client_san.bad.yaml",
         "error: bad certificate (the handshake fails)", client={"cert": "client2_selfsigned"},
         status=None, refusal=("HANDSHAKE_FAILURE", "handshake failure", "BAD_CERTIFICATE",
                               "bad certificate")),
    # Not in a toolkit test: its clientCAs_missing file, RequireAndVerifyClientCert against
    # the system's roots, which do not hold the self-signed client certificate.
    Case("web/testdata/web_config_auth_clientCAs_missing.bad.yml (no test uses it)",
         "web_config_auth_clientCAs_missing.bad.yml", "loads; unknown client CA refused",
         client={"cert": "client_selfsigned"}, status=None,
         refusal=("UNKNOWN_CA", "unknown ca", "CERTIFICATE_UNKNOWN", "certificate unknown")),
    Case("TestServerBehaviour/valid rate limiter (no rate limiter set up) that doesn't block",
         "web_config_rate_limiter_nonblocking.yaml", "no error in 11 requests", tls=False,
         requests=11),
    Case("TestServerBehaviour/valid rate limiter with an interval of one second",
         "web_config_rate_limiter_one_second.yaml", "error: Too Many Requests (burst 0)",
         tls=False, status=429),
    Case("TestUsers/without basic auth", "web_config_users_noTLS.good.yml",
         "error: Unauthorized", tls=False, status=401),
    Case("TestUsers/with correct basic auth", "web_config_users_noTLS.good.yml", "no error",
         tls=False, headers=auth("dave", "dave123")),
    Case("TestUsers/without basic auth and TLS", "web_config_users.good.yml",
         "error: Unauthorized", status=401),
    Case("TestUsers/with correct basic auth and TLS", "web_config_users.good.yml", "no error",
         headers=auth("dave", "dave123")),
    Case("TestUsers/with another correct basic auth and TLS", "web_config_users.good.yml",
         "no error", headers=auth("carol", "carol123")),
    Case("TestUsers/with bad password and TLS", "web_config_users.good.yml",
         "error: Unauthorized", headers=auth("dave", "bad"), status=401),
    Case("TestUsers/with bad username and TLS", "web_config_users.good.yml",
         "error: Unauthorized", headers=auth("nonexistent", "nonexistent"), status=401),
    # Not in the toolkit's table: its costliest user (cost 18 there) logs in too.
    Case("TestUsers/with the costliest user and TLS", "web_config_users.good.yml", "no error",
         headers=auth("bob", "bob123")),
]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.go_test for c in CASES])
async def test_server_behaviour(kit: Kit, case: Case) -> None:
    """TestServerBehaviour and TestUsers: one request per case (or `requests`), as Go's."""
    async with serving(kit, case.toolkit) as port:
        context = kit.client(**case.client) if case.tls else None
        for _ in range(case.requests):
            if case.status is None:
                with pytest.raises(RefusedError) as caught:
                    await fetch(port, context, case.headers)
                assert any(w in str(caught.value) for w in case.refusal), (case.go_expects,
                                                                          caught.value)
                return
            reply = await fetch(port, context, case.headers)
            assert reply.status == case.status, case.go_expects
            if case.cipher:
                assert reply.cipher == case.cipher, case.go_expects
            if case.toolkit == "web_config_headers.good.yml":
                assert reply.headers["X-Frame-Options"] == "deny"
                assert reply.headers["Content-Security-Policy"].startswith("default-src")


async def test_config_reloading(kit: Kit, tmp_path: Path) -> None:
    """TestConfigReloading: served with good.blocking (RequireAndVerifyClientCert, no client
    CA: the client without a certificate is refused), then the file's content swapped for
    noAuth.good's: the same client is admitted, without a restart."""
    path = tmp_path / "web.yml"
    for name in ("server.crt", "server.key"):
        shutil.copy(kit.dir / name, tmp_path / name)
    path.write_text((kit.dir / "web_config_noAuth.good.blocking.yml").read_text())
    async with serving(kit, str(path)) as port:
        with pytest.raises(RefusedError):
            await fetch(port, kit.client())
        path.write_text((kit.dir / "web_config_noAuth.good.yml").read_text())
        assert (await fetch(port, kit.client())).status == 200


@pytest.mark.parametrize(("name", "tls", "enabled"), [
    ("empty config", {}, False),
    ("only non-enabling fields set", {"min_version": "TLS12",
                                      "prefer_server_cipher_suites": True}, False),
    ("cert_file and key_file set", {"cert_file": "server.crt", "key_file": "server.key"}, True),
    ("inline cert and key set", {"cert": "cert", "key": "key"}, True),
    ("only client CA file set", {"client_ca_file": "client_ca.crt"}, True),
    ("only client auth type set", {"client_auth_type": "RequireAndVerifyClientCert"}, True),
])
def test_tls_config_is_enabled(name: str, tls: dict[str, Any], enabled: bool) -> None:
    """TestTLSConfigIsEnabled: which keys switch TLS on (an incomplete TLS section is then an
    error naming the missing key, never plain HTTP)."""
    assert tls_on(tls) is enabled, name


def tls_on(tls: dict[str, Any]) -> bool:
    """TLS is on: the section is used, or refused as incomplete (never plain HTTP then)."""
    try:
        return parse_web_config({"tls_server_config": tls}).tls is not None
    except ConfigError as exc:
        return exc.key.startswith("web_config.tls_server_config.")


@pytest.mark.parametrize(("toolkit", "key"), [
    ("web_config_noAuth_allCurves.good.yml", "curve_preferences"),
    ("tls_config_noAuth.requireanyclientcert.good.yml", "client_auth_type"),
    ("web_config_auth_client_san.good.yaml", "client_allowed_sans"),
])
def test_without_reach_into_openssl_these_are_refused_not_served_differently(
        kit: Kit, toolkit: str, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented limitation: on a Python whose SSLContext tlsnative cannot prove, the
    settings that need it stop the start with the key named."""
    monkeypatch.setattr(tlsnative, "_LIB", None)
    with pytest.raises(ConfigError) as caught:
        start(kit.dir / toolkit)
    assert caught.value.key == f"web_config.tls_server_config.{key}", caught.value
    assert "not reachable" in caught.value.message or "cannot be honoured" in (
        caught.value.message), caught.value
