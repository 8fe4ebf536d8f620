"""Fleet distributions: per aggregate group, how many clients fall in each bucket of a figure.

Filled in the same pass over the records as the aggregate gauges, a few hundred series whatever
the cluster's size. OpenMetrics gets `gaugehistogram` families, text format 0.0.4 the same
samples as gauges (see `contract.Distribution`):

    emqx_clients_mqueue_fill_ratio_bucket{node="emqx@10.0.0.1",le="0.5"} 31800
    emqx_clients_mqueue_fill_ratio_gcount{node="emqx@10.0.0.1"} 33120
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, compress, repeat
from operator import add, and_, attrgetter, is_not, itemgetter, mul, sub, truediv
from typing import Any

from prometheus_client.utils import floatToGoString

from exporter import contract as c
from exporter.exposition import encode_text, extend, sample_line
from exporter.records import ClientRecord
from exporter.render import RenderedBatch

_BOUNDS = tuple(d.bounds for d in c.DISTRIBUTIONS)
_WIDTHS = tuple(len(b) + 1 for b in _BOUNDS)  # one more for +Inf
_OFFSETS = tuple(accumulate(_WIDTHS, initial=0))[:-1]
_SLOTS = sum(_WIDTHS)
# Bounds written as the Go client writes them (`1e+06`), which is what Prometheus users see.
_LE = tuple((*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]
            for bounds in _BOUNDS)
# Figure positions, in the order of `contract.DISTRIBUTIONS`.
(MQUEUE_FILL, INFLIGHT_FILL, RX_BYTES_RATE, TX_BYTES_RATE, RX_MSGS_RATE, TX_MSGS_RATE,
 DROP_RATE, CONNECTION_AGE, SUBSCRIPTIONS) = range(len(c.DISTRIBUTIONS))


def fill(length: int | None, capacity: int | str | None) -> float | None:
    """A fill ratio, or None when the capacity is unlimited (0, "infinity") or unknown."""
    if length is None or not isinstance(capacity, int) or capacity <= 0:
        return None
    return length / capacity


def dropped(deltas: Sequence[int]) -> int:
    """Messages dropped for a client in an interval: received and sent drops.

    A full queue's drops count in `send_msg.dropped` on every version measured (4.4.19, 5.3.2,
    5.8.9), and in `mqueue_dropped` too on 5.8.9 only: adding both counted them twice. v3 has
    no `send_msg.dropped`, only `mqueue_dropped`: the larger of the two is the sent drops.
    """
    return deltas[5] + max(deltas[4], deltas[7])  # received, max(mqueue_dropped, sent)


#: Capacities that mean "unlimited" (v5 writes some as the string "infinity").
_UNLIMITED: dict[object, None] = {0: None, "infinity": None}


def _ratios(records: Sequence[ClientRecord], length: str, capacity: str) -> list[float]:
    lengths = list(map(attrgetter(length), records))
    capacities = list(map(attrgetter(capacity), records))
    if None not in lengths and set(map(type, capacities)) == {int} and min(capacities) > 0:
        return list(map(truediv, lengths, capacities))  # the common case, in C
    # Still in C: unlimited capacities become None, then pairs with a None are left out.
    known = list(map(_UNLIMITED.get, capacities, capacities))
    keep = list(map(and_, map(is_not, known, repeat(None)), map(is_not, lengths, repeat(None))))
    kept: list[Any] = list(compress(known, keep))
    if set(map(type, kept)) <= {int} and min(kept, default=1) > 0:
        return list(map(truediv, compress(lengths, keep), kept))
    return [n / m for n, m in zip(lengths, capacities, strict=True)  # odd values: one by one
            if n is not None and type(m) is int and m > 0]


def _present(values: Sequence[float], records: Sequence[ClientRecord],
             *fields: str) -> Sequence[float]:
    """The values of the records that have at least one of the fields (a figure the version or
    a rejected value left out is not 0)."""
    if any(None not in map(attrgetter(f), records) for f in fields):
        return values  # the common case: one field every record has, found by a scan in C
    columns = [list(map(attrgetter(f), records)) for f in fields]
    keep = [any(v is not None for v in row) for row in zip(*columns, strict=True)]
    return list(compress(values, keep))


_RATE_COUNTERS = ((RX_BYTES_RATE, 0, "received_bytes"), (TX_BYTES_RATE, 1, "sent_bytes"),
                  (RX_MSGS_RATE, 2, "received_messages"), (TX_MSGS_RATE, 3, "sent_messages"))
_DROP_FIELDS = ("mqueue_dropped", "received_dropped", "sent_dropped")


class Histograms:
    """Every distribution of one group: bucket counts (not cumulative) and sums.

    The pipeline queues each client and bins a page's worth at once (`flush`): column
    operations in C instead of a dozen Python steps per client.
    """

    __slots__ = ("counts", "deltas", "records", "since", "sums")

    def __init__(self) -> None:
        self.counts = [0] * _SLOTS
        self.sums = [0.0] * len(_BOUNDS)
        # The queue, appended to by the pipeline's loop directly (a call per client costs):
        #: each client's record, and its counter increases if they make a rate (else None);
        self.records: list[ClientRecord] = []
        self.deltas: list[list[int] | None] = []
        #: connected clients' connection starts, when known (Unix time).
        self.since: list[float] = []

    def flush(self, per_second: float | None, now: float) -> None:
        """Bin the queued clients; `per_second` is 1 / the seconds since the previous poll."""
        records = self.records
        if not records:
            return
        self._bin(MQUEUE_FILL, _ratios(records, "mqueue_len", "mqueue_max"))
        self._bin(INFLIGHT_FILL, _ratios(records, "inflight", "inflight_max"))
        if per_second is not None and any(self.deltas):
            keep = list(map(is_not, self.deltas, repeat(None)))
            rated = list(compress(records, keep))
            rows: list[list[int]] = list(compress(self.deltas, keep))  # type: ignore[arg-type]
            factor = repeat(per_second)
            for figure, index, name in _RATE_COUNTERS:
                rates = list(map(mul, map(itemgetter(index), rows), factor))
                self._bin(figure, _present(rates, rated, name))
            drops = list(map(mul, map(add, map(max, map(itemgetter(4), rows),
                                               map(itemgetter(7), rows)),
                                      map(itemgetter(5), rows)), factor))  # as `dropped`
            self._bin(DROP_RATE, _present(drops, rated, *_DROP_FIELDS))
        ages = list(map(sub, repeat(now), self.since))
        if ages and min(ages) < 0:
            ages = [age if age > 0 else 0.0 for age in ages]  # a start in the future: age 0
        self._bin(CONNECTION_AGE, ages)
        subscriptions = list(map(attrgetter("subscriptions"), records))
        if None in subscriptions:
            subscriptions = [n for n in subscriptions if n is not None]
        self._bin(SUBSCRIPTIONS, subscriptions)
        self.records, self.deltas, self.since = [], [], []

    def _bin(self, figure: int, values: Sequence[float]) -> None:
        if not values:
            return
        # Sorting is C work and nearly free on the long runs of equal values a fleet has (idle
        # clients, empty queues); then each bound is one bisection, not one per client.
        ordered = sorted(values)
        counts = self.counts
        below = 0
        offset = _OFFSETS[figure]
        for i, bound in enumerate(_BOUNDS[figure]):
            upto = bisect_right(ordered, bound)  # values <= le
            counts[offset + i] += upto - below
            below = upto
        counts[offset + len(_BOUNDS[figure])] += len(ordered) - below
        self.sums[figure] += sum(values)

    def add(self, other: Histograms) -> None:
        self.counts = list(map(add, self.counts, other.counts))
        self.sums = list(map(add, self.sums, other.sums))


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
            cumulative = list(accumulate(h.counts[offset:offset + width]))
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
