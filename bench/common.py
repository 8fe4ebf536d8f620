"""Shared benchmark plumbing: a simulator in its own process, and the download-and-decode floor."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from exporter.api import Request, Response
from exporter.poller import ClusterPoller
from tests.ports import free_port


@contextlib.contextmanager
def simulator(clients: int, nodes: int, version: str, api: str = "v5",
              cache_mb: int = 1024) -> Iterator[str]:
    """A frozen simulator in a child process (its own core), yielding its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "exporter", "simulate", "--api", api, "--emqx-version",
               version, "--nodes", str(nodes), "--clients", str(clients), "--frozen",
               "--listen", f"127.0.0.1:{port}", "--page-cache-mb", str(cache_mb),
               "--class-prefixes"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_until_up(url, api))
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _wait_until_up(url: str, api: str, attempts: int = 300) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            try:
                async with session.get(f"{url}/api/{api}/nodes",
                                       auth=aiohttp.BasicAuth("exporter", "secret")) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"simulator at {url} did not come up")


@dataclass(frozen=True)
class Fetch:
    method: str
    url: str


@contextlib.contextmanager
def recording(poller: ClusterPoller) -> Iterator[list[Fetch]]:
    """Record the URLs a poller requests, so the floor can download exactly the same pages."""
    fetches: list[Fetch] = []
    base = str(poller.client.base_url).rstrip("/")
    original = poller.client.send

    async def send(request: Request, authorize: bool = True) -> Response:
        query = "&".join(f"{k}={v}" for k, v in request.params)
        fetches.append(Fetch(request.method, base + "/" + "/".join(request.path)
                             + ("?" + query if query else "")))
        return await original(request, authorize=authorize)

    poller.client.send = send  # type: ignore[method-assign]
    try:
        yield fetches
    finally:
        poller.client.send = original  # type: ignore[method-assign]


def floor_concurrency(poller: ClusterPoller) -> int:
    """The walk's own pattern: per-node walks in parallel, a cluster-wide cursor walk alone."""
    per_node = poller.dialect is not None and poller.dialect.per_node
    return poller.settings.node_concurrency if per_node else 1


async def floor(fetches: list[Fetch], concurrency: int) -> tuple[float, int]:
    """Download the same pages with aiohttp and decode each with orjson, nothing else, in a
    fresh process: the exporter's heap (its garbage collector walks) does not slow the floor."""
    order = json.dumps({"fetches": [[f.method, f.url] for f in fetches],
                        "concurrency": concurrency})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.common", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = await process.communicate(order.encode())
    if process.returncode != 0:
        raise RuntimeError(f"the floor process failed with exit code {process.returncode}")
    seconds, rows = json.loads(out)
    return seconds, rows


async def _floor_here(fetches: list[Fetch], concurrency: int) -> tuple[float, int]:
    credentials = base64.b64encode(b"exporter:secret").decode()
    limit = asyncio.Semaphore(concurrency)
    rows = 0

    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {credentials}"}) as session:
        async def one(fetch: Fetch) -> None:
            nonlocal rows
            async with limit, session.request(fetch.method, fetch.url) as answer:
                decoded = orjson.loads(await answer.read())
                if isinstance(decoded, dict):
                    rows += len(decoded.get("data", ()))

        began = time.perf_counter()
        await asyncio.gather(*(one(f) for f in fetches))
        return time.perf_counter() - began, rows


def save_result(name: str, result: dict[str, object]) -> None:
    """Keep a run's figures in bench/results/NAME.json (ignored by git)."""
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


def peak_rss_mib() -> float:
    """Peak resident memory of the exporter's process (this one)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_count() -> int:
    return os.cpu_count() or 1


def ratios(floors: list[float], polls: list[float]) -> dict[str, object]:
    """Each round's poll / floor, in order, and their spread (largest - smallest)."""
    each = [round(p / f, 2) for f, p in zip(floors, polls, strict=True)]
    return {"ratios": each, "ratio_spread": round(max(each) - min(each), 2),
            "floors_s": [round(f, 2) for f in floors], "polls_s": [round(p, 2) for p in polls]}


def ratio_line(result: dict[str, object], target: float) -> str:
    each = result["ratios"]
    assert isinstance(each, list)
    return (f"ratios {' / '.join(map(str, each))} (target <= {target} each), spread "
            f"{result['ratio_spread']}; floors {result['floors_s']} s, polls {result['polls_s']} s")


if __name__ == "__main__":
    # The floor's own process (see `floor`): the order on stdin, (seconds, rows) on stdout.
    request = json.load(sys.stdin)
    fetched = [Fetch(method, url) for method, url in request["fetches"]]
    print(json.dumps(asyncio.run(_floor_here(fetched, request["concurrency"]))))
