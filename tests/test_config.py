"""Configuration: precedence flag > environment > file > default, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import load_settings
from exporter.errors import ConfigError

URL = {"emqx_url": "http://emqx:18083", "api_key": "k", "api_secret": "s"}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    settings = load_settings(URL, {}, None)
    (cluster,) = settings.clusters
    assert cluster.url == "http://emqx:18083" and cluster.interval == 30.0
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9877)
    assert cluster.name is None and cluster.shard == (0, 1)


def test_precedence_flag_env_file(tmp_path: Path) -> None:
    config = write(tmp_path, "emqx_url: http://file:1\ninterval: 10\napi_key: k\n"
                             "api_secret: from-file\nlisten: 127.0.0.1:1000\n")
    s = load_settings({}, {}, config)
    assert (s.clusters[0].url, s.clusters[0].interval, s.clusters[0].api_secret) == (
        "http://file:1", 10.0, "from-file")
    s = load_settings({}, {"EMQX_URL": "http://env:2", "EMQX_API_SECRET": "from-env"}, config)
    assert (s.clusters[0].url, s.clusters[0].api_secret) == ("http://env:2", "from-env")
    s = load_settings({"emqx_url": "http://flag:3", "interval": "5"},
                      {"EMQX_URL": "http://env:2"}, config)
    assert (s.clusters[0].url, s.clusters[0].interval) == ("http://flag:3", 5.0)


def test_secret_file_from_environment(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = write(tmp_path, "emqx_url: http://x:1\napi_key: k\napi_secret: in-file\n")
    s = load_settings({}, {"EMQX_API_SECRET_FILE": str(secret)}, config)
    assert s.clusters[0].api_secret == "s3cret"  # env beats the file, newline stripped
    s = load_settings({"api_secret": "flag"}, {"EMQX_API_SECRET_FILE": str(secret)}, config)
    assert s.clusters[0].api_secret == "flag"
    assert "s3cret" not in repr(s)  # secrets never appear in reprs (and so in logs)


def test_clusters_inherit_top_level_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, """
interval: 20
api_key: shared
api_secret: shared-secret
clusters:
  - {name: prod, emqx_url: "http://prod:18083"}
  - {name: lab, emqx_url: "http://lab:8081/api/v4", interval: 60, timezone: Europe/Berlin}
""")
    s = load_settings({}, {}, config)
    prod, lab = s.clusters
    assert (prod.name, prod.interval, prod.api_key) == ("prod", 20.0, "shared")
    assert (lab.url, lab.interval, str(lab.timezone)) == ("http://lab:8081", 60.0, "Europe/Berlin")


@pytest.mark.parametrize(("text", "flags", "key"), [
    ("interval: -1\n", {}, "interval"),
    ("interval: soon\n", {}, "interval"),
    ("intervall: 5\n", {}, "intervall"),
    ("timezone: Mars/Olympus\n", {}, "timezone"),
    ("api: v9\n", {}, "api"),
    ("listen: nowhere\n", {}, "listen"),
    ("api_key: k\n", {}, "api_secret"),
    ("per_client: {parts: {bogus: true}}\n", {}, "per_client.parts.bogus"),
    ("per_client: {labels: [clientid]}\n", {}, "per_client.labels"),
    ("aggregate: {saturation: 2}\n", {}, "aggregate.saturation"),
    ("classes: [{name: x, clientid: '('}]\n", {}, "classes[0].clientid"),
    ("clusters: [{emqx_url: 'http://a:1'}, {emqx_url: 'http://b:1'}]\n", {}, "clusters"),
    ("clusters: [{name: a, emqx_url: 'ftp://a'}]\n", {}, "clusters[0].emqx_url"),
    ("tls: {ca_fil: x}\n", {}, "tls.ca_fil"),
    ("tls: {ca_file: /nonexistent/ca.pem}\n", {}, "tls.ca_file"),
    ("clusters: [{name: a, emqx_url: 'https://a', tls: {cert_file: /nope.pem}}]\n", {},
     "clusters[0].tls.cert_file"),
    ("shard: 3/3\n", {}, "shard"),
    ("per_client: {watch_only: true}\n", {}, "per_client.watch_only"),
    ("per_client: {watch: [a], watch_only: true, top_k: {drop_rate: 3}}\n", {},
     "per_client.watch_only"),
    ("per_client: {top_k: {worst: 3}}\n", {}, "per_client.top_k.worst"),
    ("per_client: {allow: ['(']}\n", {}, "per_client.allow[0]"),
    ("per_client: {max_series: 0}\n", {}, "per_client.max_series"),
    ("filters: {conn_state: sleeping}\n", {}, "filters.conn_state"),
    ("", {"emqx_url": None}, "emqx_url"),
    ("- not a mapping\n", {}, "config"),
    ("a: [unclosed\n", {}, "config"),
    ("api_secret_file: /nonexistent/secret\napi_key: k\n", {}, "api_secret_file"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, flags: dict[str, str | None],
                                 key: str) -> None:
    credentials = "" if "api_" in text or "username" in text else "api_key: k\napi_secret: s\n"
    config = write(tmp_path, ("emqx_url: http://x:1\n" if "emqx_url" not in flags else "")
                   + credentials + text)
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, {}, config)
    assert caught.value.key == key, str(caught.value)
    assert str(caught.value).startswith(key)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {}, "/nonexistent/config.yaml")
    assert caught.value.key == "config"


def test_parts_and_labels(tmp_path: Path) -> None:
    config = write(tmp_path, """
