"""One declaration of the settings: flags, variables and defaults follow it; errors name keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import main
from exporter.config import load_settings
from exporter.errors import ConfigError
from exporter.schema import ENVIRONMENT, FLAGS, SETTINGS, describe_default, setting

URL = {"emqx_url": "http://emqx:18083", "api_key": "k", "api_secret": "s"}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("command", ["run", "check"])
def test_every_flag_of_the_schema_is_offered_with_its_default(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for flag in FLAGS:
        assert f"{flag.flag} {flag.key.upper()}" in text
        if default := describe_default(flag):
            assert f"(default {default})" in text


def test_flags_beat_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, "emqx_url: http://file:1\napi_key: k\napi_secret: s\n"
                             "interval: 10\ntimeout: 3\nshard: 0/1\nlisten: 127.0.0.1:1\n")
    s = load_settings({"timeout": "4", "shard": "1/2", "listen": "127.0.0.1:2"}, {}, config)
    assert (s.clusters[0].interval, s.clusters[0].timeout, s.clusters[0].shard,
            s.listen_port) == (10.0, 4.0, (1, 2), 2)


def test_every_environment_variable_sets_its_key(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    values = {"EMQX_URL": "http://env:1", "EMQX_API_KEY": "env-key",
              "EMQX_API_SECRET_FILE": str(secret), "EMQX_PASSWORD_FILE": str(secret),
              "EMQX_USERNAME": "u", "EMQX_PASSWORD": "p", "EMQX_API_SECRET": "s",
              "EMQX_EVENTS_PASSWORD": "mqtt-p", "EMQX_EVENTS_PASSWORD_FILE": str(secret)}
    assert set(values) == set(ENVIRONMENT)  # a new variable needs a case here
    api = load_settings({}, {k: values[k] for k in ("EMQX_URL", "EMQX_API_KEY",
                                                     "EMQX_API_SECRET_FILE")}, None)
    assert (api.clusters[0].url, api.clusters[0].api_key, api.clusters[0].api_secret) == (
        "http://env:1", "env-key", "from-file")
    user = load_settings({}, {k: values[k] for k in ("EMQX_URL", "EMQX_USERNAME",
                                                      "EMQX_PASSWORD_FILE")}, None)
    assert (user.clusters[0].username, user.clusters[0].password) == ("u", "from-file")
    # the events password variables fill a configured `events:` section
    for variable, expected in (("EMQX_EVENTS_PASSWORD", "mqtt-p"),
                               ("EMQX_EVENTS_PASSWORD_FILE", "from-file")):
        events = load_settings({**URL, "events": {"username": "u"}},
                               {variable: values[variable]}, None).clusters[0].events
        assert events is not None and events.password == expected, variable


def test_unset_keys_take_the_declared_defaults() -> None:
    s = load_settings(URL, {}, None)
    cluster = s.clusters[0]
    for key in ("interval", "timeout", "retries", "node_concurrency", "max_pages",
                "max_body_bytes", "api", "listing"):
        assert getattr(cluster, key) == setting(key).default, key
    selection = s.per_client.selection
    assert selection.max_series == setting("per_client.max_series").default
    assert selection.hysteresis == setting("per_client.hysteresis").default
    assert s.per_client.info_labels == setting("per_client.info_labels").default
    assert s.aggregate.saturation == setting("aggregate.saturation").default
    assert f"{s.listen_host}:{s.listen_port}" == setting("listen").default


@pytest.mark.parametrize(("text", "message"), [
    ("clusters: [{name: a, emqx_url: 'http://a:1'}, {name: b, emqx_url: 'http://b:1', "
     "interval: -1}]\n", "clusters[1].interval: must be a number > 0, got -1"),
    ("per_client: {top_k: {drop_rate: -3}}\n",
     "per_client.top_k.drop_rate: must be a whole number >= 0, got -3"),
    ("per_client: {max_series: 2.5}\n", "per_client.max_series: must be a whole number, got 2.5"),
    ("api: v9\n", "api: must be one of auto, v3, v4, v5, got 'v9'"),
    ("filters: {conn_state: asleep}\n",
     "filters.conn_state: must be one of connected, idle, disconnected, got 'asleep'"),
    ("tls: {insecure_skip_verify: maybe}\n",
     "tls.insecure_skip_verify: must be true or false, got 'maybe'"),
    ("per_client: {allow: [3]}\n", "per_client.allow[0]: must be a string or a mapping, got 3"),
    # A secret's value is never echoed, even a malformed one.
    ("password: [1]\nusername: u\n", "password: must be a string"),
    ("classes: [{clientid: x}]\n", "classes[0].name: is required"),
    ("per_client: {labels: [node, node]}\n", "per_client.labels: lists a name twice"),
    ("aggregate: {labels: 'node,zone'}\n",
     "aggregate.labels: 'zone' is not one of node, class, listener, proto_name"),
])
def test_errors_give_the_key_path_the_reason_and_the_value(tmp_path: Path, text: str,
                                                           message: str) -> None:
    credentials = "" if "username" in text else "api_key: k\napi_secret: s\n"
    config = write(tmp_path, "emqx_url: http://x:1\n" + credentials + text)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {}, config)
    assert str(caught.value) == message


def test_a_missing_url_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"api_key": "k", "api_secret": "s"}, {}, None)
    assert str(caught.value) == "emqx_url: is required (set --emqx-url or EMQX_URL)"


def test_yaml_numbers_and_comma_lists_are_read_as_written(tmp_path: Path) -> None:
    config = write(tmp_path, "emqx_url: http://x:1\nusername: 2024\npassword: 123456\n"
                             "per_client: {labels: 'node, zone'}\nclusters: [{name: 42}]\n")
    s = load_settings({}, {}, config)
    assert (s.clusters[0].username, s.clusters[0].password, s.clusters[0].name) == (
        "2024", "123456", "42")
    assert s.per_client.labels == ("node", "zone")


def test_every_setting_has_help() -> None:
    assert all(s.help for s in SETTINGS), [s.key for s in SETTINGS if not s.help]
