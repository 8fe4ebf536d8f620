"""The declaration of every setting: type, range, default, help, flag and environment variable.

Everything else derives from it: the defaults, the flags of `run` and `check`, the environment
variables, the tables of README and docs/, and the checks of types and ranges (msgspec, whose
errors are reworded here so each names its key path and what is wrong with the value given).
What a type cannot say is checked by the validators in `config`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    NamedTuple,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import msgspec
from msgspec import Meta

from exporter import contract
from exporter.aggregate import AggregateSettings
from exporter.api import DEFAULT_MAX_BODY
from exporter.errors import ConfigError
from exporter.selection import RANKING_HELP, RANKINGS, SelectionSettings

#: Upper bound of any number in the config unless a key sets its own: beyond it a duration
#: or a count is a typo, and floats lose integer precision.
MAX_NUMBER = 2**53
#: Longest poll interval and request timeout accepted (a day): longer is certainly a mistake.
MAX_SECONDS = 86_400.0
#: Paths that may be served without basic auth (`open_paths`), and those that are by default.
OPENABLE_PATHS = ("/-/healthy", "/-/ready")
DEFAULT_OPEN_PATHS = ("/-/healthy",)
#: Defaults owned by the stages that use them; the schema refers to them, never repeats them.
SELECTION_DEFAULTS = SelectionSettings()
AGGREGATE_DEFAULTS = AggregateSettings()


def _key(help_text: str, *, flag: bool = False, env: str | None = None,
         choices: tuple[str, ...] = (), **limits: Any) -> Meta:
    """A setting's declaration: help, range, the names a list may hold, and whether a flag or
    an environment variable also sets it."""
    return Meta(description=help_text, extra={"help": help_text, "flag": flag, "env": env,
                                              "choices": choices}, **limits)


class Text(str):
    """A string setting; a YAML number (an all-digit password, say) is taken as written."""


def _text_hook(kind: type, value: Any) -> Any:
    if kind is Text and isinstance(value, str | int | float) and not isinstance(value, bool):
        return Text(value)
    raise ValueError("must be a string")


Count = Annotated[int, Meta(ge=1, le=MAX_NUMBER)]
Seconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
#: A list of names, or one comma-separated string of them.
Names = tuple[str, ...] | str


class Schema(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A mapping of settings: unknown keys are errors."""


class TlsConfig(Schema, frozen=True):
    ca_file: Annotated[Text | None, _key("CA bundle that signs EMQX's certificate")] = None
    cert_file: Annotated[Text | None, _key("client certificate for mutual TLS")] = None
    key_file: Annotated[Text | None, _key("private key of cert_file")] = None
    server_name: Annotated[Text | None, _key("name expected in EMQX's certificate")] = None
    insecure_skip_verify: Annotated[bool, _key("skip certificate checks (tests only)")] = False


class FiltersConfig(Schema, frozen=True):
    username: Annotated[Text | None, _key("only this user's clients (EMQX filters)")] = None
    conn_state: Annotated[Literal["connected", "idle", "disconnected"] | None,
                          _key("only clients in this state (EMQX filters)")] = None
    like_clientid: Annotated[Text | None, _key("client id contains this (EMQX filters)")] = None
    like_username: Annotated[Text | None, _key("username contains this (EMQX filters)")] = None


class EventsConfig(Schema, frozen=True):
    """EMQX's client events over MQTT (`exporter.events`); off unless the section is given."""

    enabled: Annotated[bool, _key("subscribe to the client events (the section turns it "
                                  "on)")] = True
    host: Annotated[Text | None, _key("MQTT host; default: the host of emqx_url")] = None
    port: Annotated[Annotated[int, Meta(ge=1, le=65535)] | None,
                    _key("MQTT port; default 1883, 8883 with tls")] = None
    username: Annotated[Text | None, _key("MQTT user allowed to subscribe to $SYS/brokers/+/"
                                          "clients/#")] = None
    password: Annotated[Text | None, _key("MQTT password", env="EMQX_EVENTS_PASSWORD")] = None
    password_file: Annotated[Text | None, _key("file holding the MQTT password",
                                               env="EMQX_EVENTS_PASSWORD_FILE")] = None
    tls: Annotated[TlsConfig | None, _key("TLS to the MQTT listener: {} for the system's CAs, "
                                          "or the keys of tls (server_name excepted)")] = None
    clientid: Annotated[Text | None, _key("MQTT client id; default emqx-client-exporter-"
                                          "HOSTNAME-PID (each replica needs its own)")] = None
    topic: Annotated[Text, _key("topic filter of the client events")] = Text(contract.EVENTS_TOPIC)
    keepalive: Annotated[int, _key("MQTT keepalive, seconds", ge=5, le=3600)] = 30


