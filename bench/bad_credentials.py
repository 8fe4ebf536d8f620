"""bcrypt under attack: cached scrapes keep their latency while bad credentials flood in, and an
unknown user takes as long to refuse as a wrong password.

The exporter (no EMQX: the served snapshot is its own metrics) listens behind a web config
with three users, two of bcrypt cost 10 and one of cost 12 (so the dummy hash's choice shows).
Two client processes, like Prometheus and an attacker on other machines:

1. baseline: SCRAPERS scrapers with the good credential (cached after its first check);
2. flood: the same scrapers while waves of ATTACKERS bad-credential requests are sent at
   once, a wave a second (distinct passwords, so no cache helps them; half unknown users,
   half wrong passwords): with bcrypt queued per request that was ATTACKERS bcrypt checks
   (7 s at cost 10 on two threads) a second;
   `--same`, the control: every bad request carries one credential, refused from the cache
   after its first check: what the requests cost without bcrypt;
3. timing: unknown user and wrong password of a cost-10 user, interleaved, one at a time,
   distinct passwords (no cache), paced within bcrypt's share of a core (a 429 is retried
   and not counted): the medians and their ratio.

    python -m bench.bad_credentials --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import yaml
from aiohttp import web

from bench.common import save_result
from exporter.config import load_settings
from exporter.logs import configure_logging
from exporter.server import build_app
from exporter.service import Exporter
from exporter.slowclients import GuardedSite
from exporter.webgate import WebGate
from tests.ports import free_port

COMMON = r"""
import asyncio, base64, json, statistics, sys, time, aiohttp
def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
async def timed(session, url, headers):
    began = time.perf_counter()
    async with session.get(url, headers=headers) as answer:
        await answer.read()
        return time.perf_counter() - began, answer.status
async def until(moment):
    await asyncio.sleep(max(0.0, moment - time.time()))
"""

#: The scrapers (a process of their own, as Prometheus): baseline in [t0, t0+S), under the
#: flood in [t0+S, t0+2S), then unknown-user and wrong-password timing, one at a time.
SCRAPER = COMMON + r"""
url, scrapers, seconds, samples, t0 = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                       int(sys.argv[4]), float(sys.argv[5]))
GOOD = basic("prometheus", "good-password")
async def scrape_until(session, end, latencies, errors):
    while time.time() < end:
        latency, status = await timed(session, url, GOOD)
        latencies.append(latency)
        errors[0] += status != 200
        await asyncio.sleep(0.02)
