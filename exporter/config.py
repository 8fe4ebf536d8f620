"""Settings from flags, environment, a YAML file and defaults, in that order of precedence.

Every flag has a config key of the same name with underscores. Top-level cluster keys are the
defaults each entry of `clusters:` inherits; without `clusters:` they describe the one cluster.
A bad value raises ConfigError naming the key, e.g. `clusters[1].interval: must be > 0`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from exporter import contract
from exporter.aggregate import AggregateSettings, ClassRule
from exporter.api import DEFAULT_MAX_BODY, TlsSettings
from exporter.errors import ConfigError
from exporter.selection import RANKINGS, Pattern, SelectionSettings

DEFAULT_LISTEN = "0.0.0.0:9877"
#: Paths that may be served without basic auth (`open_paths`), and those that are by default.
OPENABLE_PATHS = ("/-/healthy", "/-/ready")
DEFAULT_OPEN_PATHS = ("/-/healthy",)

#: Environment variables and the config keys they set.
ENVIRONMENT = {
    "EMQX_URL": "emqx_url",
    "EMQX_API_KEY": "api_key",
    "EMQX_API_SECRET": "api_secret",
    "EMQX_API_SECRET_FILE": "api_secret_file",
    "EMQX_USERNAME": "username",
    "EMQX_PASSWORD": "password",
    "EMQX_PASSWORD_FILE": "password_file",
}

CLUSTER_KEYS = frozenset({
    "name", "emqx_url", "api_key", "api_secret", "api_secret_file", "username", "password",
    "password_file", "api", "listing", "interval", "timeout", "retries", "page_size",
    "node_concurrency", "max_pages", "timezone", "tls", "shard", "filters",
    "max_body_bytes",
})
TOP_KEYS = CLUSTER_KEYS - {"name"} | {
    "listen", "log_level", "log_format", "clusters", "per_client", "aggregate", "classes",
    "web_config", "open_paths", "reload_endpoint",
    "status_page", "dashboard_url",
}
_TLS_KEYS = frozenset({"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"})
_PER_CLIENT_KEYS = frozenset({"parts", "labels", "info_labels", "watch", "allow", "deny", "top_k",
                              "max_series", "hysteresis", "watch_only", "state_file"})
_FILTER_KEYS = frozenset({"username", "conn_state", "like_clientid", "like_username"})
_AGGREGATE_KEYS = frozenset({"labels", "saturation"})
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
#: Upper bound of any number in the config unless a key sets its own: beyond it a duration
#: or a count is a typo, and floats lose integer precision.
MAX_NUMBER = 2.0**53
#: Longest poll interval and request timeout accepted (a day): longer is certainly a mistake.
MAX_SECONDS = 86_400.0

#: Where each credential can be given, for error messages that say what to set.
_CREDENTIAL_SOURCES = {
    "api_key": "--api-key / EMQX_API_KEY",
    "api_secret": "--api-secret / EMQX_API_SECRET / EMQX_API_SECRET_FILE / api_secret_file",
    "username": "--username / EMQX_USERNAME",
    "password": "--password / EMQX_PASSWORD / EMQX_PASSWORD_FILE / password_file",
}


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """How to reach and poll one EMQX cluster."""

    url: str
    name: str | None = None
    api_key: str | None = None
    api_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api: str = "auto"
    listing: str = "auto"
    interval: float = 30.0
    timeout: float = 10.0
    retries: int = 2
    page_size: int | None = None
    node_concurrency: int = 2
    max_pages: int = 10_000
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    tls: TlsSettings = field(default_factory=TlsSettings)
    shard: tuple[int, int] = (0, 1)
    #: Filters EMQX applies itself (v4.1+, v5): fewer rows to send, but see README for cost.
    filters: tuple[tuple[str, str], ...] = ()
    #: A response body larger than this is refused while it streams in, never buffered.
    max_body_bytes: int = DEFAULT_MAX_BODY


@dataclass(frozen=True, slots=True)
class PerClientSettings:
    parts: frozenset[str] = contract.DEFAULT_PARTS
    labels: tuple[str, ...] = ()
    info_labels: tuple[str, ...] = ("username", "node", "listener", "zone", "proto_name",
                                    "proto_ver", "clean_start")
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    #: Where watched clients' last-seen times survive restarts (written atomically).
    state_file: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    clusters: tuple[ClusterSettings, ...]
    listen_host: str = "0.0.0.0"
    listen_port: int = 9877
    log_level: str = "info"
    log_format: str = "console"
    per_client: PerClientSettings = field(default_factory=PerClientSettings)
    aggregate: AggregateSettings = field(default_factory=AggregateSettings)
    classes: tuple[ClassRule, ...] = ()
    #: Web config file (exporter-toolkit format): TLS, basic auth, headers, rate limit.
    web_config: str | None = None
    #: Paths served without basic auth, for probes.
    open_paths: tuple[str, ...] = DEFAULT_OPEN_PATHS
    #: Whether `POST /-/reload` reloads the configuration (SIGHUP always does).
    reload_endpoint: bool = False
    #: Serve the status page at / and /status.json (off: both answer 404).
    status_page: bool = True
    #: Linked from the status page, e.g. the Grafana dashboards of this exporter.
    dashboard_url: str | None = None


class _Reader:
    """Typed access to one mapping of the config, with errors that name the full key."""

    def __init__(self, data: Mapping[str, Any], where: str = "") -> None:
        self.data = data
        self.where = where

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.key(name), message)

    def check_keys(self, allowed: frozenset[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise self.fail(str(name), "unknown setting")

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(name, f"must be a string, not {type(value).__name__}")
        return str(value)

    def number(self, name: str, default: float, *, minimum: float = 0.0,
               integer: bool = False, maximum: float = MAX_NUMBER) -> float:
        """A finite number in range; with `minimum` 0 a float must be > 0 (a duration)."""
        value = self.data.get(name)
        if value is None:
            return default
        kind = "a whole number" if integer else "a number"
        try:
            if isinstance(value, bool):
                raise ValueError
            real = float(value)
            if not math.isfinite(real):
                raise self.fail(name, f"must be a finite number, got {value!r}")
            number = int(real) if integer else real
            if integer and real != number:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise self.fail(name, f"must be {kind}, got {value!r}") from None
        if number < minimum or (minimum == 0 and not integer and number <= 0):
            bound = f">= {minimum:g}" if minimum or integer else "> 0"
            raise self.fail(name, f"must be {bound}, got {value!r}")
        if number > maximum:
            raise self.fail(name, f"must be <= {maximum:g}, got {value!r}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise self.fail(name, f"must be true or false, got {value!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name)
        if value is None:
            return default
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def names(self, name: str, default: tuple[str, ...],
              choices: tuple[str, ...]) -> tuple[str, ...]:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(name, "must be a list of names")
        for item in value:
            if item not in choices:
                raise self.fail(name, f"{item!r} is not one of {', '.join(choices)}")
        if len(set(value)) != len(value):
            raise self.fail(name, "lists a name twice")
        return tuple(value)

    def mapping(self, name: str) -> _Reader:
        value = self.data.get(name) or {}
        if not isinstance(value, Mapping):
            raise self.fail(name, "must be a mapping")
        return _Reader(value, self.key(name))


def read_config_file(path: str) -> dict[str, Any]:
    """Parse the YAML file; a missing file or bad YAML names the `config` key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of settings")
    return data


