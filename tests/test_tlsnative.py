"""The OpenSSL settings Python's ssl module lacks (exporter/tlsnative.py), as a unit.

What it promises: the SSL_CTX pointer is proved before use, and refused with
NativeUnavailableError (nothing written) when it cannot be; `set_groups` sets the key
exchange groups in order; `check_client_certificates` accepts any certificate when the chain
is not to be verified, and demands one of the allowed SANs (DNS, email, IP) compared as Go
does: no wildcard standing in for a name, no subject CN (DNS names without regard to case,
the difference README states). Each setting is observed through a
real TLS handshake on loopback (a blocking server in a thread, one exchange), with
certificates made for this run by tests/certs.py.
"""

from __future__ import annotations

import gc
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from exporter import tlsnative
from exporter.tlsnative import NativeUnavailableError, check_client_certificates, set_groups
from tests.certs import Certs, issue, make_ca, require_openssl

CLIENT_AUTH = "extendedKeyUsage=clientAuth\n"
URI = "spiffe://cluster.local/ns/monitoring/sa/prometheus"


@dataclass(frozen=True)
class Pki:
    ours: Certs  # ca; server (127.0.0.1); clients named by their SANs
    stranger: Certs  # a CA nobody trusts, and a client certificate it signed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_openssl()
    ours = tmp_path_factory.mktemp("native")
    make_ca(ours)
    issue(ours, "server", "/CN=tlsnative server",
          "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for name, subject, sans in (
            ("dns", "/CN=dns", "DNS:prometheus.test"),
            ("other", "/CN=other", "DNS:grafana.test"),
            ("wildcard", "/CN=wildcard", "DNS:*.scrapers.test"),
            ("email", "/CN=email", "email:prom@example.test"),
            ("ip", "/CN=ip", "IP:10.1.2.3,IP:2001:db8::7"),
            ("uri", "/CN=uri", f"URI:{URI}"),
            ("cn_only", "/CN=prometheus.test", None)):
        issue(ours, name, subject, (f"subjectAltName={sans}\n" if sans else "") + CLIENT_AUTH)
    stranger = tmp_path_factory.mktemp("stranger")
    make_ca(stranger, "a CA nobody here trusts")
    issue(stranger, "dns", "/CN=dns", "subjectAltName=DNS:prometheus.test\n" + CLIENT_AUTH)
    return Pki(Certs(ours), Certs(stranger))


def server_context(pki: Pki, mode: ssl.VerifyMode = ssl.CERT_NONE, *, client_ca: bool = False,
                   tls13: bool = True) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.ours.pem("server"), pki.ours.key("server"))
    if tls13:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    if client_ca:
        context.load_verify_locations(pki.ours.pem("ca"))
    context.verify_mode = mode
    return context


def client_context(pki: Pki, cert: str | None = None, *, issuer: Certs | None = None,
                   curve: str | None = None,
                   max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ours.pem("ca"))
    if cert is not None:
        signed = issuer or pki.ours
        context.load_cert_chain(signed.pem(cert), signed.key(cert))
    if curve is not None:
        context.set_ecdh_curve(curve)
    if max_version is not None:
        context.maximum_version = max_version
    return context


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # what each side reported when it failed

    def __bool__(self) -> bool:
        return self.ok


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> Outcome:
    """One TLS connection on loopback and one exchange; ok when the reply came back."""
    errors: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server.wrap_socket(conn, server_side=True) as tls:
                    if tls.recv(4) == b"ping":
                        tls.sendall(b"pong")
            except (ssl.SSLError, OSError) as exc:
                errors.append(f"server {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=serve, name="tls-test-server")
        thread.start()
        reply = b""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, (
                    client.wrap_socket(raw, server_hostname="127.0.0.1")) as tls:
                tls.sendall(b"ping")
                reply = tls.recv(4)
        except (ssl.SSLError, OSError) as exc:
            errors.append(f"client {type(exc).__name__}: {exc}")
        finally:
            thread.join(20)
    assert not thread.is_alive()
    return Outcome(reply == b"pong" and not errors, "; ".join(errors) or f"reply {reply!r}")


# --- the pointer, proved.

def _contexts() -> list[tuple[str, ssl.SSLContext]]:
    out: list[tuple[str, ssl.SSLContext]] = []
    for mode in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = mode
        out.append((f"server {mode.name}", context))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    out.append(("client CERT_NONE", client))
    out.append(("default client", ssl.create_default_context()))
    tuned = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tuned.options |= ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE
    out.append(("server with options", tuned))
    return out


@pytest.mark.parametrize(("name", "context"), _contexts(), ids=[n for n, _ in _contexts()])
def test_the_pointer_reads_back_what_python_set(name: str, context: ssl.SSLContext) -> None:
    pointer = tlsnative._pointer(context)
    assert pointer > 0, name
    # It is the live SSL_CTX, not a copy: a change made through Python shows through it.
    context.options ^= ssl.OP_NO_COMPRESSION
    assert tlsnative._LIB.SSL_CTX_get_options(pointer) == int(context.options)
    assert tlsnative._pointer(context) == pointer


def test_each_context_has_its_own_pointer() -> None:
    first, second = (ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) for _ in range(2))
    assert tlsnative._pointer(first) != tlsnative._pointer(second)


