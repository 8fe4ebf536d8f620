"""Subprocesses for end-to-end tests: a real Prometheus server and the exporter daemon.

Everything here is bounded: processes start with a deadline for readiness, stop with SIGTERM
and a timeout before SIGKILL, and every HTTP call has a timeout. Waiting is async, so an
in-process simulator on the same event loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from tests.ports import free_port

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for failure messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), grace)


@contextlib.asynccontextmanager
async def running(
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    grace: float = 10.0,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``argv`` with stdout and stderr in ``log``; stop it on the way out, whatever happens."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
    try:
        yield proc
    finally:
        await stop_process(proc, grace)


async def wait_http_ok(
    session: aiohttp.ClientSession,
    url: str,
    deadline: float,
    proc: asyncio.subprocess.Process,
    log: Path,
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits, late at ``deadline``."""
    last = "no answer yet"
    while True:
        if proc.returncode is not None:
            raise AssertionError(
                f"process exited with {proc.returncode} before {url} was ready:\n{tail(log)}"
            )
        try:
            async with session.get(url, timeout=HTTP_TIMEOUT) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready in time ({last}):\n{tail(log)}")
        await asyncio.sleep(0.2)


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error."""


class _RunningServer:
    """A started server process and the HTTP session that talks to it."""

    def __init__(
        self, url: str, session: aiohttp.ClientSession, log: Path, proc: asyncio.subprocess.Process
    ) -> None:
        self.url = url
        self.session = session
        self.log = log
        self.proc = proc


ServerT = TypeVar("ServerT", bound=_RunningServer)


@contextlib.asynccontextmanager
async def _serving(kind: type[ServerT], argv: list[str], url: str, log: Path, workdir: Path,
                   deadline: float) -> AsyncIterator[ServerT]:
    """Run `argv`, yield the server once `/-/ready` answers 200, stop it on the way out."""
    async with (
        running(argv, log, cwd=workdir) as proc,
        aiohttp.ClientSession() as session,
    ):
        await wait_http_ok(session, f"{url}/-/ready", deadline, proc, log)
        yield kind(url, session, log, proc)
        if proc.returncode is not None:
            raise AssertionError(f"{Path(argv[0]).name} exited with {proc.returncode}:\n"
                                 f"{tail(log)}")


class Prometheus(_RunningServer):
    """The HTTP API of a running Prometheus server."""

    async def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, PrometheusError otherwise."""
        async with self.session.get(
            f"{self.url}/api/v1/{path}", params=params or {}, timeout=HTTP_TIMEOUT
        ) as response:
            try:
                body = await response.json()
            except (aiohttp.ContentTypeError, ValueError):
                text = await response.text()
                raise PrometheusError(f"{path}: HTTP {response.status}: {text[:500]}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            kind = body.get("errorType") if isinstance(body, dict) else None
            raise PrometheusError(f"{path} {dict(params or {})}: {kind}: {error}")
        if body.get("warnings"):
            raise PrometheusError(f"{path} {dict(params or {})}: warnings {body['warnings']}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now; the vector (or a one-element list for a scalar)."""
        data = await self.api("query", {"query": expr})
        if data["resultType"] in ("vector", "matrix"):
            result: list[dict[str, Any]] = data["result"]
            return result
        return [{"metric": {}, "value": data["result"]}]

    async def self_metrics(self) -> dict[str, float]:
        """Prometheus' own /metrics: sample name with labels -> value (no type lines)."""
        async with self.session.get(f"{self.url}/metrics", timeout=HTTP_TIMEOUT) as response:
            text = await response.text()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    samples[name] = float(value)
        return samples


def write_config(workdir: Path, config: Mapping[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return config_file


@contextlib.asynccontextmanager
async def prometheus_server(
    binary: str,
    workdir: Path,
    config: Mapping[str, Any],
    deadline: float,
    *,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[Prometheus]:
    """A Prometheus server on a free loopback port with ``config``, its data under ``workdir``.

    Yields once ``/-/ready`` answers 200; stops the server on the way out.
    """
    config_file = write_config(workdir, config)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "prometheus.log"
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
        *extra_args,
    ]
    async with _serving(Prometheus, argv, url, log, workdir, deadline) as server:
        yield server


class Alertmanager(_RunningServer):
    """The v2 HTTP API of a running Alertmanager."""

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, active, inhibited or silenced."""
        async with self.session.get(f"{self.url}/api/v2/alerts", timeout=HTTP_TIMEOUT) as response:
            assert response.status == 200, await response.text()
            alerts: list[dict[str, Any]] = await response.json()
        return alerts


def make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


@contextlib.asynccontextmanager
async def alertmanager_server(
    binary: str, workdir: Path, config_file: Path, deadline: float
) -> AsyncIterator[Alertmanager]:
    """An Alertmanager on a free loopback port, without clustering; yields once it is ready."""
    make_dir(workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "alertmanager.log"
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port: a single instance
        "--log.level=info",
    ]
    async with _serving(Alertmanager, argv, url, log, workdir, deadline) as server:
        yield server
