"""`demo`: its flags and help, a clean start (no API error recorded), the banner's commands,
and the message when the port is taken. The demo runs as the real process a user starts."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emqx_simulator.settings import DEFAULT_VERSIONS
from exporter.demo import add_arguments
from tests.exposition import by_name, samples_text
from tests.ports import free_port
from tests.test_cli import ROOT, get, stop, wait_for

BANNER_END = "Press Ctrl-C to stop."


def require_command(name: str, package: str) -> str:
    """Path of a command the user's steps need; skip locally when absent, fail in CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (apt-get install {package})")
        pytest.skip(f"{name} not installed (Debian package {package})")
    return path


def test_demo_help_documents_every_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "demo", "--help"], cwd=ROOT,
                            capture_output=True, timeout=60, check=True)
    text = " ".join(result.stdout.decode().split())  # argparse wraps lines
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert {f.option_strings[0] for f in flags} >= {"--listen", "--clients", "--nodes", "--api",
                                                   "--emqx-version", "--interval"}
    for action in flags:
        assert action.help, f"{action.option_strings[0]} has no help text"
        assert action.option_strings[0] in text
        assert " ".join(action.help.split()) in text
        if action.default is not None:
            assert f"(default {action.default})" in action.help
    assert 'make demo ARGS="--listen' in text


def read_banner(output: Path, process: subprocess.Popen[bytes], seconds: float = 30.0) -> str:
    """The demo's stdout once the banner is complete (bounded wait)."""
    deadline = time.monotonic() + seconds
    while BANNER_END not in (text := output.read_text()):
        assert process.poll() is None, text + process.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, f"no banner within {seconds} s:\n{text}"
        time.sleep(0.05)
    return text


def banner_command(banner: str, starts: str) -> str:
    lines = [line.strip() for line in banner.splitlines() if line.strip().startswith(starts)]
    assert len(lines) == 1, banner
    return lines[0]


@contextmanager
def demo_process(tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "exporter", "demo", *flags], cwd=ROOT,
                                   stdout=sink, stderr=subprocess.PIPE)
    try:
        yield process, output
    finally:
        stop(process)


@pytest.mark.parametrize("api", ["v3", "v4", "v5"])
def test_demo_starts_clean_and_its_banner_commands_work(tmp_path: Path, api: str) -> None:
    curl = require_command("curl", "curl")
    port = free_port()
    with demo_process(tmp_path, "--listen", f"127.0.0.1:{port}", "--clients", "300",
                      "--nodes", "2", "--api", api) as (process, output):
        banner = read_banner(output, process)
        url = f"http://127.0.0.1:{port}"
        assert f"  metrics:    {url}/metrics\n" in banner
        assert f"  status:     {url}/\n" in banner
        assert f"EMQX {DEFAULT_VERSIONS[api]} cluster (API {api}, 2 nodes, 300 clients)" in banner
        simulator = re.search(rf"  simulator:  (http://127\.0\.0\.1:\d+/api/{api})  \("
                              r"(?:API key|application id) (\S+), secret (\S+)\)\n", banner)
        assert simulator is not None, banner

        # The curl line asks the simulator's /nodes with the credentials shown.
        nodes_curl = banner_command(banner, "curl -u ")
        assert f"-u {simulator[2]}:{simulator[3]} {simulator[1]}/nodes" in nodes_curl
        answer = subprocess.run([curl, "-sS", "--fail", *shlex.split(nodes_curl)[1:]],
                                capture_output=True, timeout=30, check=False)
        assert answer.returncode == 0, answer.stderr.decode()
        body = json.loads(answer.stdout)
        nodes = body if api == "v5" else body["data"]
        assert len(nodes) == 2

        wait_for(f"{url}/-/ready", process)
        samples = samples_text(get(f"{url}/metrics")[1].decode())
        assert by_name(samples, "emqx_client_exporter_up") == {(): 1.0}
        # A healthy start records no failed request and no error: the simulator was listening
        # before the first poll. (On v3/v4 the detection's probe of /api/v5/nodes is a 404,
        # as it is on a real EMQX 3 or 4.)
        requests = by_name(samples, "emqx_client_exporter_api_requests_total")
        not_ok = {(dict(labels)["endpoint"], dict(labels)["code"]) for labels in requests
                  if dict(labels)["code"] != "200"}
        assert not_ok == (set() if api == "v5" else {("nodes", "404")}), requests
        assert by_name(samples, "emqx_client_exporter_api_errors_total") == {}

        # The "look first" line runs as printed and shows the exporter up and clients online.
        first_look = banner_command(banner, "curl -s ")
        shown = subprocess.run(["sh", "-c", first_look], capture_output=True, timeout=30,
                               check=True).stdout.decode()
        assert "emqx_client_exporter_up 1.0" in shown
        assert re.search(r'^emqx_clients_online\{node="[^"]+",class="sensor"\} [1-9]', shown,
                         re.MULTILINE), shown

        # The simulator's client events reach the exporter: a kick is counted with its reason.
        assert re.search(r"  events:     mqtt://127\.0\.0\.1:\d+ ", banner), banner
        _kick_is_counted(url, simulator[1].rsplit("/api/", 1)[0], process)


