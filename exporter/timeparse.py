"""EMQX timestamps to Unix seconds: RFC 3339 (v5) and zone-less local time (v3/v4)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from zoneinfo import ZoneInfo

# Clients connected in the same second share a timestamp string; a bounded memo saves most
# parses on large polls without growing without limit.
_MEMO_LIMIT = 200_000
#: Not in the memo (a parsed time may be None: unreadable).
_UNSEEN = object()


class TimeParser:
    """Parse EMQX timestamp strings; zone-less ones are read in the broker's time zone."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._memo: dict[str | None, float | None] = {}
        self._text_memo: dict[str | None, bytes | None] = {}

    def __call__(self, text: str | None) -> float | None:
        """Return Unix seconds, or None for a missing or unreadable value."""
        if text is None:
            return None
        memo = self._memo
        try:
            return memo[text]
        except KeyError:
            pass
        value = self._parse(text)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[text] = value
        return value

    def texts(self, texts: Sequence[str | None]) -> list[bytes | None]:
        """`self(text)` of each text as exposition text (`b"%r"`), None where unreadable.

        The shortest text of a float that reads back as it (`repr`) takes about a microsecond;
        a client's connection time is the same string poll after poll, so its text is kept."""
        memo = self._text_memo
        made: list[object] = list(map(memo.get, texts, repeat(_UNSEEN)))
        if _UNSEEN not in made:
            return made  # type: ignore[return-value]  # every text came from the memo
        # Emptied only when new texts come to a full memo (it passes the limit by one batch at
        # most): emptying it before every batch that might not fit dropped every hit of a poll
        # exporting more clients than the limit.
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        for at, (text, found) in enumerate(zip(texts, made, strict=True)):
            if found is _UNSEEN:
                seconds = self(text)
                made[at] = memo[text] = None if seconds is None else b"%r" % seconds
        return made  # type: ignore[return-value]  # every _UNSEEN replaced

    def _parse(self, text: str) -> float | None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            # v3/v4 print the broker's wall-clock time. In the hour a DST change repeats, fold=0
            # picks the first occurrence, the best guess without more information.
            moment = moment.replace(tzinfo=self.zone)
        return moment.timestamp()
