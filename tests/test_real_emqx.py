"""The exporter against what a real EMQX does (REFERENCE.md §12), via the strict simulator.

Each test is a mismatch a user met on day one: it failed before the fix it names.
"""

from __future__ import annotations

from typing import Any

import pytest

from emqx_simulator import SimSettings
from exporter import records
from exporter.dialects import make_dialect
from tests.exposition import Sample
from tests.harness import per_client, rig, value

ODD_PREFIX = "factory/line 1?#%/dev"


def _total(samples: list[Sample], name: str) -> float:
    return sum(v for n, _, v in samples if n == name)


def _names(samples: list[Sample]) -> set[str]:
    return {n for n, _, _ in samples}


def _errors(samples: list[Sample]) -> dict[str, float]:
    return {dict(labels)["reason"]: v for n, labels, v in samples
            if n == "emqx_client_exporter_api_errors_total"}


# -- 1. fields= names valid for the version; a 400 on fields= retries without it -----------------

async def test_watch_only_lookup_with_a_zone_label_finds_the_clients() -> None:
    """`zone` is a label here and `listener` is not: `fields=` must not name `zone`, which the
    5.6+ enum lacks (it answered 400 and every watched client was reported unknown)."""
    watch = ["client-0000001", "client-0000002"]
    async with rig(SimSettings(version="5.8.9", clients=50, offline_sessions=0, churn=0),
                   per_client={"watch": watch, "watch_only": True,
                               "info_labels": ["username", "zone"]}) as r:
        await r.poll()
        samples = await r.scrape()
        assert per_client(samples, "emqx_client_online") == dict.fromkeys(watch, 1.0)
        assert not _errors(samples)
        assert r.cluster.requests["GET /api/v5/clients"] == 1


@pytest.mark.parametrize("watch_only", [False, True])
async def test_a_rejected_fields_list_is_retried_without_it(monkeypatch: pytest.MonkeyPatch,
                                                             watch_only: bool) -> None:
    """Should a build's enum lack a name we send, every walk and lookup asks again without
    `fields=`, once, and the poll is complete (before: only the first node's walk did)."""
    # A wrong belief: that the enum has `zone`, which EMQX rejects.
    monkeypatch.setattr(records, "V5_FIELDS_ENUM", records.V5_FIELDS_ENUM | {"zone"})
    monkeypatch.setattr(records, "V5_NEVER_LISTED", frozenset())
    sim = SimSettings(version="5.8.9", clients=300, nodes=3, offline_sessions=0, churn=0)
    watch = ["client-0000001", "client-0000002"]
    config: dict[str, Any] = {"listing": "page", "node_concurrency": 3,
                              "per_client": {"info_labels": ["username", "zone"], "watch": watch,
                                             "watch_only": watch_only}}
    async with rig(sim, **config) as r:
        for _ in range(2):
            await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 1.0
        online = per_client(samples, "emqx_client_online")
        assert set(online) == set(watch) and all(online.values())
        if not watch_only:
            rows = sum(1 for _ in r.cluster.rows())
            assert _total(samples, "emqx_clients_sessions") == rows
            assert _total(samples, "emqx_client_exporter_node_up") == 3
        rejected = r.cluster.requests["GET /api/v5/clients"] - (2 if watch_only else 6)
        assert 1 <= rejected <= (1 if watch_only else 3), r.cluster.requests


# -- 2. offline durable sessions, appended to every answer -------------------------------------

async def test_lookup_keeps_only_the_asked_ids() -> None:
    watch = ["client-0000001", "client-0000002"]
    sim = SimSettings(version="5.8.9", clients=50, durable_sessions=4)
    async with rig(sim, per_client={"watch": watch, "watch_only": True}) as r:
        await r.poll()
        assert set(per_client(await r.scrape(), "emqx_client_online")) == set(watch)


@pytest.mark.parametrize("version", ["5.6.2", "5.8.9"])
async def test_per_node_walks_count_a_durable_session_once(version: str) -> None:
    """5.6 rows name no node, 5.8 rows the node last connected to; either way one session."""
    sim = SimSettings(version=version, clients=200, nodes=3, durable_sessions=5)
    async with rig(sim, listing="page") as r:
        await r.poll()
        samples = await r.scrape()
        assert _total(samples, "emqx_clients_sessions") == 200 - _gone(r) + 5
        assert value(samples, "emqx_client_exporter_duplicate_clients_total") == 0.0
        assert len([c for c in per_client(samples, "emqx_client_online")
                    if c.startswith("durable-")]) == 5


def _gone(r: Any) -> int:
    """Population clients not listed (clean sessions whose client left)."""
    return 200 - sum(1 for _ in r.cluster.rows())


async def test_a_filtered_walk_leaves_unfiltered_durable_sessions_out() -> None:
    sim = SimSettings(version="5.8.9", clients=200, durable_sessions=5)
    async with rig(sim, listing="page", filters={"conn_state": "connected"}) as r:
        await r.poll()
        samples = await r.scrape()
        online = sum(1 for row in r.cluster.rows() if row["connected"])
        assert _total(samples, "emqx_clients_sessions") == online
        assert _total(samples, "emqx_clients_online") == online


# -- 3. client ids that need percent-encoding in a path ---------------------------------------

