"""The status page as a browser shows it (headless Chromium), its JSON twin, and switching off."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from html.parser import HTMLParser

import pytest

from emqx_simulator import SimSettings
from exporter.status import Status, render_html
from tests.harness import Rig, rig

NODE2 = "emqx@10.0.0.2"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Text(HTMLParser):
    """The text a browser shows (scripts and styles left out), one line per block."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        if tag in ("tr", "li", "p", "h1", "h2", "h3", "dt", "section"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1
        if tag in ("td", "th", "dt", "dd", "a"):
            self.parts.append(" | ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return re.sub(r"[ \t]+", " ", "".join(parser.parts))


async def browse(url: str) -> str:
    """The DOM as Chromium built it from the page (not the bytes served)."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0
    return out.decode()


def page_url(r: Rig, path: str = "/") -> str:
    return str(r.client.make_url(path))


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@needs_chromium
async def test_a_healthy_cluster_as_the_browser_shows_it() -> None:
    sim = SimSettings(clients=60)
    async with rig(sim, per_client={"top_k": {"mqueue_fill": 3}, "watch": ["client-0000001"]},
                   dashboard_url="https://grafana.example/d/emqx?a=1&b=2") as r:
        await r.poll()
        text = visible_text(await browse(page_url(r)))
    assert "Cluster " in text and "up" in text
    assert re.search(r"EMQX \| 5\.\d+\.\d+", text), text
    assert re.search(r"listing \| (page|cursor) \((per node|cluster-wide)\)", text)
    assert "auth | API key" in text and "outcome | ok" in text
    for node in ("emqx@10.0.0.1", NODE2, "emqx@10.0.0.3"):
        assert re.search(rf"{re.escape(node)} \| up \| \d+ \| - \|", text), text
    assert "per-client series for " in text and "of 60 clients listed" in text
    assert "watched: 1, of which 0 offline" in text
    assert "top by mqueue_fill" in text
    assert "dashboards" in text


@needs_chromium
async def test_a_node_down_shows_where_and_why() -> None:
    # EMQX 5.6 lists per node: one node's RPC failure fails that node's walk only.
    async with rig(SimSettings(clients=60, version="5.6.2")) as r:
        await r.poll()
        r.cluster.faults.add("node_error", node=NODE2, endpoint="GET /api/v5/clients")
        await r.poll()
        text = visible_text(await browse(page_url(r)))
        data = json.loads(await (await r.client.get("/status.json")).text())
    assert "outcome | partial: 1 of 3 nodes failed" in text, text
    line = next(line for line in text.splitlines() if line.startswith(NODE2))
    assert "| walk failed |" in line and "node_down" in line and " UTC" in line
    assert re.search(r"emqx@10\.0\.0\.1 \| up \| \d+ \| - \|", text)
    (cluster,) = data["clusters"]
    nodes = {n["name"]: n for n in cluster["nodes"]}
    assert nodes[NODE2]["state"] == "walk failed"
    assert nodes[NODE2]["last_error_reason"] == "node_down"
    assert nodes[NODE2]["clients"] is None and nodes["emqx@10.0.0.1"]["clients"] > 0
    assert cluster["outcome"] == "partial: 1 of 3 nodes failed"


@needs_chromium
async def test_the_cap_and_the_default_ranking_are_explained() -> None:
    sim = SimSettings(clients=120)
    async with rig(sim, per_client={"max_series": 17 * 10}) as r:
        await r.poll()
        text = visible_text(await browse(page_url(r)))
    assert "per-client series for 10 of 120 clients listed" in text
    assert "110 clients left out by the cap" in text
    assert "chosen by the default ranking" in text and "per_client.top_k" in text
    assert "worst clients by the default ranking" in text


async def test_json_holds_the_same_facts() -> None:
    async with rig(SimSettings(clients=30)) as r:
        await r.poll()
        response = await r.client.get("/status.json")
        assert response.status == 200 and response.content_type == "application/json"
        data = json.loads(await response.text())
    (cluster,) = data["clusters"]
    assert cluster["up"] is True and cluster["outcome"] == "ok"
    assert cluster["selection"]["listed"] == 30 and cluster["selection"]["left_out"] == 0
    assert cluster["selection"]["cap_binds"] is False and "top" not in cluster["selection"]
    assert sum(n["clients"] for n in cluster["nodes"]) == 30
    assert ["metrics", "/metrics"] in data["links"]


async def test_a_failed_poll_stays_on_the_page_after_recovery() -> None:
    async with rig(SimSettings(clients=10)) as r:
        rule = r.cluster.faults.add("unauthorized")
        await r.poll()
        failed = json.loads(await (await r.client.get("/status.json")).text())["clusters"][0]
        r.cluster.faults.remove(rule.id)
        r.clock.advance(60)  # past the first back-off after a rejected login
        await r.poll()
        page = visible_text(await (await r.client.get("/")).text())
    assert failed["up"] is False and failed["outcome"].startswith("failed: unauthorized: ")
    assert "outcome | ok" in page
    assert re.search(r"last failed poll \| unauthorized: .* at \d{4}-\d\d-\d\d ", page), page


async def test_known_nodes_stay_listed_when_nodes_fails() -> None:
    async with rig(SimSettings(clients=10, nodes=3)) as r:
        await r.poll()
        r.cluster.faults.add("http_error", status=503, endpoint="GET /api/v5/nodes")
        r.clock.advance(30)
        await r.poll()
        cluster = json.loads(await (await r.client.get("/status.json")).text())["clusters"][0]
    assert cluster["up"] is False
    assert [n["state"] for n in cluster["nodes"]] == ["not polled"] * 3


async def test_the_page_can_be_switched_off() -> None:
    async with rig(SimSettings(clients=5), status_page=False) as r:
        await r.poll()
        assert (await r.client.get("/")).status == 404
        assert (await r.client.get("/status.json")).status == 404
        assert (await r.client.get("/metrics")).status == 200


def test_every_value_is_escaped() -> None:
    from exporter.status import ClusterStatus, NodeStatus, TopEntry

    evil = "<script>alert('x')</script>&\""
    status = Status(version="1", generated_at=0.0, snapshot_series=0, snapshot_age_seconds=None,
                    clusters=[ClusterStatus(
                        name=evil, up=False, emqx_version=evil, dialect=evil, listing=evil,
                        auth=evil, last_poll_at=None, last_poll_age_seconds=None,
                        last_poll_duration_seconds=None, outcome=evil, last_success_at=None,
                        last_poll_error=(evil, evil, 0.0),
                        nodes=[NodeStatus(evil, "down", None, evil, evil, 0.0)],
                        selection=None, selection_text=[evil],
                        top={"mqueue_fill": [TopEntry(evil, evil, {"mqueue_fill": 1.0})]})],
                    links=[(evil, "javascript:'\"><script>")])
    page = render_html(status)
    assert "<script>" not in page and "alert('x')" not in page
    assert page.count("&lt;script&gt;") >= 12


@pytest.mark.parametrize(("key", "value", "message"), [
    ("dashboard_url", "javascript:alert(1)", "must be an http:// or https:// URL"),
    ("status_page", "sometimes", "must be true or false"),
])
def test_bad_status_settings_name_the_key(key: str, value: str, message: str) -> None:
    from exporter.config import load_settings
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings({"emqx_url": "http://emqx:18083", "api_key": "k", "api_secret": "s",
                       key: value}, {}, None)
    assert caught.value.key == key and message in str(caught.value)
