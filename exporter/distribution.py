"""Fleet distributions: per aggregate group, how many clients fall in each bucket of a figure.

Filled in the same pass over the records as the aggregate gauges, a few hundred series whatever
the cluster's size. OpenMetrics gets `gaugehistogram` families, text format 0.0.4 the same
samples as gauges (see `contract.Distribution`):

    emqx_clients_mqueue_fill_ratio_bucket{node="emqx@10.0.0.1",le="0.5"} 31800
    emqx_clients_mqueue_fill_ratio_gcount{node="emqx@10.0.0.1"} 33120
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import add
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.utils import floatToGoString

from exporter import contract as c
from exporter.columns import Columns, exact, rates
from exporter.exposition import encode_text, extend, sample_line
from exporter.render import RenderedBatch
from exporter.state import COUNTER_INDEX, Bools, Floats, Ints

_BOUNDS = tuple(d.bounds for d in c.DISTRIBUTIONS)
_WIDTHS = tuple(len(b) + 1 for b in _BOUNDS)  # one more for +Inf
_OFFSETS = tuple(accumulate(_WIDTHS, initial=0))[:-1]
_SLOTS = sum(_WIDTHS)
_BOUND_ARRAYS = tuple(np.array(b, np.float64) for b in _BOUNDS)
# Bounds written as the Go client writes them (`1e+06`), which is what Prometheus users see.
_LE = tuple((*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]
            for bounds in _BOUNDS)
# Figure positions, in the order of `contract.DISTRIBUTIONS`.
(MQUEUE_FILL, INFLIGHT_FILL, RX_BYTES_RATE, TX_BYTES_RATE, RX_MSGS_RATE, TX_MSGS_RATE,
 DROP_RATE, CONNECTION_AGE, SUBSCRIPTIONS) = range(len(c.DISTRIBUTIONS))


def dropped(deltas: Ints) -> npt.NDArray[Any]:
    """Messages dropped for each client in an interval (rows of counter increases): received
    and sent drops.

    A full queue's drops count in `send_msg.dropped` on every version measured (4.4.19, 5.3.2,
    5.8.9), and in `mqueue_dropped` too on 5.8.9 only: adding both counted them twice. v3 has
    no `send_msg.dropped`, only `mqueue_dropped`: the larger of the two is the sent drops.
    """
    at = COUNTER_INDEX
    received, queue, sent = exact(deltas[:, at["received_dropped"]],
                                   deltas[:, at["mqueue_dropped"]], deltas[:, at["sent_dropped"]])
    total: npt.NDArray[Any] = np.maximum(queue, sent) + received
    return total


#: Counter increases binned as rates, in figure order (RX_BYTES_RATE to TX_MSGS_RATE).
_RATE_COUNTERS = ("received_bytes", "sent_bytes", "received_messages", "sent_messages")
#: The drop rate is known where any of these is reported.
_DROP_FIELDS = ("mqueue_dropped", "received_dropped", "sent_dropped")


@dataclass(frozen=True, slots=True)
class Figures:
    """Every distribution's figure for each row of a page, and where it is known."""

    values: tuple[npt.NDArray[Any], ...]
    known: tuple[Bools, ...]


def figures(page: Columns, deltas: Ints, rated: Bools, since: Floats,
            per_second: float | None, now: float) -> Figures:
    """The figures of a page's rows, in the order of `contract.DISTRIBUTIONS`.

    Fill ratios need a length and a limited capacity; a rate, one poll interval's increase of
    a reported counter (`rated`); a connection age, a connected client's known start; a
    figure the version or a rejected value left out is not 0.
    """
    values: list[npt.NDArray[Any]] = []
    known: list[Bools] = []
    for length in ("mqueue_len", "inflight"):  # MQUEUE_FILL, INFLIGHT_FILL
        ratio, ok = page.fill(length)
        values.append(ratio)
        known.append(ok)
    # No rate on the first poll: `per_second` None.
    rated = rated if per_second is not None else np.zeros(page.size, np.bool_)
    for field in _RATE_COUNTERS:
        values.append(rates(deltas[:, COUNTER_INDEX[field]], per_second))
        known.append(rated & page.reported(field))
    values.append(rates(dropped(deltas), per_second))
    known.append(rated & np.logical_or.reduce([page.reported(f) for f in _DROP_FIELDS]))
    started = since == since  # NaN (unknown) != NaN
    values.append(np.maximum(now - np.where(started, since, now), 0.0))
    known.append(started & ~page.offline())
    subscriptions = page.number("subscriptions")
    values.append(subscriptions)
    known.append(subscriptions >= 0)
    return Figures(tuple(values), tuple(known))


class Histograms:
    """Every distribution of one group: bucket counts (not cumulative) and sums."""

    __slots__ = ("counts", "sums")

    def __init__(self) -> None:
        self.counts = np.zeros(_SLOTS, np.int64)
        self.sums: list[float] = [0.0] * len(_BOUNDS)

    def add_rows(self, page: Figures, rows: Ints | slice) -> None:
        """Count these rows of a page (in their order: sums add up as the rows come)."""
        for figure, (values, known) in enumerate(zip(page.values, page.known, strict=True)):
            chosen = values[rows][known[rows]]
            if not len(chosen):
                continue
            bounds = _BOUND_ARRAYS[figure]
            # Values <= le count in le's bucket: a bucket's index is the bounds below the value.
            buckets = np.searchsorted(bounds, chosen, side="left")
            offset = _OFFSETS[figure]
            self.counts[offset:offset + _WIDTHS[figure]] += np.bincount(
                buckets, minlength=_WIDTHS[figure])
            self.sums[figure] += _sum(chosen)

    def add(self, other: Histograms) -> None:
        self.counts = self.counts + other.counts
        self.sums = list(map(add, self.sums, other.sums))


def _sum(values: npt.NDArray[Any]) -> float | int:
    """`sum()` of the values as Python adds them: integers exactly, floats one after the other
    from the first (numpy's `sum` pairs them, which can round differently)."""
    if values.dtype.kind == "f":
        return float(np.add.accumulate(values)[-1])
    total: int = sum(values.tolist())
    return total


def render(rows: Sequence[tuple[str, Histograms]]) -> RenderedBatch:
    """Each distribution in both formats' shapes, from (label set, histograms) rows.

    OpenMetrics wants each group's buckets, count and sum together; text format wants each of
    the three gauge families together. The samples are the same.
    """
    out: RenderedBatch = {}
    if not rows:
        return out
    for i, dist in enumerate(c.DISTRIBUTIONS):
        name = dist.name
        buckets: list[str] = []
        gcounts: list[str] = []
        gsums: list[str] = []
        grouped: list[str] = []
        offset, width = _OFFSETS[i], _WIDTHS[i]
        for labels, h in rows:
            cumulative = list(accumulate(h.counts[offset:offset + width].tolist()))
            group_buckets = [sample_line(f"{name}_bucket", extend(labels, ("le", le)), n)
                             for le, n in zip(_LE[i], cumulative, strict=True)]
            gcount = sample_line(f"{name}_gcount", labels, cumulative[-1])
            gsum = sample_line(f"{name}_gsum", labels, h.sums[i])
            buckets.extend(group_buckets)
            gcounts.append(gcount)
            gsums.append(gsum)
            grouped.extend((*group_buckets, gcount, gsum))
        bucket_family, gcount_family, gsum_family = dist.text_families
        out[dist.family] = encode_text(grouped)
        out[bucket_family] = encode_text(buckets)
        out[gcount_family] = encode_text(gcounts)
        out[gsum_family] = encode_text(gsums)
    return out