emqx_url: http://x:1
api_key: k
api_secret: s
per_client:
  parts: {packets: true, info: false}
  labels: [node]
classes:
  - {name: sensors, clientid: "sensor-.*"}
  - {name: apps, username: "app.*"}
aggregate: {saturation: 0.9}
""")
    s = load_settings({}, {}, config)
    assert "packets" in s.per_client.parts and "info" not in s.per_client.parts
    assert s.per_client.labels == ("node",)
    assert [r.name for r in s.classes] == ["sensors", "apps"]
    assert s.aggregate.labels == ("node", "class") and s.aggregate.saturation == 0.9


@pytest.mark.parametrize("key", ["interval", "timeout"])
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "0", "1e9"])
def test_durations_are_finite_and_in_range(key: str, text: str) -> None:
    # `--interval nan` used to be accepted and polled in a tight loop.
    with pytest.raises(ConfigError) as caught:
        load_settings({**URL, key: text}, {}, None)
    assert caught.value.key == key and text in str(caught.value)


@pytest.mark.parametrize(("yaml_text", "key"), [
    ("retries: .nan\n", "retries"),
    ("retries: .inf\n", "retries"),
    ("retries: -1\n", "retries"),
    ("page_size: .inf\n", "page_size"),
    ("max_pages: 1e400\n", "max_pages"),
    ("node_concurrency: true\n", "node_concurrency"),
    ("max_body_bytes: 10\n", "max_body_bytes"),
    ("aggregate: {saturation: .nan}\n", "aggregate.saturation"),
    ("per_client: {hysteresis: -.inf}\n", "per_client.hysteresis"),
    ("per_client: {top_k: {drop_rate: .inf}}\n", "per_client.top_k.drop_rate"),
])
def test_every_number_is_checked(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = write(tmp_path, "emqx_url: http://x:1\napi_key: k\napi_secret: s\n" + yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {}, config)
    assert caught.value.key == key, str(caught.value)


@pytest.mark.parametrize(("flags", "environ", "key", "names"), [
    ({}, {}, "api_key", ["--api-key", "EMQX_API_KEY", "--username", "EMQX_PASSWORD"]),
    ({"api_key": "k"}, {}, "api_secret", ["--api-secret", "EMQX_API_SECRET_FILE"]),
    ({}, {"EMQX_API_SECRET": "s"}, "api_key", ["--api-key", "EMQX_API_KEY"]),
    ({"username": "u"}, {}, "password", ["--password", "EMQX_PASSWORD"]),
    ({"password": "p"}, {}, "username", ["--username", "EMQX_USERNAME"]),
    ({"api_key": "k", "api_secret": "s", "username": "u", "password": "p"}, {}, "username",
     ["api_key", "username", "not both"]),
])
def test_credential_mistakes_name_what_to_set(flags: dict[str, str], environ: dict[str, str],
                                              key: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"emqx_url": "http://x:1", **flags}, environ, None)
    assert caught.value.key == key, str(caught.value)
    for name in names:
        assert name in str(caught.value)