def test_without_libssl_both_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tlsnative, "_LIB", None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(NativeUnavailableError, match="libssl is not reachable"):
        set_groups(context, ["P-256"])
    with pytest.raises(NativeUnavailableError, match="libssl is not reachable"):
        check_client_certificates(context, verify_chain=False, allowed_sans=frozenset())


class LyingLibrary:
    """The real library, but one readback disagrees (as another Python's layout would);
    records whether anything was written."""

    def __init__(self, real: Any, lie: str) -> None:
        self.real = real
        self.lie = lie
        self.writes: list[str] = []

    def SSL_CTX_get_verify_mode(self, pointer: int) -> int:  # noqa: N802 (OpenSSL's name)
        mode = int(self.real.SSL_CTX_get_verify_mode(pointer))
        return mode ^ 0x1 if self.lie == "verify mode" else mode

    def SSL_CTX_get_options(self, pointer: int) -> int:  # noqa: N802
        options = int(self.real.SSL_CTX_get_options(pointer))
        return options ^ 0x4000 if self.lie == "options" else options

    def __getattr__(self, name: str) -> Any:
        self.writes.append(name)
        return getattr(self.real, name)


@pytest.mark.parametrize("lie", ["verify mode", "options"])
def test_a_pointer_that_fails_the_proof_is_never_written_through(
        lie: str, monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    lying = LyingLibrary(tlsnative._LIB, lie)
    monkeypatch.setattr(tlsnative, "_LIB", lying)
    context = server_context(pki, ssl.CERT_REQUIRED, client_ca=True)
    with pytest.raises(NativeUnavailableError, match="not the expected one"):
        set_groups(context, ["P-384"])
    with pytest.raises(NativeUnavailableError, match="not the expected one"):
        check_client_certificates(context, verify_chain=False, allowed_sans=frozenset())
    assert lying.writes == []
    monkeypatch.undo()
    # Nothing was changed: the context still wants a verified certificate, on any curve.
    assert not handshake(context, client_context(pki, "dns", issuer=pki.stranger))
    assert handshake(context, client_context(pki, "dns", curve="prime256v1"))


# --- set_groups.

@pytest.mark.parametrize(("groups", "client_curve", "admitted"), [
    (["P-384"], "secp384r1", True),
    (["P-384"], "prime256v1", False),
    (["P-384"], None, True),  # a default client offers P-384 among others
    (["X25519", "P-521"], "secp521r1", True),  # a list Python's set_ecdh_curve cannot set
    (["X25519", "P-521"], "prime256v1", False),
    (["X25519", "P-521"], "secp384r1", False),
    (["P-256", "P-384", "P-521", "X25519"], "secp384r1", True),
])
def test_groups_are_what_the_handshake_can_agree_on(
        pki: Pki, groups: list[str], client_curve: str | None, admitted: bool) -> None:
    server = server_context(pki)
    set_groups(server, groups)
    outcome = handshake(server, client_context(pki, curve=client_curve))
    assert outcome.ok is admitted, outcome.detail
    if not admitted:  # the server found no group in common with the client's key share
        assert "server SSLError: [SSL: NO_SUITABLE_KEY_SHARE]" in outcome.detail, outcome.detail


def test_unknown_groups_raise_and_leave_the_context_as_it_was(pki: Pki) -> None:
    server = server_context(pki)
    set_groups(server, ["P-384"])
    for bad in (["P-257"], ["P-384", "CurveP384"], [""]):
        with pytest.raises(ValueError, match="OpenSSL refused the groups"):
            set_groups(server, bad)
    assert handshake(server, client_context(pki, curve="secp384r1"))
    assert not handshake(server, client_context(pki, curve="prime256v1"))


# --- check_client_certificates: any certificate.

def test_require_any_certificate_admits_a_strangers_but_not_none(pki: Pki) -> None:
    server = server_context(pki, ssl.CERT_REQUIRED)  # no client CA at all
    refused = handshake(server, client_context(pki, "dns", issuer=pki.stranger))
    assert not refused, "without the check the stranger's chain is refused"
    assert "unable to get local issuer certificate" in refused.detail, refused.detail
    check_client_certificates(server, verify_chain=False, allowed_sans=frozenset())
    assert server.verify_mode == ssl.CERT_REQUIRED  # kept
    assert handshake(server, client_context(pki, "dns", issuer=pki.stranger))
    assert handshake(server, client_context(pki, "dns"))
    none = handshake(server, client_context(pki))
    assert not none and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in none.detail, none.detail


def test_request_a_certificate_admits_none_and_a_strangers(pki: Pki) -> None:
    server = server_context(pki, ssl.CERT_OPTIONAL)
    check_client_certificates(server, verify_chain=False, allowed_sans=frozenset())
    assert server.verify_mode == ssl.CERT_OPTIONAL
    assert handshake(server, client_context(pki))
    assert handshake(server, client_context(pki, "dns", issuer=pki.stranger))


# --- check_client_certificates: allowed SANs.

@pytest.mark.parametrize(("cert", "allowed", "admitted"), [
    ("dns", {"prometheus.test"}, True),
    ("dns", {"grafana.test", "prometheus.test", "10.1.2.3"}, True),  # one of them
    ("other", {"prometheus.test"}, False),
    ("dns", {"prometheus"}, False),  # no partial match
    ("dns", {"test"}, False),
    ("wildcard", {"a.scrapers.test"}, False),  # a wildcard SAN stands in for no name
    ("wildcard", {"*.scrapers.test"}, True),  # Go compares the strings: equal
    ("cn_only", {"prometheus.test"}, False),  # the subject's CN is no SAN
    ("email", {"prom@example.test"}, True),
    ("email", {"other@example.test"}, False),
    ("email", {"example.test"}, False),
    ("ip", {"10.1.2.3"}, True),
    ("ip", {"2001:db8::7"}, True),
    ("ip", {"10.1.2.4"}, False),
    ("dns", {"10.1.2.3"}, False),
    ("dns", {"Prometheus.TEST"}, True),  # without regard to case, where Go compares bytes
    # URI SANs are not compared (the web config refuses them in the list at load, README):
    # a URI SAN stands in for nothing, and a URI never matches a DNS name.
    ("uri", {URI}, False),
    ("uri", {"cluster.local"}, False),
])
def test_allowed_sans_as_go_compares_them(pki: Pki, cert: str, allowed: set[str],
                                          admitted: bool) -> None:
    server = server_context(pki, ssl.CERT_REQUIRED, client_ca=True)
    check_client_certificates(server, verify_chain=True, allowed_sans=frozenset(allowed))
    outcome = handshake(server, client_context(pki, cert))
    assert outcome.ok is admitted, outcome.detail
    if not admitted:  # the chain is good: refused for its names, in the handshake
        assert "application verification failure" in outcome.detail, outcome.detail


@pytest.mark.parametrize("tls13", [True, False], ids=["TLS1.3", "TLS1.2"])
def test_allowed_sans_keep_the_chain_check_and_refuse_in_the_handshake(
        pki: Pki, tls13: bool) -> None:
    server = server_context(pki, ssl.CERT_REQUIRED, client_ca=True, tls13=tls13)
    check_client_certificates(server, verify_chain=True,
                              allowed_sans=frozenset({"prometheus.test"}))
    top = None if tls13 else ssl.TLSVersion.TLSv1_2
    assert handshake(server, client_context(pki, "dns", max_version=top))
    # The right SAN from the wrong CA, the wrong SAN from the right CA, no certificate.
    for client in (client_context(pki, "dns", issuer=pki.stranger, max_version=top),
                   client_context(pki, "other", max_version=top),
                   client_context(pki, max_version=top)):
        outcome = handshake(server, client)
        assert not outcome and "server SSL" in outcome.detail, outcome.detail  # refused there


def test_allowed_sans_with_any_certificate_skip_the_chain_not_the_names(pki: Pki) -> None:
    server = server_context(pki, ssl.CERT_REQUIRED)
    check_client_certificates(server, verify_chain=False,
                              allowed_sans=frozenset({"prometheus.test"}))
    assert handshake(server, client_context(pki, "dns", issuer=pki.stranger))
    assert not handshake(server, client_context(pki, "other"))


def test_setting_the_verify_mode_again_keeps_the_check(pki: Pki) -> None:
    server = server_context(pki, ssl.CERT_REQUIRED, client_ca=True)
    check_client_certificates(server, verify_chain=True,
                              allowed_sans=frozenset({"prometheus.test"}))
    server.verify_mode = ssl.CERT_REQUIRED  # Python passes the callback it finds on
    assert handshake(server, client_context(pki, "dns"))
    assert not handshake(server, client_context(pki, "other"))


def test_a_failure_inside_the_check_refuses_the_certificate(
        pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cert: int, name: str) -> bool:
        raise RuntimeError("a bug in the SAN comparison")

    monkeypatch.setattr(tlsnative, "_matches", broken)
    server = server_context(pki, ssl.CERT_REQUIRED, client_ca=True)
    check_client_certificates(server, verify_chain=True,
                              allowed_sans=frozenset({"prometheus.test"}))
    assert not handshake(server, client_context(pki, "dns"))


def test_the_check_lives_as_long_as_its_context(pki: Pki) -> None:
    """OpenSSL holds only a C pointer to the callback: the context keeps it alive."""
    def configured() -> ssl.SSLContext:
        server = server_context(pki, ssl.CERT_REQUIRED, client_ca=True)
        check_client_certificates(server, verify_chain=True,
                                  allowed_sans=frozenset({"prometheus.test"}))
        return server

    server = configured()
    gc.collect()
    for _ in range(3):
        assert handshake(server, client_context(pki, "dns"))
        assert not handshake(server, client_context(pki, "other"))