def _secret(reader: _Reader, key: str) -> str | None:
    """A secret given inline or as `<key>_file`; inline wins when both are set at one level."""
    inline = reader.text(key)
    if inline is not None:
        return inline
    path = reader.text(f"{key}_file")
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise reader.fail(f"{key}_file", f"cannot read {path}: {exc.strerror}") from exc


def _shard(reader: _Reader) -> tuple[int, int]:
    value = reader.text("shard")
    if value is None:
        return (0, 1)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or int(match[2]) < 1 or int(match[1]) >= int(match[2]):
        raise reader.fail("shard", f"must be INDEX/COUNT with 0 <= INDEX < COUNT, got {value!r}")
    return (int(match[1]), int(match[2]))


def _cluster(reader: _Reader) -> ClusterSettings:
    url = reader.text("emqx_url")
    if not url:
        raise reader.fail("emqx_url", "is required (flag --emqx-url, env EMQX_URL)")
    if not re.match(r"^https?://[^/]+", url):
        raise reader.fail("emqx_url", f"must be an http:// or https:// URL, got {url!r}")
    # Users paste the dashboard URL or an API path; the dialects add /api/vN themselves.
    url = re.sub(r"/api(/v\d)?/?$", "", url.rstrip("/"))
    zone_name = reader.text("timezone") or "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise reader.fail("timezone", f"unknown IANA time zone {zone_name!r}") from None
    tls = reader.mapping("tls")
    tls.check_keys(_TLS_KEYS)
    for key in ("ca_file", "cert_file", "key_file"):
        # Checked here so the error names the full key (clusters[i].tls...); the TLS layer
        # still reports files that exist but hold no usable certificate.
        path = tls.text(key)
        if path is not None and not Path(path).is_file():
            raise tls.fail(key, f"no such file: {path}")
    if tls.text("key_file") and not tls.text("cert_file"):
        raise tls.fail("cert_file", "is required with tls.key_file")
    name = reader.text("name")
    if name is not None and not _NAME.match(name):
        raise reader.fail("name", "may hold letters, digits and . _ : - only")
    api_key = reader.text("api_key")
    api_secret = _secret(reader, "api_secret")
    username = reader.text("username")
    password = _secret(reader, "password")
    page_size = reader.get("page_size")
    settings = ClusterSettings(
        url=url,
        name=name,
        api_key=api_key,
        api_secret=api_secret,
        username=username,
        password=password,
        api=reader.choice("api", "auto", ("auto", "v3", "v4", "v5")),
        listing=reader.choice("listing", "auto", ("auto", "page", "cursor")),
        interval=reader.number("interval", 30.0, maximum=MAX_SECONDS),
        timeout=reader.number("timeout", 10.0, maximum=MAX_SECONDS),
        retries=int(reader.number("retries", 2, integer=True, maximum=10)),
        max_body_bytes=int(reader.number("max_body_bytes", DEFAULT_MAX_BODY, minimum=1024,
                                         integer=True)),
        page_size=(None if page_size in (None, "auto")
                   else int(reader.number("page_size", 0, minimum=1, integer=True))),
        node_concurrency=int(reader.number("node_concurrency", 2, minimum=1, integer=True)),
        max_pages=int(reader.number("max_pages", 10_000, minimum=1, integer=True)),
        timezone=zone,
        tls=TlsSettings(
            ca_file=tls.text("ca_file"),
            cert_file=tls.text("cert_file"),
            key_file=tls.text("key_file"),
            server_name=tls.text("server_name"),
            insecure_skip_verify=tls.boolean("insecure_skip_verify", False),
        ),
        shard=_shard(reader),
        filters=_filters(reader),
    )
    # Last, so a malformed value elsewhere is reported first, as it is where it is written.
    _check_credentials(reader, api_key, api_secret, username, password)
    return settings


