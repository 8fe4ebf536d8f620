"""The command line: `check` (one poll, a summary, exit codes), `--version`, and `run` and
`simulate` as the real processes an operator starts and stops."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from emqx_simulator import SimCluster, SimSettings, build_sim_app
from exporter import __version__
from exporter.cli import main
from tests.exposition import samples_text
from tests.harness import per_client
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
KEY = ["--api-key", "exporter", "--api-secret", "secret"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main` configures structlog globally; other tests capture logs and need it back."""
    saved = structlog.get_config()
    processors = list(saved["processors"])
    yield
    structlog.configure(**{**saved, "processors": processors})


@contextmanager
def threaded_sim(settings: SimSettings) -> Iterator[tuple[SimCluster, str]]:
    """A simulator on its own event loop thread, so `main` can run its own `asyncio.run`."""
    cluster = SimCluster(settings)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_sim_app(cluster), access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, name="simulator", daemon=True)
    thread.start()
    try:
        yield cluster, f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def per_node(cluster: SimCluster) -> Counter[str]:
    return Counter(row["node"] for row in cluster.rows())


CASES = [
    ("v5", "5.8.9", [], "API v5, listing cursor (cluster-wide), auth API key"),
    ("v5", "6.2.1", [], "API v5, listing cursor (per node), auth API key"),
    ("v5", "5.6.2", [], "API v5, listing page (per node), auth API key"),
    ("v5", "5.8.9", ["--listing", "page"], "API v5, listing page (per node), auth API key"),
    ("v4", "4.4.19", ["--api", "v4"],
     "API v4, listing page (per node), auth application id and secret"),
    ("v3", "3.2.8", ["--api", "v3"],
     "API v3, listing page (per node), auth application id and secret"),
]


@pytest.mark.parametrize(("api", "version", "flags", "headline"), CASES,
                         ids=[f"{a}-{v}{'-' + f[-1] if f else ''}" for a, v, f, _ in CASES])
def test_check_summarizes_a_working_cluster(capsys: pytest.CaptureFixture[str], api: str,
                                            version: str, flags: list[str],
                                            headline: str) -> None:
    sim = SimSettings(api=api, version=version, nodes=3, clients=900)  # type: ignore[arg-type]
    with threaded_sim(sim) as (cluster, url):
        assert main(["check", "--emqx-url", url, *KEY, *flags]) == 0
        counts = per_node(cluster)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"cluster {url}:"
    assert lines[1] == f"  EMQX {version}, {headline}"
    cluster_wide = "cluster-wide" in headline
    for node in cluster.node_names:
        pattern = (rf"  node {re.escape(node)}: {counts[node]} clients"
                   + ("" if cluster_wide else r", 1 page") + r", \d+\.\d\d s")
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, out)
    if cluster_wide:
        assert any(re.fullmatch(r"  cluster-wide walk: 1 page, \d+\.\d\d s", line)
                   for line in lines), out
    assert f"  clients: {sum(counts.values())} (duplicates dropped: 0)" in lines
    assert "  unlisted rows: 0: every row EMQX reported was listed" in lines
    series = re.search(r"^  series: (\d+) per-client, (\d+) aggregate$", out, re.MULTILINE)
    assert series is not None and int(series[1]) >= sum(counts.values())
    assert re.search(r"^  poll took \d+\.\d\d s$", out, re.MULTILINE)
    assert "FAILED" not in out


