"""Basic auth and the rate limit (exporter/webauth.py) as a unit.

What tests/test_webgate.py already shows through the gate (one bcrypt per credential, the
dummy hash's cost, the MAX_PENDING flood, the budget's arithmetic) is not repeated; here:
the header's parsing, what an unknown user can and cannot do, the hash forms htpasswd and
Go write, the caches' order and bounds, where bcrypt runs, a waiter that leaves, a BUSY that
is no verdict, and that no password, token or hash reaches a log line or an answer.
bcrypt costs 4 (its lowest) to keep the tests fast; the code treats every cost alike.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from exporter import webauth
from exporter.config import load_settings
from exporter.server import build_app
from exporter.service import Exporter
from exporter.webauth import Credentials, TokenBucket, Verdict, _basic, _Budget
from exporter.webgate import WebGate

PASSWORD = "Kq4-correct-horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))


def header(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":" + (
        password if isinstance(password, bytes) else password.encode())
    return "Basic " + base64.b64encode(raw).decode()


class Spy:
    """Records each bcrypt check (password, hash, thread) and runs the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[bytes, bytes, str]] = []
        self._real = webauth._checkpw
        monkeypatch.setattr(webauth, "_checkpw", self)

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls.append((password, hashed, threading.current_thread().name))
        return self._real(password, hashed)


# --- the Authorization header.

TOKEN = base64.b64encode(b"prometheus:pw").decode()