def _check_credentials(reader: _Reader, api_key: str | None, api_secret: str | None,
                       username: str | None, password: str | None) -> None:
    """Exactly one complete kind of credential; each mistake names what to set."""
    def where(key: str) -> str:
        return f"{reader.key(key)} ({_CREDENTIAL_SOURCES[key]})"

    if api_key and api_secret is None:
        raise reader.fail("api_secret", f"is required with api_key: set {where('api_secret')}")
    if api_secret is not None and not api_key:
        raise reader.fail("api_key", f"is required with api_secret: set {where('api_key')}")
    if username and password is None:
        raise reader.fail("password", f"is required with username: set {where('password')}")
    if password is not None and not username:
        raise reader.fail("username", f"is required with password: set {where('username')}")
    if api_key and username:
        raise reader.fail("username", "give either an API key (api_key, api_secret) or a "
                                      "dashboard user (username, password), not both")
    if not api_key and not username:
        raise reader.fail("api_key", f"no credentials given: set {where('api_key')} and "
                                     f"{where('api_secret')}, or a dashboard user with "
                                     f"{where('username')} and {where('password')}")


def _listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d+)", value.strip())
    if not match or not 0 <= int(match[2]) <= 65535:
        raise ConfigError("listen", f"must be HOST:PORT, got {value!r}")
    return (match[1] or "0.0.0.0", int(match[2]))


