"""Record real EMQX brokers' answers to every request the exporter makes (and its error cases).

    EMQX_TEST_SLOT=1 python -m tests.record_emqx [4.4.19 5.3.2 5.8.9]

starts the brokers of `tests/realbroker.py`, puts MQTT clients in known states (`tests/mqtt.py`),
sends each request of `SPECS` and writes `tests/fixtures/recorded/<version>/<name>.json` (format:
`tests/recordings.py`), plus `observations.json`: figures seen while doing so (a listing that
lags a lookup, a full queue's counters, durable sessions' queue) that the simulator models.
`tests/test_recordings.py` replays the recordings against the simulator.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.mqtt import MqttClient
from tests.realbroker import KINDS, Broker, BrokerPool, wait_until
from tests.recordings import KEPT_HEADERS, RECORDED, Spec, resolve, sent_target

V5_ONLY = ("5.3.2", "5.8.9")
FIELDS = ("clientid,username,node,connected,connected_at,created_at,disconnected_at,"
          "mqueue_len,mqueue_dropped,send_msg.dropped,expiry_interval,clean_start,"
          "subscriptions_cnt,inflight_cnt,recv_msg,send_msg")
#: Messages published to the offline session; the full one gets more than its queue holds
#: (`max_mqueue_len` 1000 by default in 4.4 and 5.x).
QUEUED = 5
OVERFLOW = 1010
#: More offline persistent sessions, so a /clients_v2 walk of 2 a page has a durable stage
#: longer than a page (5.8.9 with durable sessions).
DURABLE_EXTRA = 4
LAG_WAIT_S = 60.0

SPECS: tuple[Spec, ...] = (
    # -- discovery and aggregates
    Spec("nodes", "/api/{api}/nodes", why="discovery; /nodes connections and live_connections"),
    Spec("nodes_bad_key", "/api/{api}/nodes", auth="bad_key", why="wrong credentials: 401 body"),
    Spec("nodes_no_auth", "/api/{api}/nodes", auth="none", why="no Authorization header"),
    Spec("node_one", "/api/{api}/nodes/{node}", why="one node"),
    Spec("node_unknown", "/api/{api}/nodes/nosuch@127.0.0.1", why="an unknown node"),
    Spec("api_v5_on_v4", "/api/v5/nodes", versions=("4.4.19",), why="generation detection"),
    Spec("api_v4_on_v5", "/api/v4/nodes", versions=V5_ONLY, why="generation detection"),
    # -- v4 listing (per node, _page/_limit) and lookups
    Spec("v4_node_clients", "/api/v4/nodes/{node}/clients",
         (("_page", "1"), ("_limit", "10000")), versions=("4.4.19",), why="the v4 walk"),
    Spec("v4_node_clients_page2", "/api/v4/nodes/{node}/clients",
         (("_page", "2"), ("_limit", "3")), versions=("4.4.19",), why="v4 paging meta"),
    Spec("v4_clients", "/api/v4/clients", (("_page", "1"), ("_limit", "3")),
         versions=("4.4.19",), why="cluster-wide listing"),
    Spec("v4_node_clients_unknown_node", "/api/v4/nodes/nosuch@127.0.0.1/clients",
         (("_page", "1"), ("_limit", "10")), versions=("4.4.19",), why="an unknown node"),
    Spec("v4_node_clients_limit_0", "/api/v4/nodes/{node}/clients",
         (("_page", "1"), ("_limit", "0")), versions=("4.4.19",), why="a limit out of range"),
    Spec("v4_node_clients_bad_page", "/api/v4/nodes/{node}/clients",
         (("_page", "x"), ("_limit", "10")), versions=("4.4.19",), why="a non-integer page"),
    Spec("v4_lookup_online", "/api/v4/clients/{online}", versions=("4.4.19",),
         why="watch lookup of a connected client"),
    Spec("v4_lookup_offline", "/api/v4/clients/{offline}", versions=("4.4.19",),
         why="lookup of an offline persistent session (fresh queue figures)"),
    Spec("v4_lookup_slashed_once", "/api/v4/clients/{slashed}", versions=("4.4.19",),
         why="an id with / encoded once is found"),
    Spec("v4_lookup_slashed_twice", "/api/v4/clients/{slashed}", encode="twice",
         versions=("4.4.19",), why="encoded twice it is not (200, empty data)"),
    Spec("v4_lookup_online_twice", "/api/v4/clients/{online}", encode="twice",
         versions=("4.4.19",), why="every byte encoded twice: not found"),
    Spec("v4_lookup_missing", "/api/v4/clients/{missing}", versions=("4.4.19",),
         why="a missing client: 200 with empty data"),
    Spec("v4_lookup_full", "/api/v4/clients/{full}", versions=("4.4.19",),
         why="a full queue: which counters count the drops"),
    # -- v5 page listing, fields=, lookups
    Spec("v5_clients", "/api/v5/clients", (("node", "{node}"), ("page", "1"), ("limit", "1000")),
         versions=V5_ONLY, why="the v5 page walk (5.3.2: no fields=)"),
    Spec("v5_clients_fields", "/api/v5/clients",
         (("node", "{node}"), ("page", "1"), ("limit", "1000"), ("fields", FIELDS)),
         versions=("5.8.9",), why="the v5 page walk with fields= (durable rows ignore it)"),
    Spec("v5_clients_page2", "/api/v5/clients", (("page", "2"), ("limit", "3")),
         versions=V5_ONLY, why="paging meta"),
    Spec("v5_clients_unknown_node", "/api/v5/clients",
         (("node", "nosuch@127.0.0.1"), ("page", "1"), ("limit", "10")), versions=V5_ONLY,
         why="an unknown node"),
    Spec("v5_clients_limit_over", "/api/v5/clients", (("page", "1"), ("limit", "10001")),
         versions=V5_ONLY, why="a limit over the maximum"),
    Spec("v5_clients_limit_1001", "/api/v5/clients", (("page", "1"), ("limit", "1001")),
         versions=V5_ONLY, why="1001: over 5.3.2's maximum, within 5.8.9's"),
    Spec("v5_clients_limit_0", "/api/v5/clients", (("page", "1"), ("limit", "0")),
         versions=V5_ONLY, why="a limit under the minimum"),
    Spec("v5_clients_fields_zone", "/api/v5/clients",
         (("page", "1"), ("limit", "10"), ("fields", "clientid,zone")), versions=("5.8.9",),
         why="a fields= name outside the enum"),
    Spec("v5_clients_fields_is_persistent", "/api/v5/clients",
         (("page", "1"), ("limit", "10"), ("fields", "clientid,is_persistent")),
         versions=("5.8.9",), why="is_persistent is outside the enum too"),
    Spec("v5_lookup_batch", "/api/v5/clients",
         (("limit", "1000"), ("fields", FIELDS), ("page", "1"), ("clientid", "{online}"),
          ("clientid", "{offline}"), ("clientid", "{missing}")), versions=("5.8.9",),
         why="batched watch lookups (5.6+)"),
    Spec("v5_lookup_batch_532", "/api/v5/clients",
         (("limit", "1000"), ("page", "1"), ("clientid", "{online}")), versions=("5.3.2",),
         why="before 5.6 clientid= is no filter"),
    Spec("v5_lookup_online", "/api/v5/clients/{online}", versions=V5_ONLY,
         why="watch lookup of a connected client"),
    Spec("v5_lookup_offline", "/api/v5/clients/{offline}", versions=V5_ONLY,
         why="lookup of an offline persistent (5.8.9: durable) session"),
    Spec("v5_lookup_slashed", "/api/v5/clients/{slashed}", versions=V5_ONLY,
         why="an id with / encoded once"),
    Spec("v5_lookup_missing", "/api/v5/clients/{missing}", versions=V5_ONLY,
         why="a missing client: 404"),
    Spec("v5_lookup_full", "/api/v5/clients/{full}", versions=V5_ONLY,
         why="a full queue: which counters count the drops"),
    Spec("v5_login", "/api/v5/login", method="POST", auth="none",
         body={"username": "admin", "password": "public"}, versions=V5_ONLY,
         why="dashboard login"),
    Spec("v5_login_bad", "/api/v5/login", method="POST", auth="none",
         body={"username": "admin", "password": "wrong"}, versions=V5_ONLY,
         why="dashboard login with a wrong password"),
    Spec("v5_nodes_bearer", "/api/v5/nodes", auth="bearer", versions=V5_ONLY,
         why="a request with the login token"),
    Spec("v5_nodes_bad_token", "/api/v5/nodes", auth="bad_bearer", versions=V5_ONLY,
         why="an unknown token"),
    # -- /clients_v2 (5.7+): the first page; the walk is recorded page by page below
    Spec("v5_clients_v2_bad_cursor", "/api/v5/clients_v2",
         (("limit", "3"), ("cursor", "garbage")), versions=("5.8.9",), why="a bad cursor"),
    Spec("v5_clients_v2_limit_over", "/api/v5/clients_v2", (("limit", "10001"),),
         versions=("5.8.9",), why="a limit over the maximum"),
    Spec("v5_clients_v2_fields", "/api/v5/clients_v2", (("limit", "100"), ("fields", FIELDS)),
         versions=("5.8.9",), why="fields= on clients_v2 (validated, then ignored)"),
)


def _auth_header(broker: Broker, auth: str, token: str | None) -> str | None:
    if auth == "none":
        return None
    if auth in ("bearer", "bad_bearer"):
        return f"Bearer {token if auth == 'bearer' else 'not-a-token'}"
    user, secret = broker.api_key, broker.api_secret
    if auth == "bad_key":
        secret = "wrong-" + secret
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def send(broker: Broker, method: str, target: str, body: Any,
         authorization: str | None) -> tuple[int, dict[str, str], Any]:
    """One raw request: status, kept headers, JSON body (or text)."""
    headers = {"Accept": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(broker.url + target, data=data, method=method,  # noqa: S310
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            status, raw, got = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), error.headers
    kept = {h: got[h] for h in KEPT_HEADERS if got.get(h) is not None}
    try:
        decoded: Any = json.loads(raw) if raw else None
    except ValueError:
        decoded = raw.decode(errors="replace")
    return status, kept, decoded


def record_one(broker: Broker, spec: Spec, roles: dict[str, str],
               token: str | None) -> dict[str, Any]:
    path, params = resolve(spec.path.replace("{api}", broker.api), spec.params, spec.encode,
                           roles)
    target = sent_target(path, params)
    status, headers, body = send(broker, spec.method, target, spec.body,
                                 _auth_header(broker, spec.auth, token))
    used = {r: v for r, v in roles.items() if "{" + r + "}" in spec.path + str(spec.params)}
    return {"name": spec.name, "why": spec.why, "version": broker.version,
            "request": {"method": spec.method, "path": spec.path.replace("{api}", broker.api),
                        "params": [list(p) for p in spec.params], "body": spec.body,
                        "auth": spec.auth, "encode": spec.encode},
            "vars": used, "sent": target, "status": status, "headers": headers, "body": body}


@contextmanager
def known_state(broker: Broker) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """Clients in every state the recordings ask about; (roles, observations)."""
    roles = {"online": "rec-online", "offline": "rec-offline", "full": "rec-full",
             "slashed": "factory/line1/dev7", "missing": "rec-no-such-client",
             "node": broker.node}
    seen: dict[str, Any] = {"version": broker.version, "durable": broker.durable}
    with ExitStack() as stack:
        def connect(clientid: str, **options: Any) -> MqttClient:
            client = MqttClient(broker, clientid, **options).connect()
            stack.callback(lambda: client.disconnect() if client.connected else client.drop())
            return client

        online = connect("rec-online", username="rec-user")
        online.subscribe("rec/online/#", qos=1)
        connect("factory/line1/dev7", username="rec-user")
        for n in range(4):
            connect(f"rec-page-{n}")
        for name in ("rec-offline", "rec-full"):
            session = MqttClient(broker, name, clean_start=False, session_expiry_s=3600)
            session.connect()
            session.subscribe(f"rec/{name}/#", qos=1)
            session.disconnect()
        for n in range(DURABLE_EXTRA):
            extra = MqttClient(broker, f"rec-ds-{n}", clean_start=False, session_expiry_s=3600)
            extra.connect()
            extra.disconnect()
        lagging = MqttClient(broker, "rec-lag", clean_start=False, session_expiry_s=3600)
        lagging.connect()
        lagging.subscribe("rec/rec-lag/#", qos=1)
        lagging.disconnect()
        publisher = connect("rec-publisher")
        for n in range(QUEUED):
            publisher.publish("rec/rec-offline/x", f"m{n}", qos=1)
        for n in range(OVERFLOW):
            publisher.client.publish("rec/rec-full/x", f"f{n}", qos=1)
        publisher.publish("rec/rec-full/x", "last", qos=1)
        wait_until(lambda: (broker.client("rec-full") or {}).get("send_msg.dropped", 0) > 0
                   or (broker.client("rec-full") or {}).get("mqueue_dropped", 0) > 0
                   or broker.durable, "the full queue dropping", timeout=30)
        full = broker.client("rec-full") or {}
        seen["full_published"] = OVERFLOW + 1
        seen["full_lookup"] = {k: v for k, v in full.items() if "drop" in k or "mqueue" in k}
        seen["full_listed"] = {k: v for k, v in (_row(broker, "rec-full") or {}).items()
                               if "drop" in k or "mqueue" in k}
        seen.update(_lag(broker, publisher))
        yield roles, seen


def _row(broker: Broker, clientid: str) -> dict[str, Any] | None:
    """`clientid`'s row in the listing (not the lookup)."""
    if broker.api == "v4":
        rows = broker.get(f"/nodes/{broker.node}/clients?_page=1&_limit=10000")["data"]
    else:
        rows = broker.get("/clients?page=1&limit=1000")["data"]
    for row in rows:
        if row.get("clientid") == clientid:
            return dict(row)
    return None


