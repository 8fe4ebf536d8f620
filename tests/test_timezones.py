"""Time zones: v3/v4 print the broker's wall-clock time without an offset, v5 prints RFC 3339.

End to end, a simulated broker in a zone with daylight saving time has clients connected on
both sides of a change; the exporter, told the broker's zone, exports the true instants. The
oracle is a twin simulator with the same population and clock that prints its times in UTC.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from emqx_simulator import SimCluster, SimSettings
from exporter.config import load_settings
from exporter.service import Exporter
from exporter.timeparse import TimeParser
from tests.exposition import Sample, samples_text
from tests.harness import Rig, per_client, rig

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def instant(text: str) -> float:
    """Epoch seconds of an ISO time with an offset (or Z)."""
    return datetime.fromisoformat(text).timestamp()


def utc_epoch(text: str) -> float:
    """Epoch seconds of a UTC twin's timestamp (v3/v4: no offset, v5: +00:00)."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def ambiguous(moment: float, zone: ZoneInfo) -> bool:
    """Whether the wall-clock time of `moment` in `zone` happens twice (an autumn fold)."""
    wall = datetime.fromtimestamp(moment, zone).replace(tzinfo=None)
    return (wall.replace(tzinfo=zone, fold=0).utcoffset()
            != wall.replace(tzinfo=zone, fold=1).utcoffset())


def truth(twin: SimCluster, field: str) -> dict[str, float]:
    """clientid → true epoch seconds of `field` for every listed row that has it."""
    out = {}
    for row in twin.rows():
        text = row.get(field)
        if text:
            out[str(row.get("clientid", row.get("client_id")))] = utc_epoch(text)
    return out


async def scrape_with_zone(r: Rig, zone: str) -> list[Sample]:
    """A second exporter, configured with another zone, polling the same simulator."""
    settings = load_settings({"emqx_url": r.sim_url, "api_key": "exporter",
                              "api_secret": "secret", "retries": 0, "timezone": zone}, {}, None)
    exporter = Exporter(settings, clock=r.clock)
    try:
        (report,) = await exporter.poll_all_once()
        assert report.ok, report.error
        return samples_text(exporter.snapshot.text())
    finally:
        await exporter.stop()


# (api, zone, the UTC instant the clocks change, season)
CHANGES = [
    ("v4", "Europe/Berlin", "2024-03-31T01:00:00Z", "spring"),
    ("v3", "America/New_York", "2024-03-10T07:00:00Z", "spring"),
    ("v4", "America/New_York", "2024-11-03T06:00:00Z", "autumn"),
    ("v3", "Europe/Berlin", "2024-10-27T01:00:00Z", "autumn"),
]


@pytest.mark.parametrize(("api", "zone", "change", "season"), CHANGES,
                         ids=[f"{a}-{z.split('/')[1]}-{s}" for a, z, _, s in CHANGES])
async def test_legacy_wall_clock_times_read_in_the_brokers_zone(
        api: str, zone: str, change: str, season: str) -> None:
    sim = SimSettings(api=api, timezone=zone, nodes=2, clients=400)  # type: ignore[arg-type]
    async with rig(sim, api=api, timezone=zone) as r:
        twin = SimCluster(replace(sim, timezone="UTC"), r.clock)
        switch = instant(change)
        # An hour and a half before, 20 minutes before, 20 minutes after, 90 minutes after.
        before, last, inside, after = (f"client-00000{i}" for i in (11, 12, 13, 14))
        for at, clientid in ((switch - 90 * 60, before), (switch - 20 * 60, last),
                             (switch + 20 * 60, inside), (switch + 90 * 60, after)):
            r.clock.set(at)
            for cluster in (r.cluster, twin):
                cluster.reconnect(clientid)
        if api == "v4":  # persistent sessions going offline after the change
            for i in range(20, 40):
                for cluster in (r.cluster, twin):
                    cluster.disconnect(f"client-{i:07d}")
        r.clock.advance(60)
        await r.poll()
        samples = await r.scrape()
        want = truth(twin, "connected_at")
        got = per_client(samples, "emqx_client_connected_timestamp_seconds")
        assert got.keys() == want.keys()
        assert want[before] < switch < want[after]
        assert any(t < switch for t in want.values()) and any(t > switch for t in want.values())
        tz = ZoneInfo(zone)
        exact = {cid for cid, t in want.items() if not ambiguous(t, tz)}
        assert {cid: got[cid] for cid in exact} == {cid: want[cid] for cid in exact}
        if season == "spring":
            assert exact == set(want)
        else:
            # The hour before the change is printed again after it; zone-less text cannot say
            # which occurrence it was, so it reads as the first: right for a client connected
            # before the change, an hour early for one connected in the repeated hour after it.
            assert {last, inside} <= set(want) - exact
            folded = {cid: got[cid] - want[cid] for cid in set(want) - exact}
            assert folded == {cid: 0 if want[cid] < switch else -3600 for cid in folded}
        if api == "v4":
            offline = truth(twin, "disconnected_at")
            assert any(t > switch for t in offline.values())
            assert per_client(samples, "emqx_client_disconnected_timestamp_seconds") == offline

        # Told the wrong zone (UTC), every value is off by the zone's offset at that instant:
        # the setting is what makes the values right, on both sides of the change.
        wrong = per_client(await scrape_with_zone(r, "UTC"),
                           "emqx_client_connected_timestamp_seconds")
        offsets = {cid: datetime.fromtimestamp(t, tz).utcoffset() for cid, t in want.items()
                   if cid in exact}
        assert {cid: wrong[cid] - want[cid] for cid in offsets} == {
            cid: offset.total_seconds() for cid, offset in offsets.items()  # type: ignore[union-attr]
        }
        assert len(set(offsets.values())) == 2  # standard and daylight time both seen


