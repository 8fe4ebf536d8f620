"""The web config file: the exporter-toolkit format read with the toolkit's meanings.

A file written for another Prometheus exporter is accepted unchanged; every key this server
cannot honour the same way is refused with an error naming it.
"""

from __future__ import annotations

import base64
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from exporter.cli import EXIT_CONFIG, main
from exporter.config import load_settings
from exporter.errors import ConfigError
from exporter.webconfig import load_web_config, parse_web_config, server_context
from exporter.webgate import WebGate
from tests.certs import Certs
from tests.test_tls import certs  # noqa: F401  (the module's certificate fixture)

#: The shape of exporter-toolkit's documented sample (docs/web-config.yml): TLS files, two
#: users with `$2y$` hashes as htpasswd writes them (of carol-password and dave-password),
#: and a rate limit. Written for this test.
TOOLKIT_SAMPLE = """\
# TLS and basic authentication, as for any exporter built on the exporter toolkit.
tls_server_config:
  cert_file: server.crt
  key_file: server.key

# Users and their bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n').
basic_auth_users:
  carol: $2y$10$s1G1K0Wl5YtSPVjJTGhGueuoYByHONmIbKP6KhtDSc7eARs4kfCYK
  dave: $2y$10$HvXcDWB.fbSpo0dI8A/99OkGCpPXuXGC1DrPCoeQPPUufPiIrEjqe

# A token bucket over all requests.
rate_limit:
  interval: "1s"
  burst: 20
"""


async def test_a_toolkit_web_config_is_accepted_unchanged(
        certs: Certs, tmp_path: Path) -> None:  # noqa: F811
    # Relative paths, as in the toolkit's sample: next to the web config file, not the cwd.
    shutil.copy(certs.pem("server"), tmp_path / "server.crt")
    shutil.copy(certs.key("server"), tmp_path / "server.key")
    path = tmp_path / "web-config.yml"
    path.write_text(TOOLKIT_SAMPLE)
    gate = WebGate(str(path))
    assert gate.ssl_context is not None and gate.credentials.enabled
    assert sorted(gate.config.users) == ["carol", "dave"]
    assert (gate.config.rate_limit.interval, gate.config.rate_limit.burst) == (1.0, 20)
    assert gate.config.files == (str(path), str(tmp_path / "server.crt"),
                                 str(tmp_path / "server.key"))
    carol = "Basic " + base64.b64encode(b"carol:carol-password").decode()
    assert await gate.credentials.check(carol)  # `$2y$` hashes verify


def test_every_key_of_the_format(certs: Certs) -> None:  # noqa: F811
    config = parse_web_config({
        "tls_server_config": {
            "cert_file": certs.pem("server"), "key_file": certs.key("server"),
            "client_ca_file": certs.pem("ca"), "client_auth_type": "RequireAndVerifyClientCert",
            "client_allowed_sans": ["prometheus.test"],
            "min_version": "TLS12", "max_version": "TLS13",
            "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                              "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"],
            "prefer_server_cipher_suites": False, "curve_preferences": ["CurveP256"]},
        "http_server_config": {"http2": True, "headers": {
            "Content-Security-Policy": "default-src 'none'", "X-Frame-Options": "SameOrigin",
            "X-Content-Type-Options": "nosniff", "X-XSS-Protection": "1; mode=block",
            "Strict-Transport-Security": "max-age=63072000"}},
        "basic_auth_users": {},
        "rate_limit": {"interval": "1m30s", "burst": 5},
    })
    assert config.tls is not None
    context = server_context(config.tls)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"}
    assert len(config.headers) == 5 and config.rate_limit.interval == 90.0
    assert not config.users  # empty: no authentication


def test_inline_certificate_key_and_client_ca(certs: Certs) -> None:  # noqa: F811
    config = parse_web_config({"tls_server_config": {
        "cert": Path(certs.pem("server")).read_text(), "key": Path(certs.key("server")).read_text(),
        "client_ca": Path(certs.pem("ca")).read_text(),
        "client_auth_type": "VerifyClientCertIfGiven"}})
    assert config.tls is not None and config.tls.files == ()
    assert server_context(config.tls).verify_mode == ssl.CERT_OPTIONAL
    assert "PRIVATE KEY" not in repr(config)  # the key never shows in a repr or a log


def test_no_tls_section_means_plain_http() -> None:
    assert parse_web_config({"basic_auth_users": None}).tls is None
    assert parse_web_config(None).tls is None
    # As in the toolkit: without a certificate, key, CA or client auth type, TLS stays off.
    assert parse_web_config({"tls_server_config": {"min_version": "TLS13"}}).tls is None


TLS = {"cert_file": "server.pem", "key_file": "server.key"}


