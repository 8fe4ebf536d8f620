"""The `events:` section: off unless given, defaults from emqx_url, secrets like the API
secret's (inline, file, environment; never shown), errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import load_settings
from exporter.errors import ConfigError

URL = {"emqx_url": "https://emqx.example:18083", "api_key": "k", "api_secret": "s"}


def test_off_unless_configured_even_with_the_password_variable() -> None:
    assert load_settings(URL, {}, None).clusters[0].events is None
    assert load_settings(URL, {"EMQX_EVENTS_PASSWORD": "p"}, None).clusters[0].events is None
    assert load_settings({**URL, "events": {"enabled": False}}, {}, None).clusters[0].events \
        is None


def test_defaults_follow_the_api_url() -> None:
    events = load_settings({**URL, "events": {}}, {}, None).clusters[0].events
    assert events is not None
    assert (events.host, events.port, events.tls, events.topic, events.keepalive) == (
        "emqx.example", 1883, None, "$SYS/brokers/+/clients/#", 30)
    assert events.clientid.startswith("emqx-client-exporter-")
    tls = load_settings({**URL, "events": {"tls": {}}}, {}, None).clusters[0].events
    assert tls is not None and tls.port == 8883 and tls.tls is not None


def test_password_inline_file_environment_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("from-file\n")
    events = {"username": "exporter", "password_file": str(secret)}
    s = load_settings({**URL, "events": events}, {}, None)
    assert s.clusters[0].events is not None and s.clusters[0].events.password == "from-file"
    s = load_settings({**URL, "events": events}, {"EMQX_EVENTS_PASSWORD": "from-env"}, None)
    cluster = s.clusters[0]
    assert cluster.events is not None and cluster.events.password == "from-env"
    assert "from-env" not in repr(s) and "from-env" not in repr(cluster.events)


def test_clusters_inherit_the_section_key_by_key() -> None:
    top = {"api_key": "k", "api_secret": "s", "events": {"username": "u", "password": "p"},
           "clusters": [{"name": "a", "emqx_url": "http://a:1", "events": {"port": 1884}},
                        {"name": "b", "emqx_url": "http://b:1"}]}
    a, b = load_settings(top, {}, None).clusters
    assert a.events is not None and (a.events.host, a.events.port, a.events.username,
                                     a.events.password) == ("a", 1884, "u", "p")
    assert b.events is not None and (b.events.host, b.events.port) == ("b", 1883)
    assert a.events.clientid != b.events.clientid


@pytest.mark.parametrize(("events", "key", "says"), [
    ({"password": "hunter2"}, "events.username", "is required with events.password"),
    ({"port": 70000}, "events.port", "<= 65535"),
    ({"tls": {"server_name": "x"}}, "events.tls.server_name", "not supported"),
    ({"keepalive": 1}, "events.keepalive", ">= 5"),
    ({"topc": "x"}, "events.topc", "unknown setting"),
    ({"topic": " "}, "events.topic", "must not be empty"),
])
def test_errors_name_the_key(events: dict[str, object], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({**URL, "events": {"username": None, **events}}, {}, None)
    assert error.value.key == key and says in str(error.value)
    assert "hunter2" not in str(error.value)