def _lag(broker: Broker, publisher: MqttClient) -> dict[str, Any]:
    """How long the listing takes to show what a lookup shows at once: messages queued for
    an offline session (`rec-lag`, never looked up meanwhile), and messages sent to a
    connected subscriber (`rec-online`)."""
    before = (_row(broker, "rec-online") or {}).get("send_msg", 0)
    for n in range(QUEUED):
        publisher.publish("rec/rec-lag/x", f"l{n}", qos=1)
        publisher.publish("rec/online/x", f"o{n}", qos=1)
    start = time.monotonic()
    seen: dict[str, Any] = {"lag_queued": QUEUED, "online_send_msg_before": before,
                            "lag_listing_mqueue_len_at_once":
                                (_row(broker, "rec-lag") or {}).get("mqueue_len"),
                            "online_listing_send_msg_at_once":
                                (_row(broker, "rec-online") or {}).get("send_msg")}
    offline_after = online_after = None
    while time.monotonic() - start < LAG_WAIT_S and (offline_after is None
                                                     or online_after is None):
        if offline_after is None and (_row(broker, "rec-lag") or {}).get("mqueue_len") == QUEUED:
            offline_after = round(time.monotonic() - start, 1)
        if online_after is None and ((_row(broker, "rec-online") or {}).get("send_msg", 0)
                                     >= before + QUEUED):
            online_after = round(time.monotonic() - start, 1)
        time.sleep(0.5)
    seen["lag_listing_mqueue_len_shown_after_s"] = offline_after
    seen["online_listing_send_msg_shown_after_s"] = online_after
    seen["lag_lookup_mqueue_len"] = (broker.client("rec-lag") or {}).get("mqueue_len")
    seen["online_lookup_send_msg"] = (broker.client("rec-online") or {}).get("send_msg")
    seen["lag_listing_mqueue_len_after_lookup"] = (_row(broker, "rec-lag") or {}).get(
        "mqueue_len")
    return seen


