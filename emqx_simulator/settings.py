"""What to simulate: the settings, and the version-dependent behaviour of the EMQX API as one
table of flags (each citing the release that changed it; facts from
``shared/emqx-api/REFERENCE.md``).
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from typing import Literal

ApiGeneration = Literal["v3", "v4", "v5"]

#: The EMQX version each API generation simulates when none is given.
DEFAULT_VERSIONS: dict[str, str] = {"v3": "3.2.8", "v4": "4.4.19", "v5": "5.8.9"}

#: Clients are numbered with 32 bits.
MAX_CLIENTS = 2**32 - 1

#: Username groups (and, with ``class_prefixes``, client-id prefixes) in the population.
CLIENT_GROUPS: tuple[str, ...] = ("sensor", "gateway", "app")


@dataclass(frozen=True)
class SimSettings:
    """What to simulate: API generation and version, cluster size, population and credentials."""

    api: ApiGeneration = "v5"
    version: str | None = None
    nodes: int = 3
    clients: int = 1000
    seed: int = 1
    client_prefix: str = "client"
    timezone: str = "UTC"
    offline_sessions: float = 0.02
    churn: float = 0.05
    api_key: str = "exporter"
    api_secret: str = "secret"  # noqa: S105 - the simulator's own demo credential
    username: str = "admin"
    password: str = "public"  # noqa: S105 - EMQX's well-known default dashboard password
    token_ttl: float = 3600.0
    frozen: bool = False
    #: Client ids become ``f"{group}-{index:07d}"`` (group: sensor, gateway or app) instead of
    #: ``f"{client_prefix}-{index:07d}"``, so classes by client-id regex have something to match.
    class_prefixes: bool = False
    #: Budget for cached page bodies when ``frozen`` (least recently used pages are evicted).
    page_cache_mb: int = 1024
    #: Offline durable sessions (``durable_sessions.enable = true``, v5 5.6.0+ only), listed
    #: after every node's clients (see ``simulator.durable``).
    durable_sessions: int = 0
    #: How many of the durable sessions have outlived their expiry interval but are still in
    #: durable storage (5.7+ lists them with ``is_expired: true``, ``is_expired/1``,
    #: ``emqx_mgmt_api_clients.erl``@v5.8.9 L1542-1543, L1904).
    expired_durable_sessions: int = 0
    #: Seconds between refreshes of a client's counters in *listings* (EMQX's listing reads
    #: the channel-info table, which each channel refreshes on its stats timer: recorded
    #: ~15 s on 5.3.2 and 5.8.9, ``tests/fixtures/recorded/*/observations.json``), while
    #: ``GET /clients/{id}`` answers from the channel itself and is fresh (and refreshes the
    #: listed row). 0, the default, keeps listings as fresh as lookups, as every test written
    #: before the recordings assumes; tests of staleness set it.
    listing_refresh_s: float = 0.0

    def __post_init__(self) -> None:
        if self.api not in DEFAULT_VERSIONS:
            raise ValueError(f"api must be one of v3, v4, v5, not {self.api!r}")
        major = parse_version(self.effective_version)[0]
        expected = {"v3": (3,), "v4": (4,), "v5": (5, 6)}[self.api]
        if major not in expected:
            raise ValueError(f"version {self.effective_version!r} is not of api {self.api}")
        if self.nodes < 1:
            raise ValueError("nodes must be at least 1")
        if not 0 <= self.clients <= MAX_CLIENTS:
            raise ValueError(f"clients must be between 0 and {MAX_CLIENTS}")
        for name in ("offline_sessions", "churn"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1")
        if self.offline_sessions + self.churn > 1.0:
            raise ValueError("offline_sessions + churn must not exceed 1")
        if self.durable_sessions < 0:
            raise ValueError("durable_sessions must not be negative")
        if self.durable_sessions and (
                self.api != "v5" or parse_version(self.effective_version) < (5, 6, 0)):
            raise ValueError("durable_sessions exist from EMQX 5.6.0 on")
        if not 0 <= self.expired_durable_sessions <= self.durable_sessions:
            raise ValueError("expired_durable_sessions must be between 0 and durable_sessions")
        if self.expired_durable_sessions and parse_version(self.effective_version) < (5, 7, 0):
            raise ValueError("expired durable sessions are listed from EMQX 5.7.0 on")
        if self.listing_refresh_s < 0:
            raise ValueError("listing_refresh_s must not be negative")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc

    @property
    def effective_version(self) -> str:
        """The EMQX version string in effect (the default of the API generation when unset)."""
        return self.version if self.version is not None else DEFAULT_VERSIONS[self.api]


Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    """Parse ``"5.8.9"``, ``"v4.4.19"`` or ``"e5.9.0"`` into a comparable triple."""
    match = re.fullmatch(r"[ve]?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?", text.strip())
    if match is None:
        raise ValueError(f"not an EMQX version: {text!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


@dataclass(frozen=True)
class Features:
    """What the simulated broker version does differently from its neighbours."""

    api: ApiGeneration
    version: Version
    version_text: str
    # v4 -----------------------------------------------------------------------------------------
    #: 4.1.0: ``GET /clients`` queries the whole cluster (4.0.x: the serving node only).
    cluster_wide_clients: bool
    #: 4.1.0: list filters exist at all (4.0.x has none: parameters are ignored).
    v4_filters: bool
    #: 4.3.12 / 4.4.0: ``_like_*`` is a substring match (before: a regular expression).
    like_is_substring: bool
    #: 4.2.0: the ``mountpoint`` field.
    v4_mountpoint: bool
    #: 4.3.9: ``DELETE /clients/{id}`` of an unknown id also answers ``{"code":0}``.
    kick_unknown_ok: bool
    #: 4.3.3: a badly typed filter value answers code 108 (before: ignored).
    v4_bad_value_108: bool
    # v4 and v5 ----------------------------------------------------------------------------------
    #: ``meta.hasnext``: 4.1.0 (v4), 5.0.15 (v5).
    hasnext: bool
    #: Per-QoS and per-reason message counters: 4.4.0 (v4), all of v5.
    qos_split: bool
    #: ``live_connections`` in ``/nodes``: 4.4.19 (v4), 5.1.0 (v5).
    live_connections: bool
    # v5 -----------------------------------------------------------------------------------------
    #: Maximum ``limit``: 1000 in 5.0.0-5.4.x, 10000 from 5.5.0.
    max_limit: int
    #: 5.5.0: rows of a node come in descending client-id order (5.1-5.4: ascending).
    descending: bool
    #: 5.6.0: ``fields=`` and the repeatable exact ``clientid=`` filter.
    fields_param: bool
    #: 5.6.0: offline durable sessions are listed after the nodes' clients when enabled.
    durable_sessions: bool
    #: 5.6.0: ``cluster_sessions`` in ``/nodes``.
    cluster_sessions: bool
    #: 5.7.0: ``GET /clients_v2`` (cursor paging).
    clients_v2: bool
    #: 5.7.x: ``/clients_v2`` meta also carries ``hasnext`` (removed in 5.8.0).
    v2_hasnext: bool
    #: Before e5.9.0 / 6.0.0: a ``/clients_v2`` page may hold more than ``limit`` rows.
    v2_long_pages: bool
    #: 6.1.2 / 6.2.1: ``node=`` on ``/clients_v2`` (PR #17120); ignored in 6.0.3, e5.10.4 and
    #: 6.2.0 (REFERENCE.md §1.4, §12.7).
    v2_node_filter: bool
    #: 5.0.x only: the ``zone`` field.
    v5_zone: bool
    #: 5.4.0-5.8.4: the ``peerport`` field.
    peerport: bool
    #: 5.8.5: a full queue's drops count in ``mqueue_dropped``. Before, ``enqueue_msg`` in
    #: ``emqx_session_mem.erl`` kept the session's queue from before the drop, whose count had
    #: not moved (EMQX fix 14608, commit 706ae81548); recorded: 0 on the real 5.3.2, 10 of 10
    #: on the real 5.8.9 (``test_real_broker_clients.py``). v4 counts them (real 4.4.19).
    mqueue_dropped_counted: bool
    #: 5.7.0: ``durable`` and ``is_expired``.
    durable_fields: bool
    #: 5.8.0: ``peersni``.
    peersni: bool
    #: 5.0.0-5.0.13: ``expiry_interval`` in milliseconds (seconds from 5.0.14).
    expiry_in_ms: bool
    #: 3.0-3.1: session ``expiry_interval`` is the seconds divided by 1000 (fixed in 3.2.0,
    #: REFERENCE.md §12.5).
    v3_expiry_divided: bool
    #: 5.0.0-5.0.14: Basic auth with a dashboard user is accepted (API keys only from 5.0.15).
    dashboard_basic_auth: bool
    #: 5.1.0: ``POST /clients/kickout/bulk``.
    bulk_kick: bool
    #: e5.9.0: five failed logins of a dashboard user in five minutes lock it for ten minutes
    #: (``emqx_dashboard_login_lock.erl``, REFERENCE.md 12.6).
    login_lock: bool


def features_for(settings: SimSettings) -> Features:
    """Derive the feature table of ``settings.api`` at ``settings.effective_version``."""
    v = parse_version(settings.effective_version)
    api = settings.api
    v4, v5 = api == "v4", api == "v5"
    return Features(
        api=api,
        version=v,
        version_text=settings.effective_version.lstrip("ve"),
        cluster_wide_clients=v4 and v >= (4, 1, 0),
        v4_filters=v4 and v >= (4, 1, 0),
        like_is_substring=v >= (4, 4, 0) or (4, 3, 12) <= v < (4, 4, 0),
        v4_mountpoint=v4 and v >= (4, 2, 0),
        kick_unknown_ok=v4 and v >= (4, 3, 9),
        v4_bad_value_108=v4 and v >= (4, 3, 3),
        hasnext=(v4 and v >= (4, 1, 0)) or (v5 and v >= (5, 0, 15)),
        qos_split=(v4 and v >= (4, 4, 0)) or v5,
        live_connections=(v4 and v >= (4, 4, 19)) or (v5 and v >= (5, 1, 0)),
        max_limit=10000 if v >= (5, 5, 0) else 1000,
        descending=v5 and v >= (5, 5, 0),
        fields_param=v5 and v >= (5, 6, 0),
        durable_sessions=v5 and v >= (5, 6, 0),
        cluster_sessions=v5 and v >= (5, 6, 0),
        clients_v2=v5 and v >= (5, 7, 0),
        v2_hasnext=v5 and (5, 7, 0) <= v < (5, 8, 0),
        v2_long_pages=v5 and (5, 7, 0) <= v < (5, 9, 0),
        v2_node_filter=v5 and ((6, 1, 2) <= v < (6, 2, 0) or v >= (6, 2, 1)),
        v5_zone=v5 and v < (5, 1, 0),
        peerport=v5 and (5, 4, 0) <= v < (5, 8, 5),
        mqueue_dropped_counted=v5 and v >= (5, 8, 5),
        durable_fields=v5 and v >= (5, 7, 0),
        peersni=v5 and v >= (5, 8, 0),
        expiry_in_ms=v5 and v < (5, 0, 14),
        v3_expiry_divided=api == "v3" and v < (3, 2, 0),
        dashboard_basic_auth=v5 and v < (5, 0, 15),
        bulk_kick=v5 and v >= (5, 1, 0),
        login_lock=v5 and v >= (5, 9, 0),
    )