def post(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _kick_is_counted(url: str, simulator: str, process: subprocess.Popen[bytes]) -> None:
    def samples() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        text = get(f"{url}/metrics")[1].decode()
        return {name: by_name(samples_text(text), name) for name in (
            "emqx_client_exporter_events_up", "emqx_client_online",
            "emqx_clients_disconnected_events_total")}

    deadline = time.monotonic() + 30
    while samples()["emqx_client_exporter_events_up"] != {(): 1.0}:
        assert process.poll() is None and time.monotonic() < deadline, "events_up never 1"
        time.sleep(0.2)
    online = [dict(labels)["clientid"] for labels, value in
              samples()["emqx_client_online"].items() if value == 1.0]
    clientid = online[0]
    kicked = (("class", clientid.split("-")[0]), ("reason", "kicked"))

    def kicks() -> float:
        return sum(v for labels, v in samples()["emqx_clients_disconnected_events_total"].items()
                   if tuple(kv for kv in labels if kv[0] != "node") == kicked)

    before = kicks()
    status, _ = post(f"{simulator}/sim/clients/{clientid}/kick")
    assert status == 204
    while kicks() != before + 1:
        assert time.monotonic() < deadline, f"the kick of {clientid} was never counted"
        time.sleep(0.2)


def test_the_banners_check_and_top_commands_work_as_printed(tmp_path: Path) -> None:
    """The simulator's port is random, so README's lines cannot be copied: the banner gives
    `check` and `top` for this demo, and `top` polls at the demo's interval."""
    with demo_process(tmp_path, "--listen", f"127.0.0.1:{free_port()}", "--clients", "200",
                      "--interval", "2") as (process, output):
        banner = read_banner(output, process)
        for starts in ("emqx-client-exporter check ", "emqx-client-exporter top "):
            argv = shlex.split(banner_command(banner, starts))
            assert argv[0] == "emqx-client-exporter"
            began = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "exporter", *argv[1:]], cwd=ROOT,
                                    capture_output=True, timeout=60, check=False)
            out = result.stdout.decode()
            assert result.returncode == 0, out + result.stderr.decode()
            if argv[1] == "check":
                assert "clients: 200 " in out, out
            else:
                assert "--once" in argv and argv[argv.index("--interval") + 1] == "2"
                assert "rates need a second one in 2 s (--interval to change)" in out, out
                assert "worst clients by" in out, out
                assert time.monotonic() - began < 30  # the demo's interval, not 30 s


def test_demo_port_taken_names_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "exporter", "demo", "--listen",
                                 f"127.0.0.1:{port}", "--clients", "10"], cwd=ROOT,
                                capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.decode().endswith(
        f"address error: listen: cannot listen on 127.0.0.1:{port}: Address already in "
        f"use; choose another address with --listen HOST:PORT\n")
    assert "configuration error" not in result.stderr.decode()  # the configuration is fine


@pytest.mark.parametrize(("flags", "message"), [
    (["--api", "v3", "--emqx-version", "5.8.9"], "version '5.8.9' is not of api v3"),
    (["--nodes", "0"], "argument --nodes: must be at least 1, got 0"),
    (["--clients", "many"], "argument --clients: not a whole number: 'many'"),
    (["--clients", str(2**32)], f"argument --clients: must be at most {2**32 - 1}, got"),
])
def test_demo_bad_flags_name_the_flag(flags: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "demo", *flags], cwd=ROOT,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    if "--emqx-version" in flags:
        assert "configuration error: --emqx-version: " in result.stderr.decode()
