"""docs/simulator.md: one example per fault kind, each run as printed against a simulator and
seen to fire (and, where it answers with a status, to answer with it)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from emqx_simulator import SimSettings
from emqx_simulator.faults import FAULT_KINDS
from tests.test_cli import ROOT, threaded_sim
from tests.test_demo import require_command

DOC = ROOT / "docs" / "simulator.md"
EXAMPLE = re.compile(r"""^curl -s -X POST "\$SIM/sim/faults" -d '(\{.*\})'$""", re.MULTILINE)
#: The status the first firing request gets, for faults that answer with one.
STATUS = {"http_error": 503, "unauthorized": 401, "forbidden": 403, "html_error": 502,
          "rate_limited": 429, "api_error": 400, "node_error": 500}


def examples() -> list[tuple[str, dict[str, Any]]]:
    return [(m[0], json.loads(m[1])) for m in EXAMPLE.finditer(DOC.read_text())]


def test_every_fault_kind_has_one_example() -> None:
    kinds = [rule["kind"] for _, rule in examples()]
    assert sorted(kinds) == sorted(FAULT_KINDS)


def _get(url: str, auth: str) -> int | None:
    request = urllib.request.Request(  # noqa: S310 (an http URL of the test's own simulator)
        url, headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, OSError, http.client.HTTPException):
        return None  # a dropped or broken connection is what some faults do


def test_each_example_works_as_printed() -> None:
    curl = require_command("curl", "curl")
    sim = SimSettings(clients=100, nodes=3)
    auth = base64.b64encode(f"{sim.api_key}:{sim.api_secret}".encode()).decode()
    with threaded_sim(sim) as (cluster, url):
        env = {**os.environ, "SIM": url}
        for line, rule in examples():
            added = subprocess.run(["sh", "-c", line.replace("curl ", f"{curl} ", 1)],
                                   env=env, capture_output=True, timeout=30, check=True)
            answer = json.loads(added.stdout)
            assert answer["kind"] == rule["kind"] and "id" in answer, added.stdout
            path = (rule.get("endpoint") or "GET /api/v5/clients").partition(" ")[2]
            params = {"limit": "10"}
            if rule.get("node"):
                params["node"] = rule["node"]
            statuses = [_get(f"{url}{path}?{urlencode(params)}", auth)
                        for _ in range(rule.get("after", 0) + 1)]
            with urllib.request.urlopen(f"{url}/sim/faults", timeout=10) as response:  # noqa: S310
                (state,) = json.loads(response.read())
            assert state["fired"] >= 1, (line, state)
            if rule["kind"] in STATUS:
                assert statuses[-1] == STATUS[rule["kind"]], (line, statuses)
            if rule["kind"] == "node_down":
                assert cluster.is_node_down(rule["node"])
                cluster.set_node_down(rule["node"], False)
            cluster.faults.clear()