class ClusterConfig(Schema, frozen=True):
    """How to reach and poll one cluster; at top level, the defaults of every `clusters:` entry."""

    emqx_url: Annotated[Text, _key("EMQX dashboard/API base URL, e.g. http://emqx:18083",
                                   flag=True, env="EMQX_URL")]
    name: Annotated[Text | None, _key("cluster label; required with several clusters")] = None
    api_key: Annotated[Text | None, _key("v5 API key or v3/v4 application id", flag=True,
                                         env="EMQX_API_KEY")] = None
    api_secret: Annotated[Text | None, _key("secret of the API key", flag=True,
                                            env="EMQX_API_SECRET")] = None
    api_secret_file: Annotated[Text | None, _key("file holding api_secret",
                                                 env="EMQX_API_SECRET_FILE")] = None
    username: Annotated[Text | None, _key("dashboard user instead of an API key", flag=True,
                                          env="EMQX_USERNAME")] = None
    password: Annotated[Text | None, _key("dashboard password", flag=True,
                                          env="EMQX_PASSWORD")] = None
    password_file: Annotated[Text | None, _key("file holding password",
                                               env="EMQX_PASSWORD_FILE")] = None
    api: Annotated[Literal["auto", "v3", "v4", "v5"],
                   _key("API generation; auto detects it from /nodes", flag=True)] = "auto"
    listing: Annotated[Literal["auto", "page", "cursor"],
                       _key("v5 listing of clients", flag=True)] = "auto"
    interval: Annotated[Seconds, _key("seconds between polls", flag=True)] = 30.0
    timeout: Annotated[Seconds, _key("seconds allowed per API request, body included",
                                     flag=True)] = 10.0
    retries: Annotated[int, _key("retries of a failed request (connection errors, timeouts, "
                                  "5xx)", ge=0, le=10)] = 2
    page_size: Annotated[Count | Literal["auto"],
                         _key("rows per page, or auto: the largest the version allows")] = "auto"
    node_concurrency: Annotated[Count, _key("nodes walked at once")] = 2
    max_pages: Annotated[Count, _key("pages walked per node at most")] = 10_000
    timezone: Annotated[Text, _key("IANA zone of v3/v4 timestamps (the broker's)")] = Text("UTC")
    tls: Annotated[TlsConfig, _key("TLS to EMQX")] = TlsConfig()
    shard: Annotated[Text, _key("INDEX/COUNT: poll only this replica's share of the nodes",
                                flag=True)] = Text("0/1")
    filters: Annotated[FiltersConfig, _key("filters EMQX applies itself")] = FiltersConfig()
    max_body_bytes: Annotated[int, _key("a larger response is refused while it streams in",
                                        ge=1024, le=MAX_NUMBER)] = DEFAULT_MAX_BODY
    events: Annotated[EventsConfig | None, _key("client events over MQTT (reasons of "
                                                "disconnects); off unless given")] = None


if TYPE_CHECKING:
    TopKConfig = Schema
else:  # one optional count per ranking of `selection.RANKINGS`
    TopKConfig = msgspec.defstruct(
        "TopKConfig", [(name, Annotated[Annotated[int, Meta(ge=0, le=MAX_NUMBER)] | None, _key(
            f"keep the K clients with the most {RANKING_HELP[name]}")], None)
                       for name in RANKINGS], bases=(Schema,), module=__name__)


class PerClientConfig(Schema, frozen=True):
    parts: Annotated[dict[str, bool], _key("part name: true/false, to switch parts on or off")] = {}
    labels: Annotated[Names, _key("identity labels beside clientid",
                                  choices=contract.IDENTITY_LABEL_CHOICES)] = ()
    info_labels: Annotated[Names, _key("labels of emqx_client_info",
                                       choices=contract.INFO_LABEL_CHOICES)] = \
        contract.DEFAULT_INFO_LABELS
    watch: Annotated[tuple[str | int, ...], _key("client ids always exported")] = ()
    allow: Annotated[tuple[str | dict[str, str], ...],
                     _key("regexes of exported clients: clientid, or {username: re}")] = ()
    deny: Annotated[tuple[str | dict[str, str], ...], _key("regexes never exported")] = ()
    top_k: Annotated[TopKConfig, _key("the worst K clients per ranking")] = TopKConfig()
    max_series: Annotated[Count, _key("cap on per-client series")] = SELECTION_DEFAULTS.max_series
    hysteresis: Annotated[float, _key("a top-K member stays while within K x (1 + this)",
                                      gt=0, le=MAX_NUMBER)] = SELECTION_DEFAULTS.hysteresis
    watch_only: Annotated[bool, _key("look up the watch list only, never walk")] = False
    lookup: Annotated[Literal["auto", "batched", "single"], _key(
        "watch-only lookups: batched clientid= filters (5.6+), one GET per id, or auto "
        "(batched on small clusters only: docs/performance.md, Cost to EMQX)")] = \
        SELECTION_DEFAULTS.lookup  # type: ignore[assignment]
    state_file: Annotated[Text | None, _key("where watched clients' last-seen times "
                                            "survive restarts")] = None