def test_check_counts_pages_per_node(capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("page_size: 100\n")
    sim = SimSettings(version="5.6.2", nodes=3, clients=900)
    with threaded_sim(sim) as (cluster, url):
        assert main(["check", "--config", str(config), "--emqx-url", url, *KEY]) == 0
        counts = per_node(cluster)
    out = capsys.readouterr().out
    assert sorted(counts.values()) == [297, 300, 303]
    for node, count in counts.items():
        # A page that ends exactly on the node's last row still says `hasnext: true` (EMQX's
        # false positive at a boundary), so an empty page follows: 300 rows take 4 pages.
        pages = math.ceil(count / 100) + (count % 100 == 0)
        assert f"  node {node}: {count} clients, {pages} pages, " in out


def test_check_says_rate_rankings_need_a_second_poll(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("per_client:\n  top_k: {mqueue_fill: 5, drop_rate: 5, byte_rate: 5}\n")
    with threaded_sim(SimSettings(clients=50)) as (_, url):
        assert main(["check", "--config", str(config), "--emqx-url", url, *KEY]) == 0
    out = capsys.readouterr().out
    assert ("  top by drop_rate, byte_rate: empty here; a rate needs a second poll (the "
            "daemon ranks from its second poll)\n") in out


def test_check_shows_rows_emqx_reported_but_never_listed(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("page_size: 50\n")
    with threaded_sim(SimSettings(version="5.6.2", nodes=3, clients=300)) as (cluster, url):
        cluster.faults.add("skip_rows", rows=20, node="emqx@10.0.0.2")
        main(["check", "--config", str(config), "--emqx-url", url, *KEY])
    out = capsys.readouterr().out
    assert re.search(r"^  unlisted rows: \d+ rows EMQX reported but never listed "
                     r"\(emqx@10\.0\.0\.2: \d+\)", out, re.MULTILINE), out


def test_check_with_a_dashboard_user(capsys: pytest.CaptureFixture[str]) -> None:
    with threaded_sim(SimSettings(clients=50)) as (_, url):
        assert main(["check", "--emqx-url", url, "--username", "admin",
                     "--password", "public"]) == 0
    assert "  EMQX 5.8.9, API v5, listing cursor (cluster-wide), auth dashboard login\n" in (
        capsys.readouterr().out)


def test_check_unreachable_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["check", "--emqx-url", url, *KEY]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"cluster {url}: FAILED: nodes: cannot reach EMQX: ")


@pytest.mark.parametrize(("credentials", "kind"), [
    (["--api-key", "exporter", "--api-secret", "hunter2-wrong"], "API key"),
    (["--username", "admin", "--password", "hunter2-wrong"], "dashboard login"),
])
def test_check_unauthorized_names_the_credential_kind(capsys: pytest.CaptureFixture[str],
                                                      credentials: list[str],
                                                      kind: str) -> None:
    with threaded_sim(SimSettings(clients=20)) as (_, url):
        assert main(["check", "--emqx-url", url, *credentials]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1
    assert captured.out.startswith(f"cluster {url}: FAILED: EMQX rejected the {kind} (")
    assert "HTTP 401" in captured.out and "check the credentials given" in captured.out
    assert "hunter2" not in captured.out + captured.err


@pytest.mark.parametrize(("args", "key"), [
    (["--interval", "-1"], "interval"),
    (["--timeout", "soon"], "timeout"),
    (["--api", "v6"], "api"),
    (["--api-key", "exporter"], "api_secret"),
    (["--listen", "nowhere", "--api-key", "k", "--api-secret", "s"], "listen"),
])
def test_check_bad_configuration_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str],
                                                        args: list[str], key: str) -> None:
    assert main(["check", "--emqx-url", "http://127.0.0.1:9", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"emqx-client-exporter: configuration error: {key}: ")


def test_check_config_file_errors_name_the_key(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("emqx_url: http://127.0.0.1:9\nclusters:\n  - {name: a, intervall: 5}\n")
    assert main(["check", "--config", str(config)]) == 2
    assert "configuration error: clusters[0].intervall: unknown setting" in (
        capsys.readouterr().err)
    assert main(["check"]) == 2
    assert "configuration error: emqx_url: is required" in capsys.readouterr().err


def test_check_unreadable_tls_file_exits_2(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"tls: {{ca_file: {tmp_path / 'missing.pem'}}}\n")
    assert main(["check", "--config", str(config), "--emqx-url", "https://127.0.0.1:9",
                 *KEY]) == 2
    assert "configuration error: tls.ca_file: no such file: " in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"emqx-client-exporter {__version__}\n"


# -- real processes -----------------------------------------------------------------------------

SIM_NODES, SIM_CLIENTS = 3, 700


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 60.0,
             **headers: str) -> bytes:
    """GET `url` until it answers 200 (bounded: a daemon's first poll on a loaded machine can take
    15 s and more); fail early if the process died."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        try:
            status, body = get(url, **headers)
            if status == 200:
                return body
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {seconds} s"
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    """`python -m exporter simulate --frozen` on a free port, for the whole module."""
    port = free_port()
    process = spawn("simulate", "--api", "v5", "--nodes", str(SIM_NODES),
                    "--clients", str(SIM_CLIENTS), "--listen", f"127.0.0.1:{port}", "--frozen")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/api/v5/nodes", process, Authorization="Basic ZXhwb3J0ZXI6c2VjcmV0")
        yield url
    finally:
        stop(process)


def frozen_truth() -> dict[str, Any]:
    """What a simulator of the same settings lists: the population depends on its settings
    only, not on when it started, and a frozen clock adds no churn between walks."""
    sim = SimSettings(api="v5", nodes=SIM_NODES, clients=SIM_CLIENTS, frozen=True)
    return {row["clientid"]: row for row in SimCluster(sim).rows()}


def test_check_as_a_process(simulator: str) -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "check", "--emqx-url", simulator,
                             *KEY], cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "  EMQX 5.8.9, API v5, listing cursor (cluster-wide), auth API key\n" in out
    assert f"  clients: {len(frozen_truth())} (duplicates dropped: 0)\n" in out


@contextmanager
def running_exporter(simulator: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    process = spawn("run", "--emqx-url", simulator, *KEY, "--listen", f"127.0.0.1:{port}",
                    "--interval", "1")
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_run_serves_every_simulated_client_once(simulator: str) -> None:
    with running_exporter(simulator) as (process, url):
        wait_for(f"{url}/-/ready", process)
        assert get(f"{url}/-/healthy")[0] == 200
        samples = samples_text(get(f"{url}/metrics")[1].decode())
    truth = frozen_truth()
    assert len(truth) == SIM_CLIENTS  # v5 lists offline persistent sessions too
    online = per_client(samples, "emqx_client_online")  # asserts no client appears twice
    assert online == {cid: 1.0 if row["connected"] else 0.0 for cid, row in truth.items()}
    assert 0 < sum(online.values()) < len(online)  # both kinds are there
    sessions = sum(v for n, _, v in samples if n == "emqx_clients_sessions")
    assert sessions == len(truth)


def test_run_exits_0_on_sigterm_without_waiting_for_its_poll() -> None:
    """SIGTERM while a request hangs (answered in an hour, the exporter's own timeout 50 min,
    the next poll in an hour): `run` cancels the poll and exits 0 well within the bound."""
    sim_port, port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    simulator = spawn("simulate", "--clients", "10", "--listen", f"127.0.0.1:{sim_port}")
    exporter = None
    try:
        wait_for(f"{sim_url}/sim/requests", simulator)
        hang = json.dumps({"kind": "latency", "delay": 3600}).encode()
        fault = urllib.request.Request(  # noqa: S310 - loopback http
            f"{sim_url}/sim/faults", method="POST", data=hang)
        with urllib.request.urlopen(fault, timeout=5):  # noqa: S310 - loopback http
            pass
        exporter = spawn("run", "--emqx-url", sim_url, *KEY, "--listen", f"127.0.0.1:{port}",
                         "--interval", "3600", "--timeout", "3000")
        deadline = time.monotonic() + 15
        while not json.loads(wait_for(f"{sim_url}/sim/faults", simulator))[0]["fired"]:
            assert exporter.poll() is None, exporter.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the exporter's first request never arrived"
            time.sleep(0.05)
        exporter.send_signal(signal.SIGTERM)  # its first request is now in flight
        exporter.wait(timeout=30)
        assert exporter.returncode == 0, exporter.communicate()[1].decode()[-2000:]
        assert simulator.poll() is None  # the hung answer is still pending
    finally:
        if exporter is not None:
            stop(exporter)
        stop(simulator)


def test_simulate_help_describes_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    options = re.findall(r"^  (--[a-z-]+)", out, re.MULTILINE)
    assert set(options) >= {"--api", "--emqx-version", "--nodes", "--clients", "--listen",
                            "--api-key", "--api-secret", "--frozen", "--page-cache-mb",
                            "--class-prefixes"}
    from exporter.cli import _parser

    commands = next(a for a in _parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    for action in commands.choices["simulate"]._actions:
        assert action.help, f"{action.option_strings} has no help text"
    assert "docs/simulator.md" in out  # where the fault-control API is described
