"""Which credential the request funnel sends, built from a cluster's settings.

An API key is Basic auth on every generation, but EMQX names it differently: an "API key" on
v5, an "application id and secret" on v3/v4. A dashboard user logs in for a bearer token on
v5 and is sent as Basic on v3/v4.
"""

from __future__ import annotations

from exporter.api import Auth, BasicAuth, BearerLogin
from exporter.config import ClusterSettings

#: How EMQX names an API key, by API generation.
_API_KEY_NAMES = {"v5": "API key", "v4": "application id and secret",
                  "v3": "application id and secret"}


def api_key_kind(generation: str) -> str:
    """EMQX's name for an API key on this generation (`auto` is taken as v5)."""
    return _API_KEY_NAMES.get(generation, _API_KEY_NAMES["v5"])


def build_auth(settings: ClusterSettings) -> Auth | None:
    """API key (Basic) when given, else a user: v5 logs in for a bearer token, v3/v4 use Basic."""
    if settings.api_key and settings.api_secret is not None:
        return BasicAuth(settings.api_key, settings.api_secret, api_key_kind(settings.api))
    if settings.username and settings.password is not None:
        if settings.api in ("v3", "v4"):
            return BasicAuth(settings.username, settings.password, "dashboard user")
        return BearerLogin(settings.username, settings.password)
    return None


def follow_generation(auth: Auth | None, generation: str) -> None:
    """Name an API key as the detected generation does (for `check` and error messages)."""
    if isinstance(auth, BasicAuth) and auth.kind in _API_KEY_NAMES.values():
        auth.kind = api_key_kind(generation)