async def test_v5_offsets_win_over_the_configured_zone() -> None:
    # The broker is in Berlin, the exporter is told New York: v5 timestamps carry their
    # offset, so the setting must not matter, even in the hour the autumn change repeats.
    sim = SimSettings(api="v5", version="5.8.9", timezone="Europe/Berlin", nodes=2, clients=400)
    async with rig(sim, timezone="America/New_York") as r:
        twin = SimCluster(replace(sim, timezone="UTC"), r.clock)
        switch = instant("2024-10-27T01:00:00Z")
        for at, clientid in ((switch - 1800, "client-0000011"), (switch + 1200, "client-0000012"),
                             (switch + 4000, "client-0000013")):
            r.clock.set(at)
            for cluster in (r.cluster, twin):
                cluster.reconnect(clientid)
        await r.poll()
        samples = await r.scrape()
        want = truth(twin, "connected_at")
        assert ambiguous(want["client-0000012"], BERLIN)
        assert per_client(samples, "emqx_client_connected_timestamp_seconds") == pytest.approx(
            want, abs=0.001)
        assert per_client(samples, "emqx_client_disconnected_timestamp_seconds") == (
            pytest.approx(truth(twin, "disconnected_at"), abs=0.001))


# -- TimeParser -------------------------------------------------------------------------------


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("zone", "wall", "expected"), [
    # Berlin, spring: 02:00 CET jumps to 03:00 CEST.
    (BERLIN, "2024-03-31 01:59:59", "2024-03-31 00:59:59"),
    (BERLIN, "2024-03-31 03:00:00", "2024-03-31 01:00:00"),
    (BERLIN, "2024-07-01 12:00:00", "2024-07-01 10:00:00"),
    # Berlin, autumn: 03:00 CEST falls back to 02:00 CET; 02:00-02:59 happens twice.
    (BERLIN, "2024-10-27 01:59:59", "2024-10-26 23:59:59"),
    (BERLIN, "2024-10-27 02:30:00", "2024-10-27 00:30:00"),  # first occurrence (CEST)
    (BERLIN, "2024-10-27 03:00:00", "2024-10-27 02:00:00"),
    # New York, spring: 02:00 EST jumps to 03:00 EDT.
    (NEW_YORK, "2024-03-10 01:59:59", "2024-03-10 06:59:59"),
    (NEW_YORK, "2024-03-10 03:00:00", "2024-03-10 07:00:00"),
    # New York, autumn: 02:00 EDT falls back to 01:00 EST; 01:00-01:59 happens twice.
    (NEW_YORK, "2024-11-03 00:59:59", "2024-11-03 04:59:59"),
    (NEW_YORK, "2024-11-03 01:30:00", "2024-11-03 05:30:00"),  # first occurrence (EDT)
    (NEW_YORK, "2024-11-03 02:00:00", "2024-11-03 07:00:00"),
    (ZoneInfo("UTC"), "2024-03-31 02:30:00", "2024-03-31 02:30:00"),
])
def test_wall_clock_text_in_a_zone(zone: ZoneInfo, wall: str, expected: str) -> None:
    parse = TimeParser(zone)
    assert parse(wall) == utc(expected)
    assert parse(wall) == utc(expected)  # the memo gives the same answer


def test_spring_gap_is_read_with_the_offset_before_the_change() -> None:
    # A broker never prints a time in the gap; if one appears it is read as standard time.
    parse = TimeParser(BERLIN)
    assert parse("2024-03-31 02:30:00") == utc("2024-03-31 01:30:00")


def test_autumn_fold_one_hour_apart_in_truth_one_value_in_text() -> None:
    parse = TimeParser(BERLIN)
    first = datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    second = first + timedelta(hours=1)
    texts = {datetime.fromtimestamp(t.timestamp(), BERLIN).strftime("%Y-%m-%d %H:%M:%S")
             for t in (first, second)}
    assert texts == {"2024-10-27 02:30:00"}
    assert parse(texts.pop()) == first.timestamp()


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, ZoneInfo("UTC")])
@pytest.mark.parametrize(("text", "expected"), [
    ("2024-03-31T03:00:00.250+02:00", "2024-03-31 01:00:00.250"),
    ("2024-10-27T02:30:00.000+01:00", "2024-10-27 01:30:00"),  # second 02:30 in Berlin
    ("2024-10-27T02:30:00.000+02:00", "2024-10-27 00:30:00"),  # first 02:30 in Berlin
    ("2024-11-03T01:30:00-05:00", "2024-11-03 06:30:00"),
    ("2024-01-01T00:00:00Z", "2024-01-01 00:00:00"),
])
def test_rfc3339_offsets_ignore_the_zone(zone: ZoneInfo, text: str, expected: str) -> None:
    assert TimeParser(zone)(text) == utc(expected)


@pytest.mark.parametrize("text", [None, "", "undefined", "2024-13-01 00:00:00", "yesterday"])
def test_unreadable_is_none(text: str | None) -> None:
    assert TimeParser(BERLIN)(text) is None