def _parts(reader: _Reader) -> frozenset[str]:
    value = reader.get("parts")
    if value is None:
        return contract.DEFAULT_PARTS
    if not isinstance(value, Mapping):
        raise reader.fail("parts", "must map part names to true/false")
    parts = set(contract.DEFAULT_PARTS)
    for name in value:
        if name not in contract.PARTS_BY_NAME:
            raise reader.fail(f"parts.{name}",
                              f"unknown part; known: {', '.join(contract.PARTS_BY_NAME)}")
        if reader.mapping("parts").boolean(str(name), False):
            parts.add(name)
        else:
            parts.discard(name)
    return frozenset(parts)


def _patterns(reader: _Reader, name: str) -> tuple[Pattern, ...]:
    """A list of regexes: plain strings match the client id, `{username: re}` the username."""
    value = reader.get(name)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise reader.fail(name, "must be a list of regexes")
    patterns = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if isinstance(item, str):
            target, text = "clientid", item
        elif isinstance(item, Mapping) and len(item) == 1 and next(iter(item)) in (
                "clientid", "username") and isinstance(next(iter(item.values())), str):
            target, text = next(iter(item.items()))
        else:
            raise reader.fail(where, "must be a regex or {clientid: regex} or {username: regex}")
        try:
            patterns.append(Pattern(target, re.compile(text)))
        except re.error as exc:
            raise reader.fail(where, f"bad regex: {exc}") from None
    return tuple(patterns)


def _selection(reader: _Reader) -> SelectionSettings:
    watch = reader.get("watch") or []
    if not isinstance(watch, list) or not all(isinstance(w, str | int) for w in watch):
        raise reader.fail("watch", "must be a list of client ids")
    top = reader.mapping("top_k")
    top.check_keys(frozenset(RANKINGS))
    top_k = tuple((name, int(top.number(name, 0, minimum=0, integer=True)))
                  for name in RANKINGS if top.get(name) is not None)
    watch_only = reader.boolean("watch_only", False)
    if watch_only and not watch:
        raise reader.fail("watch_only", "needs a watch list")
    if watch_only and (reader.get("allow") or top_k):
        raise reader.fail("watch_only", "cannot go with allow or top_k: they need the walk")
    return SelectionSettings(
        watch=frozenset(str(w) for w in watch),
        allow=_patterns(reader, "allow"),
        deny=_patterns(reader, "deny"),
        top_k=top_k,
        hysteresis=reader.number("hysteresis", 0.5, minimum=0.0),
        max_series=int(reader.number("max_series", 40_000, minimum=1, integer=True)),
        watch_only=watch_only,
    )


def _filters(reader: _Reader) -> tuple[tuple[str, str], ...]:
    filters = reader.mapping("filters")
    filters.check_keys(_FILTER_KEYS)
    pairs = tuple((k, v) for k in sorted(_FILTER_KEYS) if (v := filters.text(k)) is not None)
    state = dict(pairs).get("conn_state")
    if state is not None and state not in ("connected", "idle", "disconnected"):
        raise filters.fail("conn_state", "must be connected, idle or disconnected")
    return pairs


