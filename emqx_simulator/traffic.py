"""Counters and gauges of one connection as a pure function of its profile and elapsed time.

Every counter is ``elapsed_ms x rate >> 32`` (or a sum of such terms), so it is monotonic
while the connection lasts, restarts at 0 on a new ``connected_at``, and two reads at the same
instant agree. Sums hold exactly: ``recv_msg`` = qos0 + qos1 + qos2 and ``send_msg.dropped`` =
expired + queue_full + too_large.
"""

from __future__ import annotations

from emqx_simulator.profile import RATE_SHIFT, Profile

#: Order of the values ``traffic`` returns (v5 names; v5 rows carry them in this order).
TRAFFIC_FIELDS = (
    "subscriptions_cnt",
    "inflight_cnt",
    "mqueue_len",
    "mqueue_dropped",
    "awaiting_rel_cnt",
    "mailbox_len",
    "heap_size",
    "reductions",
    "recv_oct",
    "recv_cnt",
    "recv_pkt",
    "recv_msg",
    "recv_msg.qos0",
    "recv_msg.qos1",
    "recv_msg.qos2",
    "recv_msg.dropped",
    "recv_msg.dropped.await_pubrel_timeout",
    "send_oct",
    "send_cnt",
    "send_pkt",
    "send_msg",
    "send_msg.qos0",
    "send_msg.qos1",
    "send_msg.qos2",
    "send_msg.dropped",
    "send_msg.dropped.expired",
    "send_msg.dropped.queue_full",
    "send_msg.dropped.too_large",
)

Traffic = tuple[int, ...]


def last_connect(anchor_ms: int, period_ms: int, now_ms: int) -> int:
    """The latest reconnect of a client reconnecting every ``period_ms`` since ``anchor_ms``."""
    if now_ms <= anchor_ms:
        return anchor_ms
    return anchor_ms + (now_ms - anchor_ms) // period_ms * period_ms


def _queue_drops(fill: int, mqueue_max: int, elapsed_ms: int) -> int:
    """Messages a full queue has dropped after filling for ``elapsed_ms`` at rate ``fill``."""
    if mqueue_max == 0:  # 0 = unlimited: the queue grows, nothing is dropped
        return 0
    return max(0, (elapsed_ms * fill >> RATE_SHIFT) - mqueue_max)


def traffic(p: Profile, connected_ms: int, created_ms: int, ref_ms: int, online: bool) -> Traffic:
    """Counters and gauges of client ``p`` at ``ref_ms`` (the disconnect time when offline)."""
    e = ref_ms - connected_ms if ref_ms > connected_ms else 0
    rq0, rq1, rq2 = e * p.in0 >> 32, e * p.in1 >> 32, e * p.in2 >> 32
    sq0, sq1, sq2 = e * p.out0 >> 32, e * p.out1 >> 32, e * p.out2 >> 32
    recv_msg, send_msg = rq0 + rq1 + rq2, sq0 + sq1 + sq2
    subs, pings = p.subs, e // (1000 * p.keepalive)
    # Acknowledgements: QoS 1 takes one packet back, QoS 2 three (PUBREC, PUBREL, PUBCOMP).
    recv_acks, send_acks = rq2 + sq1 + 2 * sq2, rq1 + 2 * rq2 + sq2
    recv_pkt = 1 + subs + recv_msg + recv_acks + pings
    send_pkt = 1 + subs + send_msg + send_acks + pings
    recv_oct = 40 + 24 * subs + recv_msg * p.in_size + 4 * recv_acks + 2 * pings
    send_oct = 4 + 5 * subs + send_msg * p.out_size + 4 * send_acks + 2 * pings
    expired, too_large = e * p.drop_expired >> 32, e * p.drop_too_large >> 32
    pubrel_timeout = e * p.pubrel_timeout >> 32
    tick = e // 1000
    if p.slow:
        # The queue belongs to the session: it survives reconnects of a persistent session.
        session = ref_ms - created_ms if ref_ms > created_ms else 0
        fill, qmax = p.fill, p.mqueue_max
        queued = session * fill >> RATE_SHIFT
        mqueue_len = queued if qmax == 0 else min(qmax, queued)
        mqueue_dropped = _queue_drops(fill, qmax, session)
        queue_full = mqueue_dropped - _queue_drops(fill, qmax, max(0, connected_ms - created_ms))
        inflight, mailbox = p.inflight_max, tick % 17
    else:
        mqueue_len = 0 if online else p.offline_queue
        mqueue_dropped = queue_full = mailbox = 0
        inflight = 1 if p.busy_out and tick % 5 == 0 else 0
    return (
        subs, inflight, mqueue_len, mqueue_dropped, tick % 3 if p.busy_qos2 else 0, mailbox,
        p.heap, 3000 + (e * p.reductions_rate >> 32),
        recv_oct, recv_pkt, recv_pkt, recv_msg, rq0, rq1, rq2, pubrel_timeout, pubrel_timeout,
        send_oct, send_pkt, send_pkt, send_msg, sq0, sq1, sq2, expired + queue_full + too_large,
        expired, queue_full, too_large,
    )  # fmt: skip
