"""Basic auth against bcrypt hashes, and the token bucket of `rate_limit`.

bcrypt costs tens of milliseconds by design: far too much for every scrape. A credential that
verified once is remembered in a small bounded cache, keyed by an HMAC under a per-process
random key (never the password itself, never a fast hash of it an attacker could test offline).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import bcrypt

#: Verified credentials remembered; a handful of scrapers needs a handful of entries.
CACHE_SIZE = 64
#: A bcrypt hash as htpasswd, Go and Python write it; group 1 is its cost.
BCRYPT_HASH = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
#: bcrypt runs on its own two threads: a flood of wrong passwords waits its turn there instead
#: of filling the default executor that renders and compresses the snapshot.
_BCRYPT_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bcrypt")


class Credentials:
    """The users of `basic_auth_users` and a check of an Authorization header against them."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        # An unknown user's password is checked against the costliest configured hash, and
        # refused whatever the outcome: a wrong user name takes as long to refuse as a wrong
        # password (no user enumeration), and no bcrypt runs on the event loop to make a dummy.
        self._dummy = max(self.users.values(), key=_cost, default=b"")

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    async def check(self, authorization: str | None) -> bool:
        """True when the header carries a configured user with its password."""
        parsed = _basic(authorization)
        if parsed is None:
            return False
        user, password = parsed
        hashed = self.users.get(user)
        key = hmac.new(self._key, b"\0".join((user.encode(), password, hashed or b"")),
                       hashlib.sha256).digest()
        if hashed is not None and key in self._verified:
            self._verified.move_to_end(key)
            return True
        # Off the event loop: scrapes and probes go on while bcrypt works.
        matched = await asyncio.get_running_loop().run_in_executor(
            _BCRYPT_THREADS, _checkpw, password, hashed or self._dummy)
        if not (matched and hashed is not None):
            return False
        self._verified[key] = None
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return True


def _cost(hashed: bytes) -> int:
    match = BCRYPT_HASH.match(hashed)
    return int(match[1]) if match else 0


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes: no configured password is
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
    """One token every `interval` seconds, at most `burst` saved up; interval 0: no limit."""

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