class AggregateConfig(Schema, frozen=True):
    labels: Annotated[Names | None, _key("aggregate labels; default node, plus class "
                                         "with classes",
                                         choices=contract.AGGREGATE_LABEL_CHOICES)] = None
    saturation: Annotated[float, _key("fill ratio counted as saturated", gt=0,
                                      le=1)] = AGGREGATE_DEFAULTS.saturation


class ClassConfig(Schema, frozen=True):
    name: Annotated[Text, _key("class label value")]
    clientid: Annotated[Text | None, _key("regex over the client id")] = None
    username: Annotated[Text | None, _key("regex over the username")] = None


class ExporterConfig(Schema, frozen=True):
    """The settings that are not per cluster."""

    listen: Annotated[Text, _key("HOST:PORT of the scrape endpoint",
                                 flag=True)] = Text("0.0.0.0:9877")
    log_level: Annotated[Literal["debug", "info", "warning", "error"],
                         _key("log level", flag=True)] = "info"
    log_format: Annotated[Literal["console", "json"], _key("log format", flag=True)] = "console"
    per_client: Annotated[PerClientConfig, _key("per-client series")] = PerClientConfig()
    aggregate: Annotated[AggregateConfig, _key("aggregate series")] = AggregateConfig()
    classes: Annotated[tuple[ClassConfig, ...], _key("list of {name, clientid or username: "
                                                     "regex}; first match wins")] = ()
    web_config: Annotated[Text | None, _key("web config file (Prometheus exporter-toolkit "
                                            "format): TLS, basic auth, headers",
                                            flag=True)] = None
    open_paths: Annotated[Names, _key("paths served without basic auth",
                                      choices=OPENABLE_PATHS)] = DEFAULT_OPEN_PATHS
    reload_endpoint: Annotated[bool, _key("POST /-/reload reloads the config")] = False
    status_page: Annotated[bool, _key("serve the status page at / and /status.json",
                                      flag=True)] = True
    dashboard_url: Annotated[Text | None, _key("URL of your dashboards, linked from the status "
                                               "page", flag=True)] = None


# --- what derives from the schema ----------------------------------------------------------

class Setting(NamedTuple):
    """One key of the schema, for flags, environment variables and docs."""

    key: str  # dotted, e.g. `per_client.max_series`
    choices: tuple[Any, ...]  # of a Literal setting; () for any other
    default: Any  # msgspec.NODEFAULT when required
    help: str
    flag: str | None
    env: str | None


def _choices(hint: Any) -> tuple[Any, ...]:
    """The values a Literal type (or a list of them) allows, in declared order; else ()."""
    while get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) is tuple and get_args(hint)[1:] == (Ellipsis,):
        return _choices(get_args(hint)[0])
    if get_origin(hint) in (Union, UnionType):
        members = [_choices(h) for h in get_args(hint) if h is not type(None)]
        return tuple(v for m in members for v in m) if all(members) else ()
    return ()


def _settings_of(schema: type, prefix: str = "") -> Iterator[Setting]:
    hints = get_type_hints(schema, include_extras=True)
    for f in msgspec.structs.fields(schema):
        hint = hints[f.name]
        metas = [m for m in get_args(hint)[1:] if isinstance(m, Meta)] \
            if get_origin(hint) is Annotated else []
        extra = {k: v for m in metas for k, v in (m.extra or {}).items()}
        key = prefix + f.name
        inner = get_args(hint)[0] if metas else hint
        if get_origin(inner) in (Union, UnionType):  # an optional section, e.g. `events`
            inner = next((h for h in get_args(inner) if h is not type(None)), inner) \
                if len(get_args(inner)) == 2 and type(None) in get_args(inner) else inner
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            yield from _settings_of(inner, key + ".")
            continue
        default = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
        yield Setting(key, extra.get("choices") or _choices(hint), default, extra.get("help", ""),
                      "--" + key.replace("_", "-") if extra.get("flag") else None,
                      extra.get("env"))


#: Every setting, cluster keys first.
SETTINGS: tuple[Setting, ...] = (*_settings_of(ClusterConfig), *_settings_of(ExporterConfig))
#: Flags of `run` and `check`, and the environment variables with the keys they set.
FLAGS = tuple(s for s in SETTINGS if s.flag)
ENVIRONMENT = {s.env: s.key for s in SETTINGS if s.env}
CLUSTER_KEYS = frozenset(f.name for f in msgspec.structs.fields(ClusterConfig))
TOP_KEYS = CLUSTER_KEYS - {"name"} | {f.name for f in msgspec.structs.fields(ExporterConfig)} | {
    "clusters"}
