"""Real EMQX brokers for tests: the releases in ../shared/emqx, or a user's own EMQX.

Tests that need a real broker carry the marker `real_emqx` and take the fixture `real_emqx` (one
broker, parametrized over the kinds the marker names, all by default) or `real_cluster` (a
two-node 5.8.9 cluster). Brokers start lazily, once per test session, side by side, and stop at
its end; a test must leave a broker as it found it (disconnect its MQTT clients).

Kinds: `4.4.19` (API v4), `5.3.2` (API v5, page listing), `5.8.9` (API v5, cursor listing,
durable sessions on). Where does a broker come from:
- `EMQX_URL` set (with `EMQX_API_KEY`/`EMQX_API_SECRET`, `EMQX_MQTT_HOST`/`EMQX_MQTT_PORT`): every
  `real_emqx` test runs against that one broker, whatever its version; tests of a feature it
  lacks skip saying so. The cluster tests skip.
- else the releases in `EMQX_SHARED_DIR` (default: `shared/emqx` beside the repository), started
  with its `emqx-instance` script on 127.0.0.1. `EMQX_TEST_SLOT` (0-2) moves every instance
  number by 3 so that two test runs on one machine do not share ports.
Where no broker can be had the tests skip with one line saying why; under `CI=true` that is a
failure instead, since CI must run them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_EMQX = Path(os.environ.get("EMQX_SHARED_DIR", REPOSITORY.parent / "shared" / "emqx"))
INSTANCE_SCRIPT = SHARED_EMQX / "emqx-instance"

#: Every kind of single broker, with the settings `emqx-instance` starts it with.
KINDS: dict[str, dict[str, str]] = {
    "4.4.19": {"EMQX_VERSION": "4.4.19"},
    "5.3.2": {"EMQX_VERSION": "5.3.2"},
    "5.8.9": {"EMQX_VERSION": "5.8.9", "EMQX_DURABLE": "1"},
}
#: The kind a user's own broker (EMQX_URL) is reported as.
EXTERNAL = "external"
CLUSTER_VERSION = "5.8.9"
#: Instance numbers within a slot: single brokers use +0, the cluster's members +1 and +2.
SLOT_WIDTH = 3
#: Seconds a broker may take to start: 5-15 s on an idle machine, over 90 s for 4.4.19 on a
#: loaded one (EMQX_START_TIMEOUT_S).
START_TIMEOUT_S = float(os.environ.get("EMQX_START_TIMEOUT_S", "240"))


def _slot_base() -> int:
    slot = int(os.environ.get("EMQX_TEST_SLOT", "0"))
    if not 0 <= slot < 10 // SLOT_WIDTH:
        raise ValueError(f"EMQX_TEST_SLOT must be 0-{10 // SLOT_WIDTH - 1}, got {slot}")
    return slot * SLOT_WIDTH


class BrokerUnavailableError(Exception):
    """No broker of the kind asked for can be had here; the text says why."""


def unavailable(why: str) -> None:
    """Skip the test saying why, or fail it in CI, where real brokers must run."""
    if os.environ.get("CI") == "true" and not os.environ.get("EMQX_URL"):
        pytest.fail(f"real EMQX required in CI: {why}")
    pytest.skip(f"no real EMQX: {why}")


@dataclass
class Broker:
    """One running EMQX node, as the exporter and MQTT clients reach it."""

    kind: str
    version: str
    api: str
    url: str
    mqtt_host: str
    mqtt_port: int
    api_key: str
    api_secret: str
    node: str
    durable: bool
    #: The folder `emqx-instance` runs it from; None for a user's own broker.
    directory: Path | None = None
    #: The environment it was started with (to start or stop it again).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/{self.api}"

    def request(self, method: str, path: str, body: object = None,
                auth: tuple[str, str] | None = None) -> tuple[int, Any]:
        """`method` `path` (under /api/vN) with the API key; (status, decoded JSON or text)."""
        status, raw = self.exchange(method, path, body, auth)
        if status == 0:
            return 0, raw.decode()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def exchange(self, method: str, path: str, body: object = None,
                 auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
        """`method` `path` (under /api/vN) with the API key; (status, the body's bytes as
        EMQX wrote them); status 0 when the broker does not answer (the error's text)."""
        user, password = auth or (self.api_key, self.api_secret)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api_base + path, data=data, method=method,  # noqa: S310
                                         headers={"Authorization": f"Basic {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except (urllib.error.URLError, OSError) as error:
            return 0, str(error).encode()  # not answering (starting, joining a cluster, killed)
        return status, raw

    def get(self, path: str) -> Any:
        """The JSON of a `GET` that must answer 200."""
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def client(self, clientid: str) -> dict[str, Any] | None:
        """EMQX's own answer for one client (`GET /clients/{id}`, the id encoded once)."""
        path = "/clients/" + urllib.parse.quote(clientid, safe="")
        status, body = self.request("GET", path)
        if status == 404:
            return None
        assert status == 200, f"GET {path}: {status} {body}"
        if self.api == "v5":
            return body  # type: ignore[no-any-return]
        rows = body.get("data") or []  # v4: 200 with empty data for a missing client
        return rows[0] if rows else None

    def exporter_config(self, **settings: Any) -> dict[str, Any]:
        """Exporter settings that reach this broker, plus `settings`."""
        return {"emqx_url": self.url, "api_key": self.api_key, "api_secret": self.api_secret,
                **settings}

    def wait_for(self, condition: Callable[[], Any], what: str,
                 timeout: float = 60.0, every: float = 0.25) -> Any:
        """Poll `condition` until it returns something true; fail naming `what` at the deadline.

        EMQX updates its listing and counters asynchronously, so tests wait for the state they
        caused to show instead of sleeping a guessed time.
        """
        return wait_until(condition, f"{self.kind}: {what}", timeout, every)

    # -- lifecycle (brokers started here only) ------------------------------------------------

    def _script(self, command: str) -> str:
        assert self.directory is not None, "a user's own broker is not started or stopped here"
        done = subprocess.run([str(INSTANCE_SCRIPT), command, str(self.directory)],
                              env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise BrokerUnavailableError(f"emqx-instance {command} {self.kind} failed: "
                                    f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done.stdout

    def stop(self) -> None:
        """Stop it cleanly; a process left over is killed."""
        with contextlib.suppress(BrokerUnavailableError, subprocess.TimeoutExpired):
            self._script("stop")
        self.kill()

    def kill(self) -> None:
        """`kill -9` the node's Erlang VM, as a crash would (the cluster shows it `stopped`)."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _pids(self) -> list[int]:
        assert self.directory is not None
        release = str(self.directory)
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            # The VM (`-root DIR/...`) and its helpers (run_erl's pipes live under DIR too).
            if f"{release}/" in command:
                pids.append(int(entry.name))
        return pids


def _parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _describe(kind: str, env: dict[str, str], printed: dict[str, str], directory: Path | None,
              durable: bool) -> Broker:
    host_port = printed["EMQX_URL"].rsplit("//", 1)[1]
    return Broker(kind=kind, version=printed.get("EMQX_VERSION", ""), api=printed["EMQX_API"],
                  url=printed["EMQX_URL"],
                  mqtt_host=printed.get("EMQX_MQTT_HOST", host_port.rsplit(":", 1)[0]),
                  mqtt_port=int(printed["EMQX_MQTT_PORT"]), api_key=printed["EMQX_API_KEY"],
                  api_secret=printed["EMQX_API_SECRET"], node=printed.get("EMQX_NODE", ""),
                  durable=durable, directory=directory, env=env)


def external_broker() -> Broker | None:
    """The user's own EMQX named by `EMQX_URL`, its version and API read from `/nodes`."""
    url = os.environ.get("EMQX_URL")
    if not url:
        return None
    printed = {"EMQX_URL": url.rstrip("/"), "EMQX_API": "v5",
               "EMQX_API_KEY": os.environ.get("EMQX_API_KEY", ""),
               "EMQX_API_SECRET": os.environ.get("EMQX_API_SECRET", ""),
               "EMQX_MQTT_HOST": os.environ.get("EMQX_MQTT_HOST", "127.0.0.1"),
               "EMQX_MQTT_PORT": os.environ.get("EMQX_MQTT_PORT", "1883")}
    broker = _describe(EXTERNAL, {}, printed, None, durable=False)
    for api in ("v5", "v4"):
        broker.api = api
        status, body = broker.request("GET", "/nodes")
        if status == 200:
            nodes = body if api == "v5" else body.get("data", [])
            broker.version = str(nodes[0].get("version", ""))
            broker.node = str(nodes[0].get("node", ""))
            broker.durable = os.environ.get("EMQX_DURABLE") == "1"
            return broker
    raise BrokerUnavailableError(f"EMQX_URL={url} answered no /api/v5/nodes or /api/v4/nodes "
                            "with the credentials given")


class BrokerPool:
    """Brokers of one test session: started on first use, in parallel where asked together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: dict[str, Broker] = {}
        self.failed: dict[str, str] = {}
        self.clusters: dict[str, list[Broker]] = {}
        self.lock = threading.Lock()

    def _start(self, kind: str, env: dict[str, str], directory: Path, durable: bool) -> Broker:
        directory.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(INSTANCE_SCRIPT), "start", str(directory)],
                              env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, check=False)
        if done.returncode != 0:
            broker = Broker(kind, env["EMQX_VERSION"], "", "", "", 0, "", "", "", durable,
                            directory, env)
            broker.kill()
            raise BrokerUnavailableError(f"EMQX {kind} did not start: "
                                    f"{(done.stderr or done.stdout).strip()[-800:]}")
        broker = _describe(kind, env, _parse_env(done.stdout), directory, durable)
        # `emqx-instance` waits until the API answers on the port; a broker left over from an
        # earlier run on that port would answer too, and the tests would read its state.
        _status, nodes = broker.request("GET", "/nodes")
        paths = [n.get("sys_path", "") for n in (nodes if isinstance(nodes, list) else [])]
        if not broker._pids() or (paths and not any(p.startswith(str(directory)) for p in paths)):
            raise BrokerUnavailableError(f"EMQX {kind}: another process answers on {broker.url} (a "
                                    "broker of an earlier run? stop it, or set EMQX_TEST_SLOT)")
        return broker

    def _check_available(self) -> None:
        if not INSTANCE_SCRIPT.exists():
            raise BrokerUnavailableError(f"{INSTANCE_SCRIPT} not found (set EMQX_SHARED_DIR, or "
                                    "EMQX_URL for your own EMQX)")

    def broker(self, kind: str) -> Broker:
        """The running broker of `kind`, started now if it is not yet."""
        with self.lock:
            if kind in self.failed:
                raise BrokerUnavailableError(self.failed[kind])
            if kind in self.started:
                return self.started[kind]
        self.start_many([kind])
        with self.lock:
            if kind in self.failed:
                raise BrokerUnavailableError(self.failed[kind])
            return self.started[kind]

    def start_many(self, kinds: list[str]) -> None:
        """Start every kind not yet running, side by side (a start takes 5-15 s)."""
        try:
            self._check_available()
        except BrokerUnavailableError as error:
            for kind in kinds:
                self.failed.setdefault(kind, str(error))
            return
        todo = [k for k in kinds if k not in self.started and k not in self.failed]
        base = _slot_base()

        def one(kind: str) -> None:
            env = {**KINDS[kind], "EMQX_INSTANCE": str(base)}
            try:
                broker = self._start(kind, env, self.root / kind, env.get("EMQX_DURABLE") == "1")
            except (BrokerUnavailableError, subprocess.TimeoutExpired) as error:
                # A start that timed out leaves its VM behind: end it (its folder's processes).
                Broker(kind, env["EMQX_VERSION"], "", "", "", 0, "", "", "", False,
                       self.root / kind, env).kill()
                with self.lock:
                    self.failed[kind] = str(error)
                return
            with self.lock:
                self.started[kind] = broker

        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            list(pool.map(one, todo))

    def cluster(self) -> list[Broker]:
        """A two-node 5.8.9 cluster (both members running), started now if it is not yet."""
        key = "cluster"
        with self.lock:
            if key in self.failed:
                raise BrokerUnavailableError(self.failed[key])
            if key in self.clusters:
                return self.clusters[key]
        self._check_available()
        base = _slot_base()
        numbers = [base + 1, base + 2]
        names = ",".join(f"emqx6{n}@127.0.0.1" for n in numbers)
        envs = [{"EMQX_VERSION": CLUSTER_VERSION, "EMQX_INSTANCE": str(n), "EMQX_CLUSTER": names}
                for n in numbers]
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(self._start, f"cluster-{i + 1}", env,
                                   self.root / f"cluster-{i + 1}", False)
                       for i, env in enumerate(envs)]
            members: list[Broker] = []
            errors: list[str] = []
            for future in futures:
                try:
                    members.append(future.result())
                except (BrokerUnavailableError, subprocess.TimeoutExpired) as error:
                    errors.append(str(error))
        if errors:
            for member in members:
                member.stop()
            with self.lock:
                self.failed[key] = "; ".join(errors)
            raise BrokerUnavailableError(self.failed[key])
        _wait_running(members)
        with self.lock:
            self.clusters[key] = members
        return members

    def restart(self, broker: Broker) -> None:
        """Start a stopped or killed broker again in its folder (its data kept)."""
        assert broker.directory is not None
        broker.kill()
        broker._script("start")

    def stop_all(self) -> None:
        brokers = list(self.started.values()) + [m for ms in self.clusters.values() for m in ms]
        with ThreadPoolExecutor(max_workers=max(1, len(brokers))) as pool:
            list(pool.map(Broker.stop, brokers))


def _kinds_of(item: pytest.Item) -> list[str]:
    marker = item.get_closest_marker("real_emqx")
    return list(marker.args) if marker and marker.args else list(KINDS)


@pytest.fixture(scope="session")
def broker_pool() -> Iterator[BrokerPool]:
    """The session's brokers; every kind any collected test asks for starts together."""
    with tempfile.TemporaryDirectory(prefix="emqx-brokers-") as root:
        pool = BrokerPool(Path(root))
        try:
            yield pool
        finally:
            pool.stop_all()


def generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `real_emqx` over the marker's kinds (or the user's own broker)."""
    if "real_emqx" not in metafunc.fixturenames:
        return
    kinds = [EXTERNAL] if os.environ.get("EMQX_URL") else _kinds_of(metafunc.definition)
    metafunc.parametrize("real_emqx", kinds, indirect=True)


@pytest.fixture
def real_emqx(request: pytest.FixtureRequest, broker_pool: BrokerPool) -> Broker:
    """A running real broker of the kind this test is parametrized with."""
    kind: str = request.param
    try:
        if kind == EXTERNAL:
            broker = external_broker()
            assert broker is not None
            return broker
        wanted = sorted({k for item in request.session.items for k in _wanted_kinds(item)})
        broker_pool.start_many(wanted)
        return broker_pool.broker(kind)
    except BrokerUnavailableError as error:
        unavailable(str(error))
        raise  # unreachable: unavailable() skips or fails


def _wanted_kinds(item: pytest.Item) -> list[str]:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "real_emqx" not in callspec.params:
        return []
    kind = callspec.params["real_emqx"]
    return [kind] if kind in KINDS else []


@pytest.fixture
def real_cluster(broker_pool: BrokerPool) -> list[Broker]:
    """Both members of a running two-node 5.8.9 cluster (started again if a test killed one)."""
    if os.environ.get("EMQX_URL"):
        pytest.skip("the cluster tests start their own two-node cluster; EMQX_URL is one broker")
    try:
        members = broker_pool.cluster()
    except BrokerUnavailableError as error:
        unavailable(str(error))
        raise
    for member in members:
        status, _ = member.request("GET", "/nodes")
        if status != 200:
            broker_pool.restart(member)
    _wait_running(members)
    return members


def _wait_running(members: list[Broker]) -> None:
    """Wait until every member answers and lists every member as running."""
    names = sorted(m.node for m in members)

    def all_running() -> bool:
        for member in members:
            status, nodes = member.request("GET", "/nodes")
            if status != 200 or sorted(n["node"] for n in nodes if
                                       n.get("node_status") == "running") != names:
                return False
        return True

    members[0].wait_for(all_running, "every cluster member running", timeout=90)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0,
               every: float = 0.25) -> Any:
    """Poll `condition` until it returns something true; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(every)
