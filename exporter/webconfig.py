"""The web configuration file of Prometheus exporters (exporter-toolkit format), parsed and checked.

The same file an operator already has for node_exporter works here unchanged:

    tls_server_config: {cert_file: server.crt, key_file: server.key}
    basic_auth_users: {prometheus: $2y$10$...}

Every key of the format is understood with the toolkit's meaning; what this server cannot do
the same way is a ConfigError naming the key, never silently ignored.
"""

from __future__ import annotations

import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from exporter import tlsnative
from exporter.config import read_yaml
from exporter.errors import ConfigError
from exporter.schema import Schema, Text, decode
from exporter.webauth import BCRYPT_HASH

#: Go's names of TLS versions and Python's.
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

#: Go's client auth policies: (does the handshake ask for a certificate and fail without one,
#: is a given certificate checked against the client CA). Go asks for a certificate only when
#: the policy is not NoClientCert; RequestClientCert and RequireAnyClientCert take any.
CLIENT_AUTH: dict[str, tuple[ssl.VerifyMode, bool]] = {
    "NoClientCert": (ssl.CERT_NONE, False),
    "RequestClientCert": (ssl.CERT_OPTIONAL, False),
    "RequireAnyClientCert": (ssl.CERT_REQUIRED, False),
    "RequireClientCert": (ssl.CERT_REQUIRED, False),  # the toolkit's old name of the above
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
}

#: Go's tls.CipherSuites() (the suites Go calls secure; the toolkit accepts no other name)
#: and OpenSSL's names. Go ignores TLS 1.3 suites in the list (all three are always on, as in
#: OpenSSL), so they map to nothing.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": "",
    "TLS_AES_256_GCM_SHA384": "",
    "TLS_CHACHA20_POLY1305_SHA256": "",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
#: With HTTP/2 on and a TLS 1.2 cipher list, Go's http2 demands one of these (RFC 7540 §9.2.2)
#: and refuses to serve otherwise; the toolkit's noHTTP2Cipher.bad file is refused for it.
HTTP2_REQUIRED_SUITES = ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                         "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")

#: Go's curve names and OpenSSL's group names.
CURVES = {"CurveP256": "P-256", "CurveP384": "P-384", "CurveP521": "P-521", "X25519": "X25519"}

#: The response headers the toolkit lets a user set, with the values it accepts (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}

