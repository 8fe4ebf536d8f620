"""Issue 7's observed defects, each reproduced: a failed poll says so, no number crashes a
poll, EMQX is never hammered (DESIGN.md §5)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from exporter.health import RETRY_AFTER_MAX
from exporter.pipeline import Pipeline
from exporter.state import CounterState
from tests.harness import per_client, rig, value
from tests.test_cli import _restore_logging as _restore_logging  # autouse: main() reconfigures logs

NODE2 = "emqx@10.0.0.2"
NODES = ("emqx@10.0.0.1", "emqx@10.0.0.2", "emqx@10.0.0.3")
CLIENTS_V5 = "GET /api/v5/clients"
LOGIN = "POST /api/v5/login"
ERRORS = "emqx_client_exporter_api_errors_total"


@pytest.mark.parametrize("bad", [2**63, 2**64, 10**30, -1, 1.5, "12x", [1], {"a": 1}, True])
async def test_out_of_range_counter_drops_the_value_not_the_poll(bad: Any) -> None:
    # 2**63 used to raise OverflowError in the counter state on every poll; -1 was exported.
    async with rig(SimSettings(version="5.6.2", clients=60)) as r:
        target = "client-0000004"
        r.cluster.faults.add("bad_field", clientid=target, field="recv_oct", value=bad)
        for _ in range(2):
            (report,) = await r.exporter.poll_all_once()
            assert report.ok and report.error is None
        samples = await r.scrape()
        received = per_client(samples, "emqx_client_received_bytes_total")
        assert target not in received and received  # that value only
        assert target in per_client(samples, "emqx_client_sent_bytes_total")
        assert all(v >= 0 for v in received.values())
        assert value(samples, "emqx_client_exporter_up") == 1
        assert value(samples, ERRORS, reason="bad_value") == 2
        assert value(samples, ERRORS, reason="internal") is None


async def test_a_heap_size_whose_bytes_overflow_is_dropped() -> None:
    # heap_size is exported in bytes (words x 8): 2**60 words would be 2**63 bytes.
    async with rig(SimSettings(version="5.6.2", clients=20),
                   per_client={"max_series": 10_000_000, "parts": {"process": True}}) as r:
        target = "client-0000004"
        r.cluster.faults.add("bad_field", clientid=target, field="heap_size", value=2**60)
        (report,) = await r.exporter.poll_all_once()
        assert report.ok
        samples = await r.scrape()
        heap = per_client(samples, "emqx_client_process_heap_bytes")
        assert target not in heap and heap
        assert all(v <= 2**63 - 1 for v in heap.values())
        assert value(samples, ERRORS, reason="bad_value") == 1


def test_counter_state_takes_the_largest_value_in_range() -> None:
    state = CounterState()
    deltas, _, _, _ = state.observe("c", 1, [2**63 - 1] * 11, 0, 1)
    assert deltas == [2**63 - 1] * 11


async def test_a_crashing_poll_is_down_and_its_data_ages(monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig(SimSettings(version="5.6.2", clients=60)) as r:
        await r.poll()
        assert value(await r.scrape(), "emqx_client_exporter_snapshot_age_seconds") == 0
        pipeline = r.exporter.pollers[0].pipeline
        assert isinstance(pipeline, Pipeline)
        state = pipeline.state

        def overflow(*args: Any) -> Any:
            raise OverflowError("int too big to convert")

        monkeypatch.setattr(state, "observe_page", overflow)
        with capture_logs() as logs:
            for _ in range(3):
                r.clock.advance(30)
                (report,) = await r.exporter.poll_all_once()
                assert report.error is not None and report.error.reason == "internal"
                assert "OverflowError" in str(report.error)
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 0
        assert value(samples, ERRORS, reason="internal") == 3
        assert all(value(samples, "emqx_client_exporter_node_up", node=n) == 0 for n in NODES)
        # Not republished as fresh: the served data is as old as the last good poll.
        assert value(samples, "emqx_client_exporter_snapshot_age_seconds") == 90
        assert per_client(samples, "emqx_client_online") == {}
        warnings = [e for e in logs if e["log_level"] in ("warning", "error")]
        assert len(warnings) == 1 and warnings[0]["event"] == "poll_failed"
        assert warnings[0]["reason"] == "internal"
        assert isinstance(warnings[0]["exc_info"], OverflowError)  # the traceback, once
        assert all("exc_info" in e for e in logs if e["event"] == "poll_crashed_again")
        monkeypatch.undo()
        with capture_logs() as logs:
            r.clock.advance(30)
            (report,) = await r.exporter.poll_all_once()
        assert report.ok
        assert [e["event"] for e in logs if e["event"].startswith("poll_")] == ["poll_recovered"]
        assert value(await r.scrape(), "emqx_client_exporter_snapshot_age_seconds") == 0


async def test_the_poll_loop_survives_a_crash_in_publishing(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    async with rig(SimSettings(clients=20), interval=0.01) as r:
        polls = 0
        four_polls = asyncio.Event()
        original_poll = r.exporter.pollers[0].poll_once

        async def counted() -> Any:
            nonlocal polls
            polls += 1
            if polls == 4:
                four_polls.set()
            return await original_poll()

        monkeypatch.setattr(r.exporter.pollers[0], "poll_once", counted)
        crashes = 0
        original_publish = r.exporter.publish

        async def crashing() -> None:
            nonlocal crashes
            if crashes < 2:
                crashes += 1
                raise RuntimeError("a bug in publishing")
            await original_publish()

        monkeypatch.setattr(r.exporter, "publish", crashing)
        with capture_logs():
            r.exporter.start()
            await asyncio.wait_for(four_polls.wait(), timeout=20)
            await r.exporter.stop()
        assert polls >= 4 and crashes == 2
        samples = await r.scrape()
        assert value(samples, ERRORS, reason="internal") == 2
        assert value(samples, "emqx_client_exporter_up") == 1


async def test_nodes_failing_sets_every_known_node_down_and_series_dropped_unknown() -> None:
    async with rig(SimSettings(version="5.6.2", clients=300),
                   per_client={"max_series": 100}) as r:
        await r.poll()
        samples = await r.scrape()
        assert (value(samples, "emqx_client_exporter_series_dropped") or 0) > 0
        r.cluster.faults.add("http_error", status=503, endpoint="GET /api/v5/nodes")
        r.clock.advance(30)
        await r.poll()
        samples = await r.scrape()
        # The node_up series used to vanish; series_dropped kept the last good value, then 0.
        assert [value(samples, "emqx_client_exporter_node_up", node=n) for n in NODES] == [0] * 3
        assert value(samples, "emqx_client_exporter_series_dropped") is None
        assert value(samples, "emqx_client_exporter_series", kind="per_client") == 0
        assert value(samples, "emqx_client_exporter_up") == 0


async def test_bad_rows_are_logged_once_per_poll_with_a_count_and_an_example() -> None:
    async with rig(SimSettings(version="5.6.2", clients=300)) as r:
        bad = {"client-0000001", "client-0000002", "client-0000003"}
        for clientid in bad:
            r.cluster.faults.add("bad_field", clientid=clientid, field="send_oct", value=-5)
        r.cluster.faults.add("bad_field", clientid="client-0000004", field="clientid", value=7)
        with capture_logs() as logs:
            await r.poll()
        (line,) = [e for e in logs if e["event"] == "bad_client_rows"]
        assert line["values_dropped"] == 3 and line["rows_skipped"] == 1
        assert line["example_clientid"] in bad
        samples = await r.scrape()
        assert value(samples, ERRORS, reason="bad_value") == 3
        assert value(samples, ERRORS, reason="bad_row") == 1


async def test_429_obeys_retry_after_in_full_up_to_ten_minutes() -> None:
    async with rig(SimSettings(version="5.6.2", clients=90), retries=2) as r:
        rule = r.cluster.faults.add("rate_limited", node=NODE2, endpoint=CLIENTS_V5, delay=20,
                                    times=1)
        await r.poll()
        samples = await r.scrape()
        assert value(samples, ERRORS, reason="rate_limited") == 1
        assert value(samples, ERRORS, reason="client_error") is None
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0
        assert value(samples, "emqx_client_exporter_up") == 1
        assert rule.seen == 1  # not retried
        r.clock.advance(10)
        await r.poll()  # before Retry-After: NODE2 is not asked
        assert rule.seen == 1
        assert value(await r.scrape(), "emqx_client_exporter_node_up", node=NODE2) == 0
        r.clock.advance(10)
        await r.poll()
        assert rule.seen == 2
        assert value(await r.scrape(), "emqx_client_exporter_node_up", node=NODE2) == 1
        # A Retry-After longer than the interval is obeyed in full (REFERENCE.md §13.5: the
        # only pacing signal a proxy in front of EMQX gives), up to ten minutes.
        rule = r.cluster.faults.add("rate_limited", node=NODE2, endpoint=CLIENTS_V5, delay=300,
                                    times=1)
        await r.poll()
        for _ in range(9):
            r.clock.advance(30)
            await r.poll()  # 30 to 270 s: NODE2 is not asked
        assert rule.seen == 1
        assert value(await r.scrape(), "emqx_client_exporter_node_up", node=NODE2) == 0
        r.clock.advance(30)
        await r.poll()
        assert value(await r.scrape(), "emqx_client_exporter_node_up", node=NODE2) == 1
        # An hour is bounded by ten minutes.
        rule = r.cluster.faults.add("rate_limited", node=NODE2, endpoint=CLIENTS_V5,
                                    delay=3600, times=1)
        await r.poll()
        r.clock.advance(RETRY_AFTER_MAX - 1)
        await r.poll()
        assert rule.seen == 1
        r.clock.advance(1)
        await r.poll()
        assert value(await r.scrape(), "emqx_client_exporter_node_up", node=NODE2) == 1


async def test_a_failing_node_backs_off_exponentially_up_to_the_interval() -> None:
    async with rig(SimSettings(version="5.6.2", clients=90), interval=80) as r:
        rule = r.cluster.faults.add("http_error", status=500, node=NODE2, endpoint=CLIENTS_V5)
        asked_at = []
        for _ in range(60):  # polls every 5 s for 300 s
            before = rule.seen
            await r.poll()
            if rule.seen > before:
                asked_at.append(r.clock())
            r.clock.advance(5)
        gaps = [b - a for a, b in itertools.pairwise(asked_at)]
        # interval/8 = 10 s, doubling: 10, 20, 40, then the interval (80 s) at most.
        assert gaps[:3] == [10, 20, 40] and set(gaps[3:]) == {80}
        samples = await r.scrape()
        assert value(samples, ERRORS, reason="server_error") == len(asked_at)
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0
        assert value(samples, "emqx_client_exporter_node_up", node="emqx@10.0.0.1") == 1


DASHBOARD = {"api_key": None, "api_secret": None, "username": "admin"}


async def test_a_rejected_login_backs_off_past_emqx_s_lockout() -> None:
    sim = SimSettings(version="e5.9.0", clients=30)
    async with rig(sim, **DASHBOARD, password="rotated") as r:
        attempts = []
        with capture_logs() as logs:
            for _ in range(240):  # two hours of polls every 30 s
                before = r.cluster.requests[LOGIN]
                (report,) = await r.exporter.poll_all_once()
                assert report.error is not None
                if r.cluster.requests[LOGIN] > before:
                    attempts.append(r.clock())
                r.clock.advance(30)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps == sorted(gaps) and max(gaps) >= 600
        # EMQX's rule: 5 failures within 5 minutes lock the user. The exporter alone never
        # gets near it.
        assert all(len([t for t in attempts if a <= t < a + 300]) < 5 for a in attempts)
        samples = await r.scrape()
        assert value(samples, ERRORS, reason="unauthorized") == len(attempts)
        assert value(samples, ERRORS, reason="login_locked") is None
        (line,) = [e for e in logs if e["event"] == "poll_failed"]
        assert "lock" in line["hint"] and "rotated" not in str(line)


async def test_a_locked_user_is_left_alone_for_the_lock_duration() -> None:
    sim = SimSettings(version="e5.9.0", clients=30)
    async with rig(sim, **DASHBOARD, password="public") as r:
        session = r.client.session
        for _ in range(5):  # a human mistyping the password locks the user
            async with session.post(f"{r.sim_url}/api/v5/login",
                                    json={"username": "admin", "password": "typo"}) as answer:
                assert answer.status == 401
        before = r.cluster.requests[LOGIN]
        (report,) = await r.exporter.poll_all_once()
        assert report.error is not None and report.error.reason == "login_locked"
        assert "10 minutes" in str(report.error)
        for _ in range(19):
            r.clock.advance(30)
            await r.poll()
        assert r.cluster.requests[LOGIN] == before + 1  # not asked again while locked
        r.clock.advance(30)
        (report,) = await r.exporter.poll_all_once()
        assert report.ok


def test_simulated_lockout_follows_emqx() -> None:
    """`emqx_dashboard_login_lock_SUITE` (t_login_lock): five wrong passwords lock the user,
    the right one is refused while locked; unknown users are never locked; e5.8 has no lock."""
    from emqx_simulator.auth import Authenticator
    from emqx_simulator.settings import features_for

    def authenticator(version: str, now: list[int]) -> Authenticator:
        sim = SimSettings(version=version)
        return Authenticator(sim, features_for(sim), lambda: now[0])

    def code(auth: Authenticator, user: str, password: str) -> str:
        body = auth.login(f'{{"username":"{user}","password":"{password}"}}'.encode()).body
        assert isinstance(body, bytes)
        return str(body)

    now = [0]
    auth = authenticator("e5.9.0", now)
    for _ in range(5):
        assert "BAD_USERNAME_OR_PWD" in code(auth, "admin", "wrong")
    assert "LOGIN_LOCKED" in code(auth, "admin", "public")
    assert "BAD_USERNAME_OR_PWD" in code(auth, "nobody", "wrong")
    now[0] += 600_000
    assert "token" in code(auth, "admin", "public")
    old = authenticator("5.8.9", [0])
    for _ in range(6):
        code(old, "admin", "wrong")
    assert "token" in code(old, "admin", "public")


async def test_status_page_says_what_failed() -> None:
    async with rig(SimSettings(version="5.6.2", clients=30)) as r:
        r.cluster.faults.add("node_error", node=NODE2, endpoint=CLIENTS_V5)
        await r.poll()
        page = await (await r.client.get("/")).text()
        assert "partial: 1 of 3 nodes failed" in page
        assert "clients: HTTP 500 NODE_DOWN" in page
        r.cluster.faults.clear()
        r.cluster.faults.add("http_error", status=503, endpoint="GET /api/v5/nodes")
        r.clock.advance(30)
        await r.poll()
        page = await (await r.client.get("/")).text()
        assert "failed: server_error: nodes: HTTP 503" in page


def test_check_reports_a_crash_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # `check` used to die with a 42-line traceback.
    from exporter.cli import main
    from tests.test_cli import KEY, threaded_sim

    def overflow(*args: Any) -> Any:
        raise OverflowError("int too big to convert")

    monkeypatch.setattr(CounterState, "observe_page", overflow)
    with threaded_sim(SimSettings(clients=30)) as (_, url):
        code = main(["check", "--emqx-url", url, *KEY])
    captured = capsys.readouterr()
    assert code == 1 and captured.out.count("\n") == 1, captured.out
    assert captured.out.startswith(f"cluster {url}: FAILED: internal error at ")
    assert "OverflowError: int too big to convert [reason internal]" in captured.out
    assert "Traceback" not in captured.err + captured.out


async def test_a_failed_poll_leaves_series_dropped_unknown_not_zero() -> None:
    """A failed poll serves nothing and applies no cap: how many clients the cap leaves out is
    unknown then, so `series_dropped` is absent, not 0 (which would read "nothing left out"
    and resolve SeriesCapReached on every failed poll)."""
    async with rig(SimSettings(clients=120), per_client={"max_series": 17 * 10}) as r:
        await r.poll()
        dropped = "emqx_client_exporter_series_dropped"
        assert (value(await r.scrape(), dropped) or 0) > 0
        r.cluster.faults.add("http_error", status=500, endpoint="GET /api/v5/nodes")
        r.clock.advance(30)
        await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 0
        assert value(samples, dropped) is None
        r.cluster.faults.clear()
        r.clock.advance(30)
        await r.poll()
        assert (value(await r.scrape(), dropped) or 0) > 0
