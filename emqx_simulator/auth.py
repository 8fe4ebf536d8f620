"""Authentication of API requests, per version, and v5 login tokens."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable

import msgspec
from aiohttp import web

from emqx_simulator.responses import (
    V5_REALM,
    json_response,
    legacy_unauthorized,
    v5_error,
)
from emqx_simulator.settings import Features, SimSettings

#: EMQX's defaults: ``dashboard.unsuccessful_login_max_attempts``, ``..._interval`` (5 m) and
#: ``..._lock_duration`` (10 m), ``emqx_dashboard_schema.erl``.
LOGIN_MAX_ATTEMPTS = 5
LOGIN_INTERVAL_MS = 300_000
LOGIN_LOCK_MS = 600_000


class LoginBody(msgspec.Struct):
    """Body of ``POST /api/v5/login``."""

    username: str
    password: str


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, secret) of a ``Basic`` header, None when it cannot be decoded."""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    return (user, secret) if sep else None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Authenticator:
    """Checks Authorization headers the way the simulated version does; issues v5 tokens."""

    def __init__(self, settings: SimSettings, features: Features, now_ms: Callable[[], int]):
        self._settings = settings
        self._features = features
        self._now_ms = now_ms
        #: token -> expiry (epoch ms)
        self._tokens: dict[str, int] = {}
        #: Failed logins of the dashboard user (epoch ms), and when its lock ends.
        self._failed_logins: list[int] = []
        self._locked_until = 0

    def _key_ok(self, user: str, secret: str) -> bool:
        s = self._settings
        return _same(user, s.api_key) and _same(secret, s.api_secret)

    def _user_ok(self, user: str, secret: str) -> bool:
        s = self._settings
        return _same(user, s.username) and _same(secret, s.password)

    def check(self, header: str | None) -> web.Response | None:
        """None when the request may pass, else the version's 401 response."""
        if self._features.api != "v5":
            # v3/v4: an application (id/secret) or a dashboard user, via Basic.
            is_basic = header is not None and header[:6].lower() == "basic "
            creds = _basic_credentials(header) if header is not None and is_basic else None
            if creds is not None and (self._key_ok(*creds) or self._user_ok(*creds)):
                return None
            return legacy_unauthorized()
        if header and header[:6].lower() == "basic ":
            creds = _basic_credentials(header)
            if creds is None:
                return self._header_error()
            if self._key_ok(*creds):
                return None
            if self._features.dashboard_basic_auth and self._user_ok(*creds):
                return None
            # Recorded with the dashboard's realm: 5.3.2 and 5.8.9 nodes_bad_key.json.
            return v5_error(401, "BAD_API_KEY_OR_SECRET", "Check api_key/api_secret", V5_REALM)
        if header and header[:7].lower() == "bearer ":
            expiry = self._tokens.get(header[7:].strip())
            if expiry is None:
                return v5_error(401, "BAD_TOKEN", "Get a token by POST /login")
            if self._now_ms() >= expiry:
                return v5_error(
                    401, "TOKEN_TIME_OUT", "Token expired, get new token by POST /login"
                )
            return None
        return self._header_error()

    @staticmethod
    def _header_error() -> web.Response:
        return v5_error(
            401, "AUTHORIZATION_HEADER_ERROR", "Support authorization: basic/bearer ", V5_REALM
        )

    def login(self, body: bytes) -> web.Response:
        """``POST /api/v5/login``: a bearer token for the dashboard user."""
        try:
            creds = msgspec.json.decode(body, type=LoginBody)
        except msgspec.DecodeError as exc:
            return v5_error(400, "BAD_REQUEST", str(exc))
        now = self._now_ms()
        known = _same(creds.username, self._settings.username)
        if self._features.login_lock and known and now < self._locked_until:
            # The lock is checked before the password (emqx_dashboard_admin:sign_token).
            return v5_error(401, "LOGIN_LOCKED", "Login locked")
        if not self._user_ok(creds.username, creds.password):
            if self._features.login_lock and known:  # unknown users leave no record
                self._register_failed_login(now)
            return v5_error(401, "BAD_USERNAME_OR_PWD", "Auth failed")
        self._failed_logins.clear()  # a successful login resets the count
        if len(self._tokens) > 1000:  # forget expired tokens now and then
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = self._new_token(creds.username)
        self._tokens[token] = now + int(self._settings.token_ttl * 1000)
        return json_response(
            {
                "token": token,
                "version": self._features.version_text,
                "license": {"edition": "opensource"},
            }
        )

    def _register_failed_login(self, now: int) -> None:
        """EMQX's rule (``emqx_dashboard_login_lock.erl``): the attempt that finds
        ``LOGIN_MAX_ATTEMPTS - 1`` earlier failures within the interval locks the user."""
        window = now - LOGIN_INTERVAL_MS
        self._failed_logins = [t for t in self._failed_logins if t >= window]
        if len(self._failed_logins) >= LOGIN_MAX_ATTEMPTS - 1:
            self._locked_until = now + LOGIN_LOCK_MS
        self._failed_logins.append(now)

    @staticmethod
    def _new_token(username: str) -> str:
        """A JWT-looking opaque token, as EMQX issues."""

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        claims = msgspec.json.encode({"username": username, "jti": secrets.token_hex(8)})
        return ".".join(
            (b64(b'{"alg":"HS256","typ":"JWT"}'), b64(claims), b64(secrets.token_bytes(32)))
        )