#: Toolkit keys this server does not implement, and why.
_UNSUPPORTED = {"ip_socket_config": "IP TTL and DSCP of the listening socket are not supported"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class TlsServerConfig:
    """`tls_server_config`: where the server's identity and the client CA come from, and policy."""

    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: frozenset[str] = frozenset()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curves: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """The files this configuration reads, watched for changes on disk."""
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit`: a token bucket over all requests; `interval` 0 switches it off.

    As in Go's rate.Limiter, `burst` 0 with an interval admits nothing (every request 429).
    """

    interval: float = 0.0
    burst: int = 0


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The whole file, checked; the default (no file) serves plain HTTP to everyone."""

    path: str | None = None
    tls: TlsServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: user -> bcrypt hash; empty: no authentication.
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    rate_limit: RateLimit = field(default_factory=RateLimit)

    @property
    def files(self) -> tuple[str, ...]:
        return ((self.path,) if self.path else ()) + (self.tls.files if self.tls else ())


class _TlsSchema(Schema, frozen=True):
    cert_file: Text | None = None
    key_file: Text | None = None
    cert: Text | None = None
    key: Text | None = None
    client_ca_file: Text | None = None
    client_ca: Text | None = None
    client_auth_type: Text | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: Text = Text("TLS12")
    max_version: Text = Text("TLS13")
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()


class _HttpSchema(Schema, frozen=True):
    # aiohttp speaks HTTP/1.1 only: with http2 true (the default) a client offering HTTP/2
    # by ALPN is answered in HTTP/1.1, as a Go server with http2 false would.
    http2: bool = True
    headers: dict[str, Text] = msgspec.field(default_factory=dict)


class _RateLimitSchema(Schema, frozen=True):
    interval: str | int | float = 0  # a Go duration; a plain 0 too
    burst: Annotated[int, Meta(ge=0, le=2**53)] = 0


class _WebSchema(Schema, frozen=True):
    """The exporter-toolkit file; toolkit keys this server cannot honour are refused first."""

    tls_server_config: _TlsSchema = _TlsSchema()
    http_server_config: _HttpSchema = _HttpSchema()
    basic_auth_users: dict[str, Any] = msgspec.field(default_factory=dict)
    rate_limit: _RateLimitSchema = _RateLimitSchema()


def _duration(value: str | int | float, key: str) -> float:
    """A Go duration such as `1s`, `250ms` or `1m30s`; a plain 0 too."""
    if value == 0 or value == "0":
        return 0.0
    text = str(value).strip()
    if not isinstance(value, str) or not text or _DURATION.sub("", text):
        raise ConfigError(key, f"must be a duration such as 1s or 250ms, got {value!r}")
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


def _tls(tls: _TlsSchema, directory: Path, http2: bool) -> TlsServerConfig | None:
    where = "web_config.tls_server_config"
    if not any((tls.cert, tls.key, tls.client_ca, tls.cert_file, tls.key_file,
                tls.client_ca_file, tls.client_auth_type)):
        return None  # as in the toolkit: TLS is off unless something of it is given

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{where}.{key}", message)

    for inline, path in (("cert", "cert_file"), ("key", "key_file"),
                         ("client_ca", "client_ca_file")):
        if getattr(tls, inline) and getattr(tls, path):
            raise fail(inline, f"give either {inline} or {path}, not both")
    if not (tls.cert or tls.cert_file):
        raise fail("cert_file", "is required (or cert, inline)")
    if not (tls.key or tls.key_file):
        raise fail("key_file", "is required (or key, inline)")
    auth = tls.client_auth_type or "NoClientCert"
    if auth not in CLIENT_AUTH:
        raise fail("client_auth_type", f"invalid ClientAuth: must be one of "
                                       f"{', '.join(CLIENT_AUTH)}; got {auth!r}")
    if tls.client_allowed_sans and auth == "NoClientCert":
        # Go asks for no certificate then and so ignores the list; refused rather than ignored.
        raise fail("client_allowed_sans", "needs a client_auth_type that asks for a "
                   "certificate, e.g. RequireAndVerifyClientCert")
    for name in tls.client_allowed_sans:
        if "://" in name:
            raise fail("client_allowed_sans", f"{name!r}: URI SANs are not supported; list "
                       "DNS names, email or IP addresses")
    for name in ("min_version", "max_version"):
        if getattr(tls, name) not in TLS_VERSIONS:
            raise fail(name, f"unknown TLS version: must be one of {', '.join(TLS_VERSIONS)}; "
                             f"got {getattr(tls, name)!r}")
    if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        raise fail("max_version", f"{tls.max_version} is below min_version {tls.min_version}")
    for suite in tls.cipher_suites:
        if suite not in CIPHER_SUITES:
            raise fail("cipher_suites", f"unknown cipher: {suite!r} is not one of Go's "
                       "tls.CipherSuites() (e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")
    if (http2 and tls.cipher_suites and tls.min_version != "TLS13"
            and not set(tls.cipher_suites) & set(HTTP2_REQUIRED_SUITES)):
        raise fail("cipher_suites", "TLSConfig.CipherSuites is missing an HTTP/2-required "
                   f"AES_128_GCM_SHA256 cipher (need {' or '.join(HTTP2_REQUIRED_SUITES)}), "
                   "or set http_server_config.http2: false")
    for curve in tls.curve_preferences:
        if curve not in CURVES:
            raise fail("curve_preferences", f"unknown curve: {curve!r} is not one of "
                                            f"{', '.join(CURVES)}")
    # A list naming only TLS 1.3 suites leaves TLS 1.2 without any, as in Go: a TLS 1.2
    # handshake fails, so TLS 1.3 is the lowest version (none at all when max_version is 1.2).
    min_version: str = tls.min_version
    if tls.cipher_suites and not any(CIPHER_SUITES[s] for s in tls.cipher_suites):
        min_version = "TLS13"

    def file(path: str | None) -> str | None:
        """As in the toolkit, a relative path is relative to the web config's directory."""
        return str(directory / path) if path else None

    return TlsServerConfig(
        cert_file=file(tls.cert_file), key_file=file(tls.key_file),
        cert=tls.cert, key=tls.key,
        client_ca_file=file(tls.client_ca_file), client_ca=tls.client_ca,
        client_auth_type=auth, client_allowed_sans=frozenset(tls.client_allowed_sans),
        min_version=min_version, max_version=tls.max_version,
        cipher_suites=tls.cipher_suites,
        prefer_server_cipher_suites=tls.prefer_server_cipher_suites,
        curves=tls.curve_preferences)


def _headers(http: _HttpSchema) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in http.headers.items():
        key = f"web_config.http_server_config.headers.{name}"
        if name not in HEADERS:
            raise ConfigError(key, f"cannot be set; settable: {', '.join(HEADERS)}")
        allowed = HEADERS[name]
        if value and allowed is not None and value.lower() not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(allowed)}; got {value!r}")
        if value:  # blank: unset, as in the toolkit
            out.append((name, str(value)))
    return tuple(out)


def _users(users: Mapping[str, Any]) -> dict[str, bytes]:
    checked = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed.encode()):
            raise ConfigError(f"web_config.basic_auth_users.{user}", "must be a bcrypt hash "
                              "($2y$10$..., see `htpasswd -nBC 10 \"\"`)")
        checked[str(user)] = hashed.encode()
    return checked


def _rate_limit(limit: _RateLimitSchema) -> RateLimit:
    return RateLimit(_duration(limit.interval, "web_config.rate_limit.interval"), limit.burst)