_BY_KEY = {s.key: s for s in SETTINGS}


def setting(key: str) -> Setting:
    """The setting of a dotted key, e.g. `per_client.labels`."""
    return _BY_KEY[key]


def describe_default(setting: Setting) -> str:
    """A default as written in a config file, or "" when there is none."""
    value = setting.default
    if value is msgspec.NODEFAULT or value is None or value in ((), {}):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def meaning(setting: Setting, *, with_default: bool = True) -> str:
    """The help of a setting with its choices and default, as the docs and `--help` say it."""
    text = setting.help
    if allowed := setting.choices:
        text += f": {', '.join(map(str, allowed))}"
    if with_default and (default := describe_default(setting)):
        text += f" (default {default})"
    return text


def variables(setting: Setting) -> tuple[str, ...]:
    """Environment variables setting a key: its own, and the one of its `<key>_file`."""
    own_file = next((s.env for s in SETTINGS if s.key == f"{setting.key}_file" and s.env), None)
    return tuple(v for v in (setting.env, own_file) if v)


def flag_help(setting: Setting) -> str:
    envs = variables(setting)
    return meaning(setting) + (f" (env {' or '.join(envs)})" if envs else "")


# --- decoding, with errors that name the key path -----------------------------------------------

_Struct = TypeVar("_Struct", bound=msgspec.Struct)
_TYPE_NAMES = {"float": "a number", "int": "a whole number", "str": "a string",
               "bool": "true or false", "array": "a list", "object": "a mapping",
               "null": "empty"}
_MISSING = object()


#: Keys whose values are secrets, at any depth (a web config's users and inline key too): an
#: error about them names the key and the expected type, never the value.
SECRET_KEYS = frozenset({"api_key", "api_secret", "password", "key", "basic_auth_users"})


def decode(data: Mapping[str, Any], schema: type[_Struct], where: str) -> _Struct:
    """`data` as `schema`; strings from flags and variables become numbers where one is due."""
    try:
        return msgspec.convert(_without_nulls(data), schema, strict=False, dec_hook=_text_hook)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), data, schema, where) from None


def _without_nulls(data: Any) -> Any:
    """An empty key (`interval:` or `--interval` not given) means the default."""
    if isinstance(data, Mapping):
        return {k: _without_nulls(v) for k, v in data.items() if v is not None}
    return data


def _explain(message: str, data: Any, schema: type, where: str) -> ConfigError:
    """msgspec's `Expected int >= 1 - at $.a.b` as `where.a.b: must be a whole number >= 1`."""
    reason, _, at = message.partition(" - at `$")
    path = at.rstrip("`")
    if found := re.fullmatch(r"Object contains unknown field `(.*)`", reason):
        return ConfigError(_join(where, f"{path}.{found[1]}"), "unknown setting")
    if found := re.fullmatch(r"Object missing required field `(.*)`", reason):
        key = f"{path}.{found[1]}".lstrip(".")
        known = _BY_KEY.get(key)
        ways = [w for w in (known.flag, known.env) if w] if known else []
        return ConfigError(_join(where, f"{path}.{found[1]}"),
                           "is required" + (f" (set {' or '.join(ways)})" if ways else ""))
    value = _value_at(data, path)
    secret = any(str(step) in SECRET_KEYS for step in _steps(path))
    got = "" if value is _MISSING or secret else f", got {value!r}"
    if reason.startswith("Invalid enum value"):
        key = re.sub(r"\[\d+\]", "", path).lstrip(".")
        allowed = _BY_KEY[key].choices
        return ConfigError(_join(where, path), f"must be one of {', '.join(allowed)}{got}")
    if found := re.fullmatch(r"Expected `([^`]*)`(?:, got `[^`]*`)?(.*)", reason):
        kinds = " or ".join(_TYPE_NAMES.get(k, k) for k in found[1].split(" | "))
        bound = re.sub(r"(\d+)\.0\b", r"\1", found[2])  # `> 0.0` reads better as `> 0`
        return ConfigError(_join(where, path), f"must be {kinds}{bound}{got}")
    if reason == "Number out of range":
        reason = "is out of range"
    return ConfigError(_join(where, path), reason + got)


def _join(where: str, path: str) -> str:
    """`clusters[1]` and msgspec's `.tls.ca_file` as `clusters[1].tls.ca_file`."""
    return f"{where}{path}".lstrip(".")


def _steps(path: str) -> list[str | int]:
    return [int(i) if i else name for name, i in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path)]


def _value_at(data: Any, path: str) -> Any:
    for step in _steps(path):
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data