@pytest.mark.parametrize(("authorization", "parsed"), [
    (None, None),
    ("", None),
    (f"Bearer {TOKEN}", None),
    ("Basic", None),
    ("Basic ", None),
    ("Basic !!not-base64!!", None),
    (f"Basic {TOKEN[:-1]}", None),  # bad padding
    ("Basic " + base64.b64encode(b"no-colon").decode(), None),
    ("Basic " + base64.b64encode(b"\xff\xfe:pw").decode(), None),  # a user that is not UTF-8
    (f"Basic {TOKEN}", ("prometheus", b"pw")),
    (f"basic {TOKEN}", ("prometheus", b"pw")),  # the scheme is case-insensitive
    (f"BASIC   {TOKEN}  ", ("prometheus", b"pw")),
    ("Basic " + base64.b64encode(b"u:a:b:c").decode(), ("u", b"a:b:c")),  # first colon splits
    ("Basic " + base64.b64encode(b"u:").decode(), ("u", b"")),
    ("Basic " + base64.b64encode(b":pw").decode(), ("", b"pw")),
    ("Basic " + base64.b64encode("jürgen:pässword".encode()).decode(),
     ("jürgen", "pässword".encode())),
    ("Basic " + base64.b64encode(b"u:\xff\x00").decode(), ("u", b"\xff\x00")),  # bytes kept
])
def test_the_basic_header_is_parsed_or_refused(authorization: str | None,
                                               parsed: tuple[str, bytes] | None) -> None:
    assert _basic(authorization) == parsed


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer x", "Basic !!", "Basic " + base64.b64encode(b"no-colon").decode()])
async def test_a_malformed_header_is_refused_without_a_bcrypt_check(
        authorization: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    credentials = Credentials({"prometheus": HASH})
    assert await credentials.check(authorization) is Verdict.REFUSED
    assert spy.calls == []


# --- users and hashes.

async def test_right_wrong_and_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    credentials = Credentials({"prometheus": HASH})
    assert credentials.enabled
    assert await credentials.check(header("prometheus", PASSWORD)) is Verdict.OK
    assert await credentials.check(header("prometheus", PASSWORD + "x")) is Verdict.REFUSED
    assert await credentials.check(header("prometheus", "")) is Verdict.REFUSED
    assert await credentials.check(header("Prometheus", PASSWORD)) is Verdict.REFUSED  # exact
    assert await credentials.check(header("nobody", PASSWORD)) is Verdict.REFUSED
    assert [hashed for _, hashed, _ in spy.calls] == [HASH] * 5


async def test_an_unknown_user_with_the_dummy_hashs_password_is_still_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The unknown user is checked against a real user's hash, so the password matches it:
    the check must still refuse (it exists for its time, not for its outcome)."""
    spy = Spy(monkeypatch)
    credentials = Credentials({"prometheus": HASH})
    assert credentials.dummy == HASH
    assert await credentials.check(header("intruder", PASSWORD)) is Verdict.REFUSED
    assert spy.calls == [(PASSWORD.encode(), HASH, spy.calls[0][2])]  # it did run, and matched
    assert await credentials.check(header("intruder", PASSWORD)) is Verdict.REFUSED  # remembered
    assert len(spy.calls) == 1


async def test_no_users_refuses_everyone_without_error() -> None:
    credentials = Credentials({})
    assert not credentials.enabled and credentials.dummy == b""
    assert await credentials.check(header("prometheus", PASSWORD)) is Verdict.REFUSED
    assert await credentials.check(header("", "")) is Verdict.REFUSED


@pytest.mark.parametrize("prefix", [b"$2a$", b"$2b$", b"$2y$"])
async def test_the_hash_forms_of_htpasswd_go_and_python_verify(prefix: bytes) -> None:
    """htpasswd -B writes $2y$, Go $2a$, Python $2b$: the same algorithm, all accepted."""
    hashed = prefix + HASH[4:]
    assert webauth.BCRYPT_HASH.match(hashed)
    credentials = Credentials({"prometheus": hashed})
    assert await credentials.check(header("prometheus", PASSWORD)) is Verdict.OK
    assert await credentials.check(header("prometheus", "wrong")) is Verdict.REFUSED


@pytest.mark.parametrize("library", ["installed", "truncating"])
async def test_a_password_past_bcrypts_72_bytes_is_refused_not_truncated(
        library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """bcrypt reads 72 bytes; a longer password must not pass on its first 72, whatever the
    bcrypt release (5.0 raises on it, 4.x, which pyproject allows, truncates silently)."""
    if library == "truncating":
        real = bcrypt.checkpw
        monkeypatch.setattr(bcrypt, "checkpw",
                            lambda password, hashed: real(password[:72], hashed))
    first = "p" * 72
    credentials = Credentials({"prometheus": bcrypt.hashpw(first.encode(), bcrypt.gensalt(4))})
    assert await credentials.check(header("prometheus", first)) is Verdict.OK
    assert await credentials.check(header("prometheus", first + "-and-more")) is (
        Verdict.REFUSED)
    assert await credentials.check(header("prometheus", first + "é")) is Verdict.REFUSED


async def test_a_hash_that_is_no_bcrypt_hash_refuses_and_does_not_raise() -> None:
    """The web config refuses such a hash at load; should one get here, it fails closed."""
    credentials = Credentials({"prometheus": b"plain-text-" + PASSWORD.encode()})
    assert await credentials.check(header("prometheus", "plain-text-" + PASSWORD)) is (
        Verdict.REFUSED)
    assert await credentials.check(header("nobody", "x")) is Verdict.REFUSED


def test_dummy_hash_of_no_users_or_of_unparsable_hashes() -> None:
    assert webauth.dummy_hash([]) == b""
    odd = b"not-bcrypt"
    assert webauth.dummy_hash([odd]) == odd  # cost 0: still one to check against
    cheap = bcrypt.hashpw(b"x", bcrypt.gensalt(4))
    assert webauth.dummy_hash([odd, cheap, cheap]) == cheap


# --- the caches.

async def test_cache_keys_are_keyed_macs_never_the_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = Credentials({"prometheus": HASH}), Credentials({"prometheus": HASH})
    for credentials in (first, second):
        assert await credentials.check(header("prometheus", PASSWORD)) is Verdict.OK
        assert await credentials.check(header("prometheus", "wrong-one")) is Verdict.REFUSED
    for credentials in (first, second):
        for key in (*credentials._verified, *credentials._failed):
            assert len(key) == 32
            assert PASSWORD.encode() not in key and b"wrong-one" not in key
    # A key of its own per instance (per process): one table says nothing about another.
    assert set(first._verified).isdisjoint(second._verified)


async def test_verified_credentials_are_kept_least_recently_used_first_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webauth, "CACHE_SIZE", 2)
    users = {name: bcrypt.hashpw(name.encode(), bcrypt.gensalt(4)) for name in "abc"}
    credentials = Credentials(users)
    spy = Spy(monkeypatch)
    for name in "ab":
        assert await credentials.check(header(name, name)) is Verdict.OK
    assert await credentials.check(header("a", "a")) is Verdict.OK  # a: used last
    assert await credentials.check(header("c", "c")) is Verdict.OK  # pushes b out, not a
    assert len(spy.calls) == 3
    assert await credentials.check(header("a", "a")) is Verdict.OK
    assert len(spy.calls) == 3
    assert await credentials.check(header("b", "b")) is Verdict.OK
    assert [password for password, _, _ in spy.calls] == [b"a", b"b", b"c", b"b"]


async def test_refused_credentials_are_bounded_oldest_first_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webauth, "FAILED_CACHE_SIZE", 2)
    credentials = Credentials({"prometheus": HASH})
    spy = Spy(monkeypatch)
    for password in ("x1", "x2", "x3"):
        assert await credentials.check(header("prometheus", password)) is Verdict.REFUSED
    assert len(credentials._failed) == 2
    assert await credentials.check(header("prometheus", "x3")) is Verdict.REFUSED  # kept
    assert await credentials.check(header("prometheus", "x1")) is Verdict.REFUSED  # checked again
    assert [password for password, _, _ in spy.calls] == [b"x1", b"x2", b"x3", b"x1"]


# --- where and when bcrypt runs.

async def test_bcrypt_runs_on_its_own_thread_never_the_event_loops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    credentials = Credentials({"prometheus": HASH})
    await credentials.check(header("prometheus", PASSWORD))
    await credentials.check(header("nobody", "x"))
    assert {thread for _, _, thread in spy.calls} <= {
        t.name for t in threading.enumerate() if t.name.startswith("bcrypt")}
    assert all(thread.startswith("bcrypt") for _, _, thread in spy.calls)
    assert threading.current_thread().name not in {thread for _, _, thread in spy.calls}


async def test_a_waiter_that_leaves_does_not_waste_the_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A scraper that disconnects mid-check: its check finishes and is remembered, so the
    retry costs no second bcrypt."""
    started, release = threading.Event(), threading.Event()
    calls: list[bytes] = []
    real = webauth._checkpw

    def gated(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        started.set()
        release.wait(10)
        return real(password, hashed)

    monkeypatch.setattr(webauth, "_checkpw", gated)
    credentials = Credentials({"prometheus": HASH})
    leaving = asyncio.ensure_future(credentials.check(header("prometheus", PASSWORD)))
    assert await asyncio.to_thread(started.wait, 10)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    retry = asyncio.ensure_future(credentials.check(header("prometheus", PASSWORD)))
    release.set()
    assert await retry is Verdict.OK
    assert await credentials.check(header("prometheus", PASSWORD)) is Verdict.OK
    assert calls == [PASSWORD.encode()]
    assert credentials._pending == {}


async def test_busy_is_no_verdict_the_same_credential_is_checked_once_there_is_room() -> None:
    now = [0.0]
    credentials = Credentials({"prometheus": HASH})
    credentials.budget = _Budget(clock=lambda: now[0])
    credentials.budget.charge(2.0 * webauth.BCRYPT_SHARE)  # two seconds of debt
    assert await credentials.check(header("prometheus", PASSWORD)) is Verdict.BUSY
    assert await credentials.check(header("nobody", "x")) is Verdict.BUSY
    assert credentials._verified == {} and credentials._failed == {}  # nothing remembered
    now[0] = 2.0  # the debt drained
    assert await credentials.check(header("prometheus", PASSWORD)) is Verdict.OK
    assert await credentials.check(header("nobody", "x")) is Verdict.REFUSED


async def test_each_check_is_charged_its_own_time() -> None:
    now = [0.0]
    credentials = Credentials({"prometheus": HASH})
    credentials.budget = _Budget(clock=lambda: now[0])
    assert credentials.budget.allows(pending=100)  # nothing charged yet: no estimate
    await credentials.check(header("prometheus", PASSWORD))
    took = credentials.budget._last
    assert 0 < took < 5
    assert credentials.budget._debt == pytest.approx(took / webauth.BCRYPT_SHARE)
    await credentials.check(header("prometheus", PASSWORD))  # cached: no charge
    assert credentials.budget._debt == pytest.approx(took / webauth.BCRYPT_SHARE)


# --- the token bucket (rate_limit).

def test_token_bucket_saves_up_at_most_burst_tokens() -> None:
    now = [0.0]
    bucket = TokenBucket(1.0, 3, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    now[0] = 1_000.0  # a long quiet spell refills to the burst, not beyond
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    now[0] = 1_000.5
    assert not bucket.allow()  # half a token
    now[0] = 1_001.0
    assert bucket.allow()


def test_token_bucket_burst_zero_admits_nothing_as_gos_rate_limiter() -> None:
    now = [0.0]
    bucket = TokenBucket(1.0, 0, clock=lambda: now[0])
    for t in (0.0, 1.0, 60.0, 3600.0):
        now[0] = t
        assert not bucket.allow()
    assert all(TokenBucket(0.0, 0, clock=lambda: now[0]).allow() for _ in range(3))


# --- no secret in a log line or an answer.

@asynccontextmanager
async def gated_url(tmp_path: Path, users: dict[str, str]) -> AsyncIterator[str]:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": users}))
    settings = load_settings({"emqx_url": "http://127.0.0.1:9", "api_key": "k",
                              "api_secret": "s"}, {}, None)
    exporter = Exporter(settings)
    gate = WebGate(str(path))
    server = TestServer(build_app(exporter, poll=False, gate=gate), host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
        await exporter.stop()


async def test_no_password_token_or_hash_in_logs_or_answers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "Wq8-wrong-guess"
    secrets = [PASSWORD, wrong, base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode(),
               base64.b64encode(f"prometheus:{wrong}".encode()).decode(),
               base64.b64encode(f"nobody:{wrong}".encode()).decode(), HASH.decode(),
               HASH.decode()[7:29]]  # the salt
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    with capture_logs() as events:
        async with gated_url(tmp_path, {"prometheus": HASH.decode()}) as url, (
                aiohttp.ClientSession()) as session:
            for authorization, status in ((header("prometheus", PASSWORD), 200),
                                          (header("prometheus", wrong), 401),
                                          (header("nobody", wrong), 401),
                                          ("Basic " + base64.b64encode(
                                              wrong.encode()).decode(), 401)):
                for path in ("/metrics", "/status.json", "/"):
                    async with session.get(url + path,
                                           headers={"Authorization": authorization}) as r:
                        assert r.status == status, (path, authorization)
                        answers.append(f"{dict(r.headers)}{await r.text()}")
    text = "\n".join([*answers, *(repr(e) for e in events),
                      *(record.getMessage() + repr(record.args) for record in caplog.records)])
    assert any(record.name == "aiohttp.access" for record in caplog.records)  # lines to read
    for secret in secrets:
        assert secret not in text