def summary(latencies):
    latencies = sorted(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {"scrapes": len(latencies), "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(p99 * 1000, 2), "max_ms": round(latencies[-1] * 1000, 2)}
async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await timed(session, url, GOOD)  # the good credential's one bcrypt check
        await until(t0)
        base, flood, errors = [], [], [0]
        await asyncio.gather(*(scrape_until(session, t0 + seconds, base, errors)
                               for _ in range(scrapers)))
        await until(t0 + seconds)
        await asyncio.gather(*(scrape_until(session, t0 + 2 * seconds, flood, errors)
                               for _ in range(scrapers)))
        await until(t0 + 2 * seconds + 1)  # the last wave answered
        unknown, wrong, busy = [], [], 0
        for i in range(2 * samples):
            user = "nobody" if i % 2 else "grafana"
            while True:  # paced within bcrypt's share of a core, so each one is checked
                await asyncio.sleep(1.0)
                latency, status = await timed(session, url, basic(user, f"t-{i}"))
                if status == 401:
                    break
                busy += 1
            (unknown if user == "nobody" else wrong).append(latency)
            await asyncio.sleep(4 * latency)
    print(json.dumps({"baseline": summary(base), "flood": summary(flood), "errors": errors[0],
                      "timing_retries_after_429": busy,
                      "unknown_ms": [round(x * 1000, 2) for x in unknown],
                      "wrong_ms": [round(x * 1000, 2) for x in wrong]}))
asyncio.run(main())
"""

#: The attacker (another process): in [t0+S, t0+2S) a wave of bad credentials a second.
ATTACKER = COMMON + r"""
url, attackers, seconds, t0 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
same = sys.argv[5] == "same"  # the control: one bad credential, refused from the cache
async def main():
    outcomes = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await until(t0 + seconds)
        wave = 0
        while time.time() < t0 + 2 * seconds:
            wave += 1
            began = time.time()
            answers = await asyncio.gather(*(
                timed(session, url, basic("nobody" if n % 2 else "grafana",
                                          "g" if same else f"g-{wave}-{n}"))
                for n in range(attackers)))
            for _, status in answers:
                outcomes[status] = outcomes.get(status, 0) + 1
            await asyncio.sleep(max(0.0, 1.0 - (time.time() - began)))
    print(json.dumps(outcomes))
asyncio.run(main())
"""


def web_config(directory: Path) -> Path:
    users = {"prometheus": bcrypt.hashpw(b"good-password", bcrypt.gensalt(10)).decode(),
             "grafana": bcrypt.hashpw(b"another", bcrypt.gensalt(10)).decode(),
             "admin": bcrypt.hashpw(b"costly", bcrypt.gensalt(12)).decode()}
    path = directory / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": users}))
    return path


async def run_once(path: Path, scrapers: int, attackers: int, seconds: float,
                   samples: int, same: bool) -> dict[str, object]:
    settings = load_settings({"emqx_url": "http://127.0.0.1:9", "api_key": "k",
                              "api_secret": "s", "web_config": str(path)}, {}, None)
    gate = WebGate(settings.web_config, settings.open_paths)
    exporter = Exporter(settings)
    runner = web.AppRunner(build_app(exporter, poll=False, gate=gate), access_log=None)
    await runner.setup()
    port = free_port()
    await GuardedSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        t0 = time.time() + 5  # both processes up and the first check done by then
        scraper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRAPER, url, str(scrapers), str(seconds), str(samples),
            str(t0), stdout=subprocess.PIPE)
        attacker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ATTACKER, url, str(attackers), str(seconds), str(t0),
            "same" if same else "distinct", stdout=subprocess.PIPE)
        (out, _), (attacks, _) = await asyncio.gather(scraper.communicate(),
                                                      attacker.communicate())
    finally:
        await runner.cleanup()
        await exporter.stop()
    data: dict[str, object] = json.loads(out)
    data["attack_outcomes"] = json.loads(attacks)
    unknown = data.pop("unknown_ms")
    wrong = data.pop("wrong_ms")
    assert isinstance(unknown, list) and isinstance(wrong, list)
    data["unknown_median_ms"] = round(statistics.median(unknown), 2)
    data["wrong_median_ms"] = round(statistics.median(wrong), 2)
    data["unknown_stdev_ms"] = round(statistics.stdev(unknown), 2)
    data["wrong_stdev_ms"] = round(statistics.stdev(wrong), 2)
    data["unknown_over_wrong"] = round(statistics.median(unknown) / statistics.median(wrong), 3)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scrapers", type=int, default=4, help="good-credential scrapers")
    parser.add_argument("--attackers", type=int, default=100,
                        help="bad-credential requests sent at once, a wave a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--same", action="store_true",
                        help="control: every bad request carries one credential (cached "
                             "after its first check): the cost of the requests alone")
    parser.add_argument("--samples", type=int, default=10,
                        help="unknown-user and wrong-password requests each")
    args = parser.parse_args()
    configure_logging("warning")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        path = web_config(Path(scratch))
        for run in range(1, args.runs + 1):
            result = asyncio.run(run_once(path, args.scrapers, args.attackers, args.seconds,
                                          args.samples, args.same))
            results.append(result)
            base, flood = result["baseline"], result["flood"]
            assert isinstance(base, dict) and isinstance(flood, dict)
            print(f"run {run}: cached scrapes p50/p99 {base['p50_ms']}/{base['p99_ms']} ms "
                  f"alone ({base['scrapes']}), {flood['p50_ms']}/{flood['p99_ms']} ms during "
                  f"waves of {args.attackers} bad credentials ({flood['scrapes']}; "
                  f"{result['errors']} errors); their answers {result['attack_outcomes']}; "
                  f"unknown user {result['unknown_median_ms']} ms "
                  f"(sd {result['unknown_stdev_ms']}) vs wrong password "
                  f"{result['wrong_median_ms']} ms (sd {result['wrong_stdev_ms']}): ratio "
                  f"{result['unknown_over_wrong']}", flush=True)
    save_result("bad_credentials_same" if args.same else "bad_credentials", {"runs": results})


if __name__ == "__main__":
    main()
