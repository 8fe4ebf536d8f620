"""Basic auth against bcrypt hashes, and the token bucket of `rate_limit`.

bcrypt costs tens of milliseconds by design (seconds at cost 14 and more): far too much for
every scrape, and a weapon in an attacker's hands. So:

- a verdict, good or bad, is remembered in bounded caches keyed by an HMAC under a per-process
  random key (never the password itself, never a fast hash an attacker could test offline);
  a failure can never push a verified credential out, they are kept apart;
- bcrypt runs on a thread of its own, never the event loop's or the default executor's, and at
  most MAX_PENDING checks run or wait (the same credential waits once): past that a request is
  answered 429 at once; and bcrypt may use BCRYPT_SHARE of one core over time, past which
  too an unchecked credential gets 429 at once. So a flood of bad credentials costs a quarter
  of a core, nothing else, and a scrape whose credential is cached is served at once (one
  thread and a budget: on a busy two-core host bcrypt at full speed took the event loop's
  CPU and cached scrapes' p99 tripled under a flood, bench/bad_credentials.py);
- an unknown user is checked against a configured hash of the cost most users have, and
  refused whatever the outcome: it takes as long as a wrong password of such a user.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import bcrypt

#: Verified credentials remembered; a handful of scrapers needs a handful of entries.
CACHE_SIZE = 64
#: Refused credentials remembered, apart from the verified ones.
FAILED_CACHE_SIZE = 4096
#: bcrypt checks running or waiting at once; more are answered 429 without one.
MAX_PENDING = 8
#: bcrypt reads this many bytes of a password; a longer one is refused, never truncated.
BCRYPT_MAX_PASSWORD = 72
#: A bcrypt hash as htpasswd, Go and Python write it; group 1 is its cost.
BCRYPT_HASH = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_BCRYPT_THREADS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
#: The share of one core bcrypt may use over time; past it (a second of debt) an unchecked
#: credential gets 429 without a check. A scraper needs one check per start or reload.
BCRYPT_SHARE = 0.25


class _Budget:
    """bcrypt's time, charged after each check at 1/BCRYPT_SHARE, drained in real time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._debt = 0.0
        self._last = 0.0  # the last check's time: the estimate of a pending one
        self._at = clock()

    def _drain(self) -> None:
        now = self.clock()
        self._debt = max(0.0, self._debt - (now - self._at))
        self._at = now

    def allows(self, pending: int = 0) -> bool:
        """Room for one more check, counting the `pending` ones at the last check's cost."""
        self._drain()
        return self._debt + pending * self._last / BCRYPT_SHARE <= 1.0

    def charge(self, seconds: float) -> None:
        self._drain()
        self._debt += seconds / BCRYPT_SHARE
        self._last = seconds



class Verdict(enum.Enum):
    OK = "ok"
    REFUSED = "refused"
    #: Too many checks pending: try again (429), no bcrypt was run.
    BUSY = "busy"


class Credentials:
    """The users of `basic_auth_users` and a check of an Authorization header against them."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self.dummy = dummy_hash(self.users.values())
        self.budget = _Budget()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    async def check(self, authorization: str | None) -> Verdict:
        """OK when the header carries a configured user with its password."""
        parsed = _basic(authorization)
        if parsed is None:
            return Verdict.REFUSED
        user, password = parsed
        hashed = self.users.get(user)
        key = hmac.new(self._key, b"\0".join((user.encode(), password, hashed or b"")),
                       hashlib.sha256).digest()
        if key in self._verified:
            self._verified.move_to_end(key)
            return Verdict.OK
        if key in self._failed:
            return Verdict.REFUSED
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= MAX_PENDING or not self.budget.allows(len(self._pending)):
                return Verdict.BUSY
            pending = asyncio.ensure_future(self._bcrypt(key, password, hashed))
            self._pending[key] = pending
        return Verdict.OK if await asyncio.shield(pending) else Verdict.REFUSED

    async def _bcrypt(self, key: bytes, password: bytes, hashed: bytes | None) -> bool:
        try:
            matched, took = await asyncio.get_running_loop().run_in_executor(
                _BCRYPT_THREADS, _timed_checkpw, password, hashed or self.dummy)
        finally:
            del self._pending[key]
        self.budget.charge(took)
        ok = matched and hashed is not None
        cache = self._verified if ok else self._failed
        cache[key] = None
        while len(cache) > (CACHE_SIZE if ok else FAILED_CACHE_SIZE):
            cache.popitem(last=False)
        return ok


def dummy_hash(hashes: Iterable[bytes]) -> bytes:
    """The hash an unknown user is checked against: one of the cost most users have (the
    cheaper on a tie), so an unknown name takes as long as a wrong password of a typical user,
    and no lone costly hash makes every unknown name costly."""
    listed = list(hashes)
    if not listed:
        return b""
    counts = Counter(_cost(h) for h in listed)
    cost = min(counts, key=lambda c: (-counts[c], c))
    return next(h for h in listed if _cost(h) == cost)


def _cost(hashed: bytes) -> int:
    match = BCRYPT_HASH.match(hashed)
    return int(match[1]) if match else 0


def _timed_checkpw(password: bytes, hashed: bytes) -> tuple[bool, float]:
    """The check and its own time (not the wait for the thread), on the bcrypt thread."""
    began = time.perf_counter()
    matched = _checkpw(password, hashed)
    return matched, time.perf_counter() - began


def _checkpw(password: bytes, hashed: bytes) -> bool:
    if len(password) > BCRYPT_MAX_PASSWORD:
        # No configured password is longer: refused whatever the bcrypt release (4.x would
        # compare the first 72 bytes only, 5.0 raises).
        return False
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # not a bcrypt hash
        return False


def _basic(authorization: str | None) -> tuple[str, bytes] | None:
    """(user, password) of a `Basic` Authorization header; None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class TokenBucket:
    """One token every `interval` seconds, at most `burst` saved up; interval 0: no limit.

    As Go's rate.Limiter (the toolkit's): burst 0 with an interval admits nothing.
    """

    def __init__(self, interval: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def allow(self) -> bool:
        if self.interval <= 0:
            return True
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.interval)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
