"""Settings from flags, environment, a YAML file and defaults, in that order of precedence.

Every setting is declared once, in `schema`; this module merges the sources, decodes them with
the schema and checks what a type cannot say: credentials pairing, regexes, the shard and listen
syntax, cross-field rules. Top-level cluster keys are the defaults each entry of `clusters:`
inherits; without `clusters:` they describe the one cluster. A bad value raises ConfigError
naming the key, e.g. `clusters[1].interval: must be a number > 0, got -1`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from exporter import contract
from exporter.aggregate import AggregateSettings, ClassRule
from exporter.api import TlsSettings
from exporter.errors import ConfigError
from exporter.events import EventsSettings
from exporter.schema import (
    AGGREGATE_DEFAULTS,
    CLUSTER_KEYS,
    ENVIRONMENT,
    SELECTION_DEFAULTS,
    TOP_KEYS,
    ClassConfig,
    ClusterConfig,
    EventsConfig,
    ExporterConfig,
    Names,
    PerClientConfig,
    TlsConfig,
    decode,
    setting,
    variables,
)
from exporter.selection import RANKINGS, Pattern, SelectionSettings

# --- the result ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """How to reach and poll one EMQX cluster (validated; see ClusterConfig for defaults)."""

    url: str
    name: str | None
    api_key: str | None
    api_secret: str | None = field(repr=False)
    username: str | None
    password: str | None = field(repr=False)
    api: str
    listing: str
    interval: float
    timeout: float
    retries: int
    page_size: int | None  # None: the largest the version allows
    node_concurrency: int
    max_pages: int
    timezone: ZoneInfo
    tls: TlsSettings
    shard: tuple[int, int]
    #: Filters EMQX applies itself (v4.1+, v5): fewer rows to send, but see
    #: docs/cardinality.md for their cost.
    filters: tuple[tuple[str, str], ...]
    #: A response body larger than this is refused while it streams in, never buffered.
    max_body_bytes: int
    #: EMQX's client events over MQTT; None: off (the default).
    events: EventsSettings | None = None


@dataclass(frozen=True, slots=True)
class PerClientSettings:
    parts: frozenset[str] = contract.DEFAULT_PARTS
    labels: tuple[str, ...] = ()
    info_labels: tuple[str, ...] = contract.DEFAULT_INFO_LABELS
    selection: SelectionSettings = SELECTION_DEFAULTS
    #: Where watched clients' last-seen times survive restarts (written atomically).
    state_file: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    clusters: tuple[ClusterSettings, ...]
    listen_host: str
    listen_port: int
    log_level: str
    log_format: str
    per_client: PerClientSettings
    aggregate: AggregateSettings
    classes: tuple[ClassRule, ...]
    #: Web config file (exporter-toolkit format): TLS, basic auth, headers, rate limit.
    web_config: str | None
    #: Paths served without basic auth, for probes.
    open_paths: tuple[str, ...]
    #: Whether `POST /-/reload` reloads the configuration (SIGHUP always does).
    reload_endpoint: bool
    #: Serve the status page at / and /status.json (off: both answer 404).
    status_page: bool
    #: Linked from the status page, e.g. the Grafana dashboards of this exporter.
    dashboard_url: str | None


# --- validators for what a type cannot say -------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def read_yaml(path: str, key: str) -> Any:
    """The parsed YAML file; a missing file or bad YAML is a ConfigError naming `key`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"{path} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the text: PyYAML quotes the line, and it may hold a secret."""
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or "syntax error")
    # A problem quotes what it found ("found character '%' ..."): a piece of the value.
    problem = re.sub(r"'[^']*'|\"[^\"]*\"", "…", problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_config_file(path: str) -> dict[str, Any]:
    """Parse the YAML file; a missing file or bad YAML names the `config` key."""
    data = read_yaml(path, "config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of settings")
    return data


def _check_keys(data: Mapping[Any, Any], allowed: frozenset[str], where: str) -> None:
    for name in data:
        if name not in allowed:
            raise ConfigError(_at(where, str(name)), "unknown setting")


def _secret(inline: str | None, path: str | None, key: str) -> str | None:
    """A secret given inline or as `<key>_file`; inline wins when both are set at one level."""
    if inline is not None or path is None:
        return inline
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    except ValueError:  # the decoder's message quotes the bytes: a piece of the secret
        raise ConfigError(key, f"{path} must hold UTF-8 text") from None


def _shard(value: str, key: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or int(match[2]) < 1 or int(match[1]) >= int(match[2]):
        raise ConfigError(key, f"must be INDEX/COUNT with 0 <= INDEX < COUNT, got {value!r}")
    return (int(match[1]), int(match[2]))


#: The `user:password@` of a URL (RFC 3986 userinfo).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


def _checked_url(value: str, key: str, host: str = r"[^/]+") -> None:
    """An http(s) URL without credentials. A URL's `user:password@` would be repeated by
    this very error and, accepted, name the cluster in logs, metrics and the status page:
    refused, and left out of the message."""
    if _USERINFO.match(value):
        raise ConfigError(key, "must not hold credentials (user:password@): give them as "
                               "api_key/api_secret or username/password")
    if not re.match(rf"^https?://{host}", value):
        raise ConfigError(key, f"must be an http:// or https:// URL, got {value!r}")


def _url(value: str, key: str) -> str:
    _checked_url(value, key)
    # Users paste the dashboard URL or an API path; the dialects add /api/vN themselves.
    return re.sub(r"/api(/v\d)?/?$", "", value.rstrip("/"))


def _zone(value: str, key: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(key, f"unknown IANA time zone {value!r}") from None


def _tls(tls: TlsConfig, where: str) -> TlsSettings:
    for key in ("ca_file", "cert_file", "key_file"):
        # Checked here so the error names the full key (clusters[i].tls...); the TLS layer
        # still reports files that exist but hold no usable certificate.
        path = getattr(tls, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{where}.{key}", f"no such file: {path}")
    if tls.key_file and not tls.cert_file:
        raise ConfigError(f"{where}.cert_file", "is required with tls.key_file")
    return TlsSettings(**msgspec.structs.asdict(tls))


def _events(config: EventsConfig | None, url: str, name: str | None,
            where: str) -> EventsSettings | None:
    """The events subscription of a cluster; by default on the API's host, plain MQTT."""
    if config is None or not config.enabled:
        return None
    tls = None
    if config.tls is not None:
        if config.tls.server_name is not None:
            raise ConfigError(f"{where}.tls.server_name", "is not supported for MQTT: set "
                                                          f"{where}.host to the certificate's name")
        tls = _tls(config.tls, f"{where}.tls")
    password = _secret(config.password, config.password_file, f"{where}.password_file")
    if password is not None and not config.username:
        raise ConfigError(f"{where}.username", f"is required with {where}.password")
    if not config.topic.strip():
        raise ConfigError(f"{where}.topic", "must not be empty")
    # Each replica needs its own client id: EMQX takes over a connection whose id reconnects.
    default_id = f"emqx-client-exporter-{socket.gethostname()}-{os.getpid()}" + (
        f"-{name}" if name else "")
    return EventsSettings(
        host=config.host or (urlsplit(url).hostname or "localhost"),
        port=config.port or (8883 if tls is not None else 1883),
        username=config.username, password=password, tls=tls,
        clientid=config.clientid or default_id, topic=config.topic, keepalive=config.keepalive)


def _cluster(data: Mapping[str, Any], where: str) -> ClusterSettings:
    config = decode(data, ClusterConfig, where)
    if config.name is not None and not _NAME.match(config.name):
        raise ConfigError(_at(where, "name"), "may hold letters, digits and . _ : - only")
    settings = ClusterSettings(
        url=_url(config.emqx_url, _at(where, "emqx_url")),
        name=config.name,
        api_key=config.api_key,
        api_secret=_secret(config.api_secret, config.api_secret_file,
                           _at(where, "api_secret_file")),
        username=config.username,
        password=_secret(config.password, config.password_file, _at(where, "password_file")),
        api=config.api,
        listing=config.listing,
        interval=config.interval,
        timeout=config.timeout,
        retries=config.retries,
        page_size=None if config.page_size == "auto" else config.page_size,
        node_concurrency=config.node_concurrency,
        max_pages=config.max_pages,
        timezone=_zone(config.timezone, _at(where, "timezone")),
        tls=_tls(config.tls, _at(where, "tls")),
        shard=_shard(config.shard, _at(where, "shard")),
        filters=tuple(sorted((k, v) for k, v in msgspec.structs.asdict(config.filters).items()
                             if v is not None)),
        max_body_bytes=config.max_body_bytes,
        events=_events(config.events, config.emqx_url, config.name, _at(where, "events")),
    )
    # Last, so a malformed value elsewhere is reported first, as it is where it is written.
    _check_credentials(settings, where)
    return settings


def _check_credentials(cluster: ClusterSettings, where: str) -> None:
    """Exactly one complete kind of credential; each mistake names what to set."""
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(_at(where, key), message)

    def say(key: str) -> str:
        """The key and every other way to set it, e.g. `api_key (--api-key / EMQX_API_KEY)`."""
        ways = [setting(key).flag, *variables(setting(key))]
        if f"{key}_file" in CLUSTER_KEYS:
            ways.append(f"{key}_file")
        return f"{_at(where, key)} ({' / '.join(w for w in ways if w)})"

    if cluster.api_key and cluster.api_secret is None:
        raise fail("api_secret", f"is required with api_key: set {say('api_secret')}")
    if cluster.api_secret is not None and not cluster.api_key:
        raise fail("api_key", f"is required with api_secret: set {say('api_key')}")
    if cluster.username and cluster.password is None:
        raise fail("password", f"is required with username: set {say('password')}")
    if cluster.password is not None and not cluster.username:
        raise fail("username", f"is required with password: set {say('username')}")
    if cluster.api_key and cluster.username:
        raise fail("username", "give either an API key (api_key, api_secret) or a "
                               "dashboard user (username, password), not both")
    if not cluster.api_key and not cluster.username:
        raise fail("api_key", f"no credentials given: set {say('api_key')} and "
                              f"{say('api_secret')}, or a dashboard user with "
                              f"{say('username')} and {say('password')}")


def _with_events_env(data: dict[str, Any], env: Mapping[str, Any]) -> dict[str, Any]:
    """The environment's `events.*` secrets go into a configured `events:` section (they never
    turn events on by themselves), over the file's values as every variable does."""
    events = data.get("events")
    if env and isinstance(events, Mapping):
        events = {**events, **env}
        if "password_file" in env and "password" not in env:
            events.pop("password", None)
        data = {**data, "events": events}
    return data


def _clusters(top: Mapping[str, Any],
              events_env: Mapping[str, Any] | None = None) -> tuple[ClusterSettings, ...]:
    defaults = {k: v for k, v in top.items() if k in CLUSTER_KEYS}
    events_env = events_env or {}
    entries = top.get("clusters")
    if entries is None:
        return (_cluster(_with_events_env(defaults, events_env), ""),)
    if not isinstance(entries, list) or not entries:
        raise ConfigError("clusters", "must be a non-empty list")
    clusters = []
    for i, entry in enumerate(entries):
        where = f"clusters[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(where, "must be a mapping")
        merged = {**defaults, **entry}
        if isinstance(defaults.get("events"), Mapping) and isinstance(entry.get("events"), Mapping):
            merged["events"] = {**defaults["events"], **entry["events"]}  # key by key
        merged = _with_events_env(merged, events_env)
        for secret in ("api_secret", "password"):
            if f"{secret}_file" in entry and secret not in entry:
                merged.pop(secret, None)  # the entry's own file beats an inherited value
        clusters.append(_cluster(merged, where))
    names = [c.name for c in clusters]
    if len(clusters) > 1 and (None in names or len(set(names)) != len(names)):
        raise ConfigError("clusters", "each of several clusters needs its own unique name")
    return tuple(clusters)


def _dashboard_url(url: str | None) -> str | None:
    if url is not None:
        _checked_url(url, "dashboard_url", host=r"[^/\s]+")
    return url


def _listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d+)", value.strip())
    if not match or not 0 <= int(match[2]) <= 65535:
        raise ConfigError("listen", f"must be HOST:PORT, got {value!r}")
    return (match[1] or "0.0.0.0", int(match[2]))


def _names(value: Names, key: str) -> tuple[str, ...]:
    """A list of names, or one comma-separated string, each among the setting's choices."""
    allowed = setting(key).choices
    names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) \
        else list(value)
    for name in names:
        if name not in allowed:
            raise ConfigError(key, f"{name!r} is not one of {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ConfigError(key, "lists a name twice")
    return tuple(names)


def _parts(switches: Mapping[str, bool]) -> frozenset[str]:
    parts = set(contract.DEFAULT_PARTS)
    for name, on in switches.items():
        if name not in contract.PARTS_BY_NAME:
            raise ConfigError(f"per_client.parts.{name}",
                              f"unknown part; known: {', '.join(contract.PARTS_BY_NAME)}")
        (parts.add if on else parts.discard)(name)
    return frozenset(parts)


def _pattern(text: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(key, f"bad regex: {exc}") from None


def _patterns(items: tuple[str | dict[str, str], ...], key: str) -> tuple[Pattern, ...]:
    """Plain strings match the client id, `{username: re}` the username."""
    patterns = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if isinstance(item, str):
            item = {"clientid": item}
        if len(item) != 1 or next(iter(item)) not in ("clientid", "username"):
            raise ConfigError(where, "must be a regex or {clientid: regex} or {username: regex}")
        ((target, text),) = item.items()
        patterns.append(Pattern(target, _pattern(text, where)))
    return tuple(patterns)


def _selection(config: PerClientConfig) -> SelectionSettings:
    top_k = tuple((name, count) for name in RANKINGS
                  if (count := getattr(config.top_k, name)) is not None)
    if config.watch_only and not config.watch:
        raise ConfigError("per_client.watch_only", "needs a watch list")
    if config.watch_only and (config.allow or top_k):
        raise ConfigError("per_client.watch_only",
                          "cannot go with allow or top_k: they need the walk")
    return SelectionSettings(
        watch=frozenset(str(w) for w in config.watch),
        allow=_patterns(config.allow, "per_client.allow"),
        deny=_patterns(config.deny, "per_client.deny"),
        top_k=top_k,
        hysteresis=config.hysteresis,
        max_series=config.max_series,
        watch_only=config.watch_only,
        lookup=config.lookup,
    )


def _classes(configs: tuple[ClassConfig, ...]) -> tuple[ClassRule, ...]:
    rules = []
    for i, rule in enumerate(configs):
        where = f"classes[{i}]"
        if not rule.name:
            raise ConfigError(f"{where}.name", "is required")
        given = [(f, text) for f in ("clientid", "username")
                 if (text := getattr(rule, f)) is not None]
        if len(given) != 1:
            raise ConfigError(where, "needs exactly one of clientid or username (a regex)")
        ((target, text),) = given
        rules.append(ClassRule(name=rule.name, field=target,
                               pattern=_pattern(text, f"{where}.{target}")))
    return tuple(rules)


def _merge(flags: Mapping[str, Any], environ: Mapping[str, str],
           config_path: str | None) -> dict[str, Any]:
    """Flags over environment over the file; the defaults come in when decoding."""
    data = read_config_file(config_path) if config_path else {}
    _check_keys(data, TOP_KEYS, "")
    top = dict(data)
    # `*_FILE` variables first, so an inline secret from the environment beats a file one.
    for variable, key in sorted(ENVIRONMENT.items(),
                                key=lambda item: not item[1].endswith("_file")):
        if "." in key:
            continue  # a key of a section (events.password): see `events_environment`
        if environ.get(variable):
            top[key] = environ[variable]
            if key.endswith("_file"):
                top.pop(key.removesuffix("_file"), None)
    top.update({key: value for key, value in flags.items() if value is not None})
    return top


def events_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The `events.*` keys the environment sets (EMQX_EVENTS_PASSWORD, ..._FILE)."""
    return {key.removeprefix("events."): environ[variable]
            for variable, key in ENVIRONMENT.items()
            if key.startswith("events.") and environ.get(variable)}


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str],
                  config_path: str | None) -> Settings:
    """Merge flags > environment > config file > defaults, then validate everything."""
    top = _merge(flags, environ, config_path)
    clusters = _clusters(top, events_environment(environ))
    config = decode({k: v for k, v in top.items() if k not in CLUSTER_KEYS | {"clusters"}},
                     ExporterConfig, "")
    host, port = _listen(config.listen)
    per_client = config.per_client
    classes = _classes(config.classes)
    aggregate_labels = config.aggregate.labels or (
        AGGREGATE_DEFAULTS.labels + (("class",) if classes else ()))
    return Settings(
        clusters=clusters,
        listen_host=host,
        listen_port=port,
        log_level=config.log_level,
        log_format=config.log_format,
        per_client=PerClientSettings(
            parts=_parts(per_client.parts),
            labels=_names(per_client.labels, "per_client.labels"),
            info_labels=_names(per_client.info_labels, "per_client.info_labels"),
            selection=_selection(per_client),
            state_file=per_client.state_file,
        ),
        aggregate=AggregateSettings(
            labels=_names(aggregate_labels, "aggregate.labels"),
            saturation=config.aggregate.saturation),
        classes=classes,
        web_config=config.web_config,
        open_paths=_names(config.open_paths, "open_paths"),
        reload_endpoint=config.reload_endpoint,
        status_page=config.status_page,
        dashboard_url=_dashboard_url(config.dashboard_url),
    )
