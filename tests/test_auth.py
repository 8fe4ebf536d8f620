"""Which credential each configuration gives the request funnel, and how EMQX names it."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.api import BasicAuth, BearerLogin
from exporter.auth import build_auth, follow_generation
from exporter.config import ClusterSettings, load_settings

URL = "http://127.0.0.1:18083"
KEY = {"api_key": "exporter", "api_secret": "secret"}
USER = {"username": "admin", "password": "public"}


def cluster(**flags: Any) -> ClusterSettings:
    return load_settings({"emqx_url": URL, **flags}, {}, None).clusters[0]


@pytest.mark.parametrize(("api", "kind"), [("auto", "API key"), ("v5", "API key"),
                                           ("v4", "application id and secret"),
                                           ("v3", "application id and secret")])
def test_api_key_is_basic_auth_named_as_the_generation_does(api: str, kind: str) -> None:
    auth = build_auth(cluster(api=api, **KEY))
    assert isinstance(auth, BasicAuth)
    assert (auth.user, auth.secret, auth.kind) == ("exporter", "secret", kind)


@pytest.mark.parametrize("api", ["auto", "v5"])
def test_dashboard_user_logs_in_for_a_token_on_v5(api: str) -> None:
    auth = build_auth(cluster(api=api, **USER))
    assert isinstance(auth, BearerLogin)
    assert (auth.username, auth.password, auth.kind) == ("admin", "public", "dashboard login")


@pytest.mark.parametrize("api", ["v3", "v4"])
def test_dashboard_user_is_basic_auth_on_v3_and_v4(api: str) -> None:
    auth = build_auth(cluster(api=api, **USER))
    assert isinstance(auth, BasicAuth)
    assert (auth.user, auth.secret, auth.kind) == ("admin", "public", "dashboard user")


def test_api_key_is_renamed_when_another_generation_is_detected() -> None:
    auth = build_auth(cluster(**KEY))
    follow_generation(auth, "v4")
    assert isinstance(auth, BasicAuth) and auth.kind == "application id and secret"
    follow_generation(auth, "v5")  # upgraded to EMQX 5
    assert auth.kind == "API key"


def test_dashboard_user_keeps_its_name_whatever_the_generation() -> None:
    auth = build_auth(cluster(api="v4", **USER))
    follow_generation(auth, "v5")
    assert isinstance(auth, BasicAuth) and auth.kind == "dashboard user"
    follow_generation(None, "v4")  # no credential: nothing to name
