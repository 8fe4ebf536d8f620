"""Immutable rendered snapshots: text 0.0.4 and OpenMetrics bodies, built once, gzipped once.

A scrape only copies bytes out of the current snapshot; nothing here runs on the scrape path
except a join or a compression the first time a variant is asked for.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exporter import contract as c
from exporter.contract import Family, FormatName
from exporter.exposition import header
from exporter.render import Rendered

#: The exposition formats served (the contract defines them once).
Format = FormatName

#: Families appear in this order; a family rendered by several clusters is emitted once.
FAMILY_ORDER: tuple[Family, ...] = (c.CLIENT_FAMILIES + c.AGGREGATE_FAMILIES
                                    + c.DISTRIBUTION_FAMILIES)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def gzip_bytes(pieces: Iterable[bytes]) -> bytes:
    """One gzip member. Level 1: a scrape-sized body compresses ~20x at ~500 MB/s."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush())
    return b"".join(out)


Body = tuple[bytes, ...]


@dataclass(slots=True)
class Snapshot:
    """The data part of a /metrics answer, as of the last completed poll of every cluster.

    Bodies are kept as pieces (a header, then each cluster's samples, per family) and written
    to the socket one by one: a 100 MB snapshot is never copied into one string to be served.
    """

    chunks: tuple[tuple[Family, tuple[bytes, ...]], ...]
    series: int
    created: float
    _gzipped: dict[Format, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pieces(self, fmt: Format) -> Body:
        """The uncompressed body as pieces (cheap: headers are built, samples referenced)."""
        out: list[bytes] = []
        for family, samples in self.chunks:
            if family.only not in (None, fmt):
                continue  # the other format's shape of the same samples
            out.append(header(family, fmt))
            out.extend(samples)
        return tuple(out)

    def gzipped(self, fmt: Format) -> bytes:
        """The body compressed, built on first use and cached (thread-safe)."""
        cached = self._gzipped.get(fmt)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._gzipped.get(fmt)
            if cached is None:
                cached = self._gzipped[fmt] = gzip_bytes(self.pieces(fmt))
            return cached

    def has_gzipped(self, fmt: Format) -> bool:
        return fmt in self._gzipped

    def text(self, fmt: Format = "text") -> str:
        """The whole body as one string (tests and `check`)."""
        return b"".join(self.pieces(fmt)).decode()


def compose(rendered: Sequence[Rendered], created: float) -> Snapshot:
    """Merge the rendered families of every cluster into one snapshot."""
    chunks: list[tuple[Family, tuple[bytes, ...]]] = []
    series = 0
    for family in FAMILY_ORDER:
        samples = tuple(text for r in rendered if family in r for text in r[family])
        if not samples:
            continue
        if family.only != "openmetrics":  # each sample once, not once per format's shape
            series += sum(s.count(b"\n") for s in samples)
        chunks.append((family, samples))
    return Snapshot(tuple(chunks), series, created)


def empty_snapshot(created: float = 0.0) -> Snapshot:
    return Snapshot((), 0, created)


def warm(snapshot: Snapshot, formats: Iterable[Format]) -> None:
    """Compress the formats scrapers asked for recently, off the event loop."""
    for fmt in formats:
        snapshot.gzipped(fmt)