def parse_web_config(data: Any, path: str | None = None) -> WebConfig:
    """A checked WebConfig from the file's parsed YAML; ConfigError names the bad key."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError("web_config", "must be a mapping")
    for key, why in _UNSUPPORTED.items():
        if key in data:
            raise ConfigError(f"web_config.{key}", why)
    config = decode(data, _WebSchema, "web_config")
    directory = Path(path).parent if path else Path()
    return WebConfig(
        path=path,
        tls=_tls(config.tls_server_config, directory, config.http_server_config.http2),
        headers=_headers(config.http_server_config),
        users=_users(config.basic_auth_users),
        rate_limit=_rate_limit(config.rate_limit),
    )


def load_web_config(path: str) -> WebConfig:
    """Read, parse and check the file (server_context() then proves the TLS files usable)."""
    return parse_web_config(read_yaml(path, "web_config"), path)


def _ssl_fail(key: str, source: str, exc: Exception) -> ConfigError:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return ConfigError(f"web_config.tls_server_config.{key}", f"{source}: {reason}")


def server_context(tls: TlsServerConfig) -> ssl.SSLContext:
    """A server SSLContext with the certificate, client CA and policy; ConfigError if unusable.

    One context per configuration: each connection is handed the newest (see `webgate`), and
    its session cache and ticket keys are its own, so a session never outlives it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    suites = [s for s in tls.cipher_suites if CIPHER_SUITES[s]]
    for suite in suites:
        try:  # one unusable suite in a list OpenSSL would skip silently
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(CIPHER_SUITES[suite])
        except ssl.SSLError as exc:
            raise _ssl_fail("cipher_suites", f"{suite} is not available in this OpenSSL",
                            exc) from exc
    names = [CIPHER_SUITES[s] for s in suites]
    context.set_ciphers(":".join(names) if names else "DEFAULT")
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_identity(context, tls)
    mode, verify_chain = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_allowed_sans:
        # Go's SAN check runs on every certificate message, an empty one too, and refuses it.
        mode = ssl.CERT_REQUIRED
    context.verify_mode = mode
    ca_key = "client_ca_file" if tls.client_ca_file else "client_ca"
    ca_text = tls.client_ca
    if tls.client_ca_file:
        try:
            ca_text = Path(tls.client_ca_file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise _ssl_fail("client_ca_file", tls.client_ca_file, exc) from exc
    if ca_text is not None and tls.client_auth_type == "NoClientCert":
        # After reading the CA, as Go: a missing CA file is named as such first.
        raise ConfigError("web_config.tls_server_config.client_auth_type",
                          "client CA's have been configured without a Client Auth Policy: "
                          "set one, e.g. RequireAndVerifyClientCert")
    if ca_text is not None:
        try:
            context.load_verify_locations(cadata=ca_text)
        except ssl.SSLError as exc:
            raise _ssl_fail(ca_key, tls.client_ca_file or "inline certificate", exc) from exc
    elif verify_chain:
        # Go verifies against the system's roots when no client CA is given.
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    try:  # Python's set_ecdh_curve sets one EC curve only: no list, no X25519
        if tls.curves:
            tlsnative.set_groups(context, [CURVES[c] for c in tls.curves])
    except (ValueError, ssl.SSLError, tlsnative.NativeUnavailableError) as exc:
        raise _ssl_fail("curve_preferences", ", ".join(tls.curves), exc) from exc
    if mode != ssl.CERT_NONE and (not verify_chain or tls.client_allowed_sans):
        try:  # last: it keeps the verify mode set above
            tlsnative.check_client_certificates(context, verify_chain=verify_chain,
                                                allowed_sans=tls.client_allowed_sans)
        except tlsnative.NativeUnavailableError as exc:
            key = "client_allowed_sans" if tls.client_allowed_sans else "client_auth_type"
            raise _ssl_fail(key, "cannot be honoured by this Python's ssl module", exc) from exc
    return context


def _load_identity(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    key_name = "key_file" if tls.key_file else "key"
    cert_name = "cert_file" if tls.cert_file else "cert"
    # OpenSSL loads certificates and keys from files only: inline ones go through a private
    # temporary directory that is removed right after.
    with tempfile.TemporaryDirectory(prefix="webconfig-") as scratch:
        cert_path = tls.cert_file or _private_file(scratch, "cert.pem", tls.cert or "")
        key_path = tls.key_file or _private_file(scratch, "key.pem", tls.key or "")
        for name, path, marker in ((cert_name, cert_path, "CERTIFICATE-----"),
                                   (key_name, key_path, "PRIVATE KEY-----")):
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise _ssl_fail(name, path, exc) from exc
            # OpenSSL says only "PEM lib" for either file: name the one without its PEM block.
            if marker not in text:
                raise ConfigError(f"web_config.tls_server_config.{name}",
                                  f"{path if name.endswith('_file') else 'inline PEM'}: "
                                  f"no PEM block ending in {marker}")
        try:
            # No password: OpenSSL would otherwise prompt on the terminal for an encrypted key.
            context.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except (OSError, ssl.SSLError) as exc:
            raise _ssl_fail(key_name, (tls.key_file or "inline PEM") + " does not fit "
                            + (tls.cert_file or "the inline certificate")
                            + " or is encrypted", exc) from exc


def _private_file(directory: str, name: str, text: str) -> str:
    path = Path(directory) / name
    path.touch(mode=0o600)
    path.write_text(text, encoding="utf-8")
    return str(path)
