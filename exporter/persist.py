"""Watched clients' last-seen times, kept across exporter restarts in a small JSON file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LastSeen = dict[str, dict[str, float]]  # cluster key → client id → Unix time


def load_last_seen(path: str) -> LastSeen:
    """The saved times; a missing file is empty, an unreadable one is logged and ignored."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("state_file_unreadable", path=path, error=str(exc),
                    hint="starting without saved last-seen times")
        return {}
    if not isinstance(data, dict):
        log.warning("state_file_unreadable", path=path, error="not a JSON object")
        return {}
    return {str(cluster): {str(cid): float(ts) for cid, ts in clients.items() if _is_time(ts)}
            for cluster, clients in data.items() if isinstance(clients, dict)}


def _is_time(value: object) -> bool:
    # JSON `true` is an int to Python, and Python's json reads NaN and Infinity: none is a time.
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def save_last_seen(path: str, data: LastSeen) -> None:
    """Write atomically: a temporary file in the same directory, fsynced, then renamed."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