@pytest.mark.parametrize(("data", "key", "words"), [
    ({"web_listen": 1}, "web_config.web_listen", "unknown setting"),
    ({"ip_socket_config": {"dscp": 46}}, "web_config.ip_socket_config", "not supported"),
    ({"tls_server_config": {**TLS, "ca_file": "x"}}, "web_config.tls_server_config.ca_file",
     "unknown setting"),
    ({"tls_server_config": {"key_file": "k"}}, "web_config.tls_server_config.cert_file",
     "is required"),
    ({"tls_server_config": {"cert_file": "c"}}, "web_config.tls_server_config.key_file",
     "is required"),
    ({"tls_server_config": {**TLS, "cert": "PEM"}}, "web_config.tls_server_config.cert",
     "not both"),
    ({"tls_server_config": {**TLS, "client_auth_type": "Always"}},
     "web_config.tls_server_config.client_auth_type", "must be one of"),
    ({"tls_server_config": {**TLS, "client_allowed_sans": ["a"]}},
     "web_config.tls_server_config.client_allowed_sans", "asks for a certificate"),
    ({"tls_server_config": {**TLS, "client_auth_type": "RequireAndVerifyClientCert",
                            "client_allowed_sans": ["spiffe://x/y"]}},
     "web_config.tls_server_config.client_allowed_sans", "URI SANs are not supported"),
    ({"tls_server_config": {**TLS, "min_version": "SSL3"}},
     "web_config.tls_server_config.min_version", "must be one of"),
    ({"tls_server_config": {**TLS, "min_version": "TLS13", "max_version": "TLS12"}},
     "web_config.tls_server_config.max_version", "below"),
    ({"tls_server_config": {**TLS, "cipher_suites": ["AES128-SHA"]}},
     "web_config.tls_server_config.cipher_suites", "unknown cipher"),
    # Go's InsecureCipherSuites(): OpenSSL has it, the toolkit refuses the name.
    ({"tls_server_config": {**TLS, "cipher_suites": ["TLS_RSA_WITH_AES_128_CBC_SHA256"]}},
     "web_config.tls_server_config.cipher_suites", "unknown cipher"),
    ({"tls_server_config": {**TLS, "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
     "web_config.tls_server_config.cipher_suites", "HTTP/2-required"),
    ({"tls_server_config": {**TLS, "curve_preferences": ["P256"]}},
     "web_config.tls_server_config.curve_preferences", "is not one of"),
    ({"http_server_config": {"headers": {"Server": "x"}}},
     "web_config.http_server_config.headers.Server", "cannot be set"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
     "web_config.http_server_config.headers.X-Frame-Options", "deny, sameorigin"),
    ({"http_server_config": {"http2": "maybe"}}, "web_config.http_server_config.http2",
     "true or false"),
    ({"basic_auth_users": {"alice": "secret"}}, "web_config.basic_auth_users.alice",
     "bcrypt hash"),
    ({"basic_auth_users": ["alice"]}, "web_config.basic_auth_users", "mapping"),
    ({"rate_limit": {"interval": "fast", "burst": 1}}, "web_config.rate_limit.interval",
     "duration"),
])
def test_unsupported_or_bad_keys_are_named(data: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_web_config(data)
    assert caught.value.key == key and words in caught.value.message, caught.value


@pytest.mark.parametrize(("tls", "key", "words"), [
    ({"cert_file": "missing.pem", "key_file": "server.key"}, "cert_file", "No such file"),
    ({"cert_file": "server.pem", "key_file": "client.key"}, "key_file", "MISMATCH"),
    ({"cert_file": "server.key", "key_file": "server.key"}, "cert_file", "server.key"),
    ({"cert_file": "server.pem", "key_file": "ca.pem"}, "key_file", "ca.pem"),
    ({"cert_file": "server.pem", "key_file": "server.key", "client_ca_file": "server.key",
      "client_auth_type": "RequireAndVerifyClientCert"}, "client_ca_file", "server.key"),
])
def test_unusable_files_are_named_at_start(
        certs: Certs, tls: dict[str, str], key: str, words: str) -> None:  # noqa: F811
    paths = {k: str(certs.dir / v) if k.endswith("_file") else v for k, v in tls.items()}
    config = parse_web_config({"tls_server_config": paths})
    assert config.tls is not None
    with pytest.raises(ConfigError) as caught:
        server_context(config.tls)
    assert caught.value.key == f"web_config.tls_server_config.{key}"
    assert words in caught.value.message


def test_unreadable_or_invalid_file_names_web_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_web_config(str(tmp_path / "absent.yml"))
    assert caught.value.key == "web_config" and "cannot read" in caught.value.message
    bad = tmp_path / "bad.yml"
    bad.write_text("tls_server_config: [unclosed")
    with pytest.raises(ConfigError) as caught:
        load_web_config(str(bad))
    assert caught.value.key == "web_config" and "not valid YAML" in caught.value.message


def test_main_config_keys_of_the_endpoint(tmp_path: Path) -> None:
    base = {"emqx_url": "http://emqx:18083", "api_key": "key", "api_secret": "secret"}
    settings = load_settings(base, {}, None)
    assert (settings.web_config, settings.open_paths, settings.reload_endpoint) == (
        None, ("/-/healthy",), False)
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"web_config": "/etc/web.yml", "reload_endpoint": True,
                                      "open_paths": ["/-/healthy", "/-/ready"]}))
    settings = load_settings(base, {}, str(config))
    assert settings.web_config == "/etc/web.yml" and settings.reload_endpoint
    assert settings.open_paths == ("/-/healthy", "/-/ready")
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "open_paths": ["/metrics"]}, {}, None)
    assert caught.value.key == "open_paths"


def test_run_exits_2_naming_the_key_of_a_bad_web_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": "hunter2"}}))
    try:
        code = main(["run", "--emqx-url", "http://127.0.0.1:9", "--listen", "127.0.0.1:0",
                     "--api-key", "key", "--api-secret", "secret", "--web-config", str(path)])
    finally:
        structlog.reset_defaults()  # `run` pointed the logs at this test's captured stderr
    assert code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "web_config.basic_auth_users.prometheus: must be a bcrypt hash" in err
    assert "hunter2" not in err  # what was there is a password, not a hash: never echoed
