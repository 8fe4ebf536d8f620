"""Authentication of API requests, per version, and v5 login tokens."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable

import msgspec
from aiohttp import web

from exporter.simulator.responses import (
    LEGACY_REALM,
    UNAUTHORIZED_TEXT,
    V5_REALM,
    json_response,
    plain,
    v5_error,
)
from exporter.simulator.settings import Features, SimSettings


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
            return plain(401, UNAUTHORIZED_TEXT, LEGACY_REALM)
        if header and header[:6].lower() == "basic ":
            creds = _basic_credentials(header)
            if creds is None:
                return self._header_error()
            if self._key_ok(*creds):
                return None
            if self._features.dashboard_basic_auth and self._user_ok(*creds):
                return None
            return v5_error(401, "BAD_API_KEY_OR_SECRET", "Check api_key/api_secret")
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
        if not self._user_ok(creds.username, creds.password):
            return v5_error(401, "BAD_USERNAME_OR_PWD", "Auth failed")
        now = self._now_ms()
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

    @staticmethod
    def _new_token(username: str) -> str:
        """A JWT-looking opaque token, as EMQX issues."""

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        claims = msgspec.json.encode({"username": username, "jti": secrets.token_hex(8)})
        return ".".join(
            (b64(b'{"alg":"HS256","typ":"JWT"}'), b64(claims), b64(secrets.token_bytes(32)))
        )
