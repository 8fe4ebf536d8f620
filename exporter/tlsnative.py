"""The two OpenSSL settings Python's ssl module does not expose, reached through ctypes.

Go's crypto/tls lets the toolkit (1) offer several curves and (2) check the client certificate
in the handshake with its own rule: accept any certificate (RequestClientCert,
RequireAnyClientCert) or demand one of `client_allowed_sans`. Python 3.11's SSLContext sets one
curve only and has no verify callback, so both are set on the context's SSL_CTX directly:
`SSL_CTX_set1_groups_list` and `SSL_CTX_set_verify` with a callback.

The SSL_CTX pointer is read from the SSLContext object (CPython keeps it right after the
object header) and proved to be the right one before any use: OpenSSL must report the verify
mode and options Python set. If it does not (another Python build), NativeUnavailableError is raised
and the web config naming such a setting is refused; nothing is ever written through a pointer
that was not proved.
"""

from __future__ import annotations

import _ssl
import ctypes
import ipaddress
import ssl
from collections.abc import Iterable
from typing import Any

#: SSL_CTX_ctrl command of SSL_CTX_set1_groups_list (ssl.h).
_SSL_CTRL_SET_GROUPS_LIST = 92
#: SSL_VERIFY_* bits (ssl.h).
_VERIFY_PEER = 0x01
_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
#: X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT: Go compares SANs as
#: plain strings, so neither a wildcard nor the subject's CN stands in for a listed name.
_CHECK_FLAGS = 0x2 | 0x20
#: X509_V_OK and X509_V_ERR_APPLICATION_VERIFICATION (x509_vfy.h).
_V_OK = 0
_V_ERR_APPLICATION_VERIFICATION = 50

VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class NativeUnavailableError(Exception):
    """This Python's SSLContext cannot be reached safely; the setting needing it is refused."""


def _library() -> Any:
    """libssl and libcrypto as the _ssl module links them (the same copy, the same symbols)."""
    lib = ctypes.CDLL(_ssl.__file__)
    signatures: dict[str, tuple[list[Any], Any]] = {
        "SSL_CTX_get_verify_mode": ([ctypes.c_void_p], ctypes.c_int),
        "SSL_CTX_get_options": ([ctypes.c_void_p], ctypes.c_uint64),
        "SSL_CTX_ctrl": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p],
                         ctypes.c_long),
        "SSL_CTX_set_verify": ([ctypes.c_void_p, ctypes.c_int, VERIFY_CALLBACK], None),
        "X509_STORE_CTX_get_error_depth": ([ctypes.c_void_p], ctypes.c_int),
        "X509_STORE_CTX_get_current_cert": ([ctypes.c_void_p], ctypes.c_void_p),
        "X509_STORE_CTX_set_error": ([ctypes.c_void_p, ctypes.c_int], None),
        "X509_check_host": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                             ctypes.c_void_p], ctypes.c_int),
        "X509_check_email": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint],
                             ctypes.c_int),
        "X509_check_ip_asc": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint], ctypes.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype
    return lib


try:
    _LIB: Any = _library()
except (OSError, AttributeError):  # a static or unusual build: the settings are refused
    _LIB = None

def _pointer(context: ssl.SSLContext) -> int:
    """The SSL_CTX of `context`, proved by reading back what Python set through it."""
    if _LIB is None:
        raise NativeUnavailableError("libssl is not reachable from this Python")
    address = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not address:
        raise NativeUnavailableError("no SSL_CTX found in the SSLContext")
    modes = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: _VERIFY_PEER,
             ssl.CERT_REQUIRED: _VERIFY_PEER | _VERIFY_FAIL_IF_NO_PEER_CERT}
    if (_LIB.SSL_CTX_get_verify_mode(address) & 0x3) != modes[context.verify_mode] or (
            _LIB.SSL_CTX_get_options(address) != int(context.options)):
        raise NativeUnavailableError("the SSLContext layout of this Python is not the expected one")
    return int(address)


def set_groups(context: ssl.SSLContext, groups: Iterable[str]) -> None:
    """The key exchange groups (Go's curve_preferences), in order; ValueError if unknown."""
    names = ":".join(groups).encode("ascii")
    pointer = _pointer(context)
    if _LIB.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.c_char_p(names)) != 1:
        raise ValueError(f"OpenSSL refused the groups {names.decode()}")


def _matches(cert: int, name: str) -> bool:
    """Does the certificate carry `name` as a DNS, email or IP address SAN, as Go compares?"""
    encoded = name.encode("utf-8")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return bool(_LIB.X509_check_ip_asc(cert, encoded, 0) == 1)
    if "@" in name:
        return bool(_LIB.X509_check_email(cert, encoded, len(encoded), 0) == 1)
    return bool(_LIB.X509_check_host(cert, encoded, len(encoded), _CHECK_FLAGS, None) == 1)


def check_client_certificates(context: ssl.SSLContext, *, verify_chain: bool,
                              allowed_sans: frozenset[str]) -> None:
    """Check each client certificate in the handshake; a refusal fails the handshake.

    `verify_chain` False accepts a certificate the client CA does not vouch for (Go's
    RequestClientCert and RequireAnyClientCert); a non-empty `allowed_sans` refuses a leaf
    certificate that carries none of them, with the alert a bad certificate gets. Call last:
    `context.verify_mode` is kept, and Python keeps the callback when it is set again.
    """
    pointer = _pointer(context)
    sans = sorted(allowed_sans)

    def verify(preverified: int, store: int) -> int:
        try:
            if not verify_chain:
                _LIB.X509_STORE_CTX_set_error(store, _V_OK)
                preverified = 1
            if preverified and sans and _LIB.X509_STORE_CTX_get_error_depth(store) == 0:
                cert = _LIB.X509_STORE_CTX_get_current_cert(store)
                if not (cert and any(_matches(cert, name) for name in sans)):
                    _LIB.X509_STORE_CTX_set_error(store, _V_ERR_APPLICATION_VERIFICATION)
                    return 0
            return 1 if preverified else 0
        except Exception:  # fail closed: a bug here refuses the certificate
            return 0

    callback = VERIFY_CALLBACK(verify)
    modes = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: _VERIFY_PEER,
             ssl.CERT_REQUIRED: _VERIFY_PEER | _VERIFY_FAIL_IF_NO_PEER_CERT}
    # OpenSSL keeps only the C pointer: the callback lives exactly as long as its context
    # (each connection's SSLObject holds the context).
    context._client_certificate_check = callback  # type: ignore[attr-defined]
    _LIB.SSL_CTX_set_verify(pointer, modes[context.verify_mode], callback)