def record_cursor_walk(broker: Broker, token: str | None) -> list[dict[str, Any]]:
    """`/clients_v2?limit=2` followed cursor by cursor to the end."""
    out = []
    cursor: str | None = None
    for number in range(1, 20):
        params: tuple[tuple[str, str], ...] = (("limit", "2"),)
        if cursor is not None:
            params += (("cursor", cursor),)
        spec = Spec(f"v5_clients_v2_walk_{number:02d}", "/api/v5/clients_v2", params,
                    why="the cursor walk, page by page (live clients, then durable sessions)")
        recording = record_one(broker, spec, {}, token)
        out.append(recording)
        meta = (recording["body"] or {}).get("meta", {}) if recording["status"] == 200 else {}
        cursor = meta.get("cursor")
        if not cursor:
            break
    return out


def record(broker: Broker, out: Path) -> list[str]:
    folder = out / broker.version
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    written = []
    with known_state(broker) as (roles, seen):
        token = None
        if broker.api == "v5":
            _s, _h, login = send(broker, "POST", "/api/v5/login", {"username": "admin",
                                                                  "password": "public"}, None)
            token = (login or {}).get("token")
        recordings = [record_one(broker, s, roles, token) for s in SPECS
                      if broker.kind in s.versions]
        if broker.version.startswith("5.8"):
            recordings += record_cursor_walk(broker, token)
        for recording in recordings:
            path = folder / f"{recording['name']}.json"
            path.write_text(json.dumps(recording, indent=1, sort_keys=True) + "\n")
            written.append(recording["name"])
        (folder / "observations.json").write_text(json.dumps(seen, indent=1, sort_keys=True)
                                                  + "\n")
    return written


def main(argv: list[str]) -> int:
    kinds = argv or list(KINDS)
    with tempfile.TemporaryDirectory(prefix="emqx-record-") as root:
        pool = BrokerPool(Path(root))
        try:
            pool.start_many(kinds)
            for kind in kinds:
                if kind in pool.failed:
                    print(f"{kind}: not recorded: {pool.failed[kind]}", file=sys.stderr)
                    continue
                names = record(pool.started[kind], RECORDED)
                print(f"{kind}: {len(names)} recordings in {RECORDED / kind}")
        finally:
            pool.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