@pytest.mark.parametrize(("api", "version"), [("v3", None), ("v4", "4.4.19"), ("v5", "5.5.1")])
async def test_single_lookups_encode_the_id_as_one_segment(api: str, version: str | None) -> None:
    sim = SimSettings(api=api, version=version, clients=20, client_prefix=ODD_PREFIX,  # type: ignore[arg-type]
                      offline_sessions=0, churn=0)
    watch = [f"{ODD_PREFIX}-{i:07d}" for i in (1, 2)]
    async with rig(sim, per_client={"watch": watch, "watch_only": True}) as r:
        await r.poll()
        samples = await r.scrape()
        assert per_client(samples, "emqx_client_online") == dict.fromkeys(watch, 1.0)
        assert not _errors(samples)


# -- 4. watch-only aggregates: what /nodes knows, nothing more ----------------------------------

@pytest.mark.parametrize(("api", "version", "online", "sessions"), [
    ("v3", None, True, False),
    ("v4", "4.4.18", False, True),
    ("v4", "4.4.19", True, True),
    ("v5", "5.0.26", False, True),
    ("v5", "5.1.0", True, True),
])
async def test_watch_only_aggregates_are_absent_where_unknown(api: str, version: str | None,
                                                              online: bool,
                                                              sessions: bool) -> None:
    sim = SimSettings(api=api, version=version, clients=100, nodes=2)  # type: ignore[arg-type]
    async with rig(sim, per_client={"watch": ["client-0000001"], "watch_only": True}) as r:
        await r.poll()
        names = _names(await r.scrape())
        assert ("emqx_clients_online" in names) == online
        assert ("emqx_clients_sessions" in names) == sessions
        assert "emqx_clients_mqueue_messages" not in names  # /nodes has no queue figures


# -- 5. expiry_interval unit -------------------------------------------------------------------

@pytest.mark.parametrize("version", ["5.0.13", "5.0.14"])
async def test_session_expiry_is_seconds_on_every_version(version: str) -> None:
    sim = SimSettings(version=version, clients=40)
    async with rig(sim, per_client={"parts": {"session": True}}) as r:
        await r.poll()
        exported = per_client(await r.scrape(), "emqx_client_session_expiry_seconds")
        population = r.cluster.population
        expected = {population.clientid(i): float(r.cluster.profile(i).expiry)
                    for i in range(40)}
        assert exported and all(v == expected[c] for c, v in exported.items())


# -- 6. cursor listing where it is fixed -------------------------------------------------------

@pytest.mark.parametrize(("version", "dialect"), [
    ("e5.9.1", "v5"), ("e5.9.2", "v5-cursor"), ("e5.9.3", "v5-cursor"), ("e5.10.1", "v5"),
])
def test_cursor_listing_on_fixed_enterprise_versions(version: str, dialect: str) -> None:
    assert make_dialect("v5", version).name == dialect


# -- 7. v3/v4 "undefined" username -------------------------------------------------------------

@pytest.mark.parametrize("api", ["v3", "v4"])
async def test_undefined_username_means_none_for_rules(api: str) -> None:
    sim = SimSettings(api=api, clients=300)  # type: ignore[arg-type]
    config: dict[str, Any] = {
        "classes": [{"name": "anonymous", "username": ""}],
        "per_client": {"allow": [{"username": ""}]},
    }
    async with rig(sim, **config) as r:
        await r.poll()
        samples = await r.scrape()
        nameless = {row.get("clientid") or row["client_id"] for row in r.cluster.rows()
                    if row["username"] == "undefined"}
        assert nameless
        anonymous = sum(v for n, labels, v in samples if n == "emqx_clients_sessions"
                        and dict(labels)["class"] == "anonymous")
        assert anonymous == len(nameless)
        assert set(per_client(samples, "emqx_client_online")) == nameless
        assert not [labels for n, labels, _ in samples
                    if n == "emqx_client_info" and ("username", "undefined") in labels]


def test_the_fields_we_name_are_in_every_fields_enum() -> None:
    """The exporter's `fields=` names against the simulator's enums, which follow EMQX's schema
    version by version (tests/test_conformance.py)."""
    from emqx_simulator.wire import v5_fields_enum

    for version in ((5, 6, 0), (5, 7, 0), (5, 7, 1), (5, 8, 9), (6, 0, 1)):
        assert v5_fields_enum(version) >= records.V5_FIELDS_ENUM, version
        if version >= (5, 7, 0):
            assert v5_fields_enum(version) >= records.V5_7_FIELDS, version
        else:
            assert not v5_fields_enum(version) & records.V5_7_FIELDS, version
    assert not records.V5_FIELDS_ENUM & {"zone", "listener", "is_persistent", "peerport"}


@pytest.mark.parametrize(("version", "exported"), [("3.1.2", False), ("3.2.8", True)])
async def test_v3_expiry_that_cannot_be_undone_is_not_exported(version: str,
                                                               exported: bool) -> None:
    sim = SimSettings(api="v3", version=version, clients=40, offline_sessions=0, churn=0)
    async with rig(sim, per_client={"parts": {"session": True}}) as r:
        await r.poll()
        expiry = per_client(await r.scrape(), "emqx_client_session_expiry_seconds")
        assert bool(expiry) == exported
        expected = {r.cluster.population.clientid(i): float(r.cluster.profile(i).expiry)
                    for i in range(40)}
        assert all(v == expected[c] for c, v in expiry.items())