def _classes(value: Any) -> tuple[ClassRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("classes", "must be a list of {name, clientid|username} rules")
    rules = []
    for i, item in enumerate(value):
        where = f"classes[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, "must be a mapping")
        reader = _Reader(item, where)
        reader.check_keys(frozenset({"name", "clientid", "username"}))
        name = reader.text("name")
        if not name:
            raise reader.fail("name", "is required")
        fields = [f for f in ("clientid", "username") if item.get(f) is not None]
        if len(fields) != 1:
            raise ConfigError(where, "needs exactly one of clientid or username (a regex)")
        pattern = reader.text(fields[0]) or ""
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise reader.fail(fields[0], f"bad regex: {exc}") from None
        rules.append(ClassRule(name, fields[0], compiled))
    return tuple(rules)


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str],
                  config_path: str | None) -> Settings:
    """Merge flags > environment > config file > defaults, then validate everything."""
    data = read_config_file(config_path) if config_path else {}
    _Reader(data).check_keys(TOP_KEYS)
    top = dict(data)
    # `*_FILE` variables first, so an inline secret from the environment beats a file one.
    for variable, key in sorted(ENVIRONMENT.items(),
                                key=lambda item: not item[1].endswith("_file")):
        if environ.get(variable):
            top[key] = environ[variable]
            if key.endswith("_file"):
                top.pop(key.removesuffix("_file"), None)
    top.update({key: value for key, value in flags.items() if value is not None})
    reader = _Reader(top)
    defaults = {k: v for k, v in top.items() if k in CLUSTER_KEYS}
    entries = top.get("clusters")
    clusters: tuple[ClusterSettings, ...]
    if entries is None:
        clusters = (_cluster(_Reader(defaults)),)
    else:
        if not isinstance(entries, list) or not entries:
            raise ConfigError("clusters", "must be a non-empty list")
        built = []
        for i, entry in enumerate(entries):
            where = f"clusters[{i}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(where, "must be a mapping")
            _Reader(entry, where).check_keys(CLUSTER_KEYS)
            merged = {**defaults, **entry}
            for secret in ("api_secret", "password"):
                if f"{secret}_file" in entry and secret not in entry:
                    merged.pop(secret, None)  # the entry's own file beats an inherited value
            built.append(_cluster(_Reader(merged, where)))
        clusters = tuple(built)
    names = [c.name for c in clusters]
    if len(clusters) > 1 and (None in names or len(set(names)) != len(names)):
        raise ConfigError("clusters", "each of several clusters needs its own unique name")
    host, port = _listen(reader.text("listen") or DEFAULT_LISTEN)
    per_client = reader.mapping("per_client")
    per_client.check_keys(_PER_CLIENT_KEYS)
    aggregate = reader.mapping("aggregate")
    aggregate.check_keys(_AGGREGATE_KEYS)
    defaults_pc = PerClientSettings()
    classes = _classes(top.get("classes"))
    aggregate_labels = aggregate.names("labels", ("node", "class") if classes else ("node",),
                                       contract.AGGREGATE_LABEL_CHOICES)
    saturation = aggregate.number("saturation", 0.8)
    if saturation > 1:
        raise aggregate.fail("saturation", f"must be a fill ratio in (0, 1], got {saturation}")
    return Settings(
        clusters=clusters,
        listen_host=host,
        listen_port=port,
        log_level=reader.choice("log_level", "info", ("debug", "info", "warning", "error")),
        log_format=reader.choice("log_format", "console", ("console", "json")),
        per_client=PerClientSettings(
            parts=_parts(per_client),
            labels=per_client.names("labels", (), contract.IDENTITY_LABEL_CHOICES),
            info_labels=per_client.names("info_labels", defaults_pc.info_labels,
                                         contract.INFO_LABEL_CHOICES),
            selection=_selection(per_client),
            state_file=per_client.text("state_file"),
        ),
        aggregate=AggregateSettings(labels=aggregate_labels, saturation=saturation),
        classes=classes,
        web_config=reader.text("web_config"),
        open_paths=reader.names("open_paths", DEFAULT_OPEN_PATHS, OPENABLE_PATHS),
        reload_endpoint=reader.boolean("reload_endpoint", False),
        status_page=reader.boolean("status_page", True),
        dashboard_url=_dashboard_url(reader),
    )


def _dashboard_url(reader: _Reader) -> str | None:
    url = reader.text("dashboard_url")
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        raise reader.fail("dashboard_url", f"must be an http:// or https:// URL, got {url!r}")
    return url
