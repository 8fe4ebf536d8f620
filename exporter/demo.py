"""`demo`: a simulated EMQX cluster and the exporter polling it, in one process.

The simulator is listening before the exporter is built, so the first poll finds it: a healthy
demo start records no API error. The banner gives everything needed to try it by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from emqx_simulator import SimSettings, serving_simulator
from emqx_simulator.mqtt import MqttServer
from emqx_simulator.settings import CLIENT_GROUPS, DEFAULT_VERSIONS, MAX_CLIENTS
from exporter.config import Settings, load_settings
from exporter.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:9877"
DEFAULT_CLIENTS = 2000
DEFAULT_NODES = 3
DEFAULT_INTERVAL = 15

_EXAMPLES = f"""\
examples:
  emqx-client-exporter demo --listen 127.0.0.1:9900 --clients 50000 --api v4
  make demo ARGS="--listen 127.0.0.1:9900 --api v3 --nodes 2"

The banner printed at start gives the metrics and status URLs, the simulator's URL and
credentials, a curl line to try its API, what to look at first, and `check` and `top`
commands for this simulator. API generations and the
EMQX versions imitated by default: {", ".join(f"{a} {v}" for a, v in DEFAULT_VERSIONS.items())}.
"""


def _whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: a whole number in [minimum, maximum]; argparse names the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `demo` subcommand's flags, each with its help text and default."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EXAMPLES
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
        help=f"where the exporter serves /metrics and its status page (default "
             f"{DEFAULT_LISTEN}); use another port when this one is taken")
    parser.add_argument(
        "--clients", type=_whole(0, MAX_CLIENTS), default=DEFAULT_CLIENTS, metavar="N",
        help=f"MQTT clients in the simulated cluster (default {DEFAULT_CLIENTS})")
    parser.add_argument(
        "--nodes", type=_whole(1), default=DEFAULT_NODES, metavar="N",
        help=f"EMQX nodes in the simulated cluster (default {DEFAULT_NODES})")
    parser.add_argument(
        "--api", choices=tuple(DEFAULT_VERSIONS), default="v5",
        help="EMQX API generation to simulate: v3 (EMQX 3.x), v4 (4.x) or v5 (5.x and 6.x); "
             "the exporter detects it as it would on a real cluster (default v5)")
    parser.add_argument(
        "--emqx-version", dest="emqx_version", metavar="VERSION",
        help="EMQX version to imitate within that generation, e.g. 4.3.5 or 6.2.1 (default: "
             + ", ".join(f"{v} for {a}" for a, v in DEFAULT_VERSIONS.items()) + ")")
    parser.add_argument(
        "--interval", type=_whole(1), default=DEFAULT_INTERVAL, metavar="SECONDS",
        help=f"seconds between the exporter's polls (default {DEFAULT_INTERVAL})")


def simulator_settings(args: argparse.Namespace) -> SimSettings:
    """What to simulate; the one check argparse cannot make (the version fits the API
    generation) names its flag."""
    try:
        return SimSettings(api=args.api, version=args.emqx_version, nodes=args.nodes,
                           clients=args.clients, class_prefixes=True)
    except ValueError as exc:
        raise ConfigError("--emqx-version", str(exc)) from None


@dataclass(frozen=True)
class Demo:
    """The exporter's settings for polling the simulator, and the banner to print."""

    settings: Settings
    banner: str


@contextlib.asynccontextmanager
async def simulated_cluster(args: argparse.Namespace) -> AsyncIterator[Demo]:
    """Start the simulator (on a free loopback port) and yield how to poll it."""
    sim = simulator_settings(args)
    # The simulator publishes its client events over MQTT as EMQX does, so the demo shows the
    # "why clients disconnect" row as well.
    events = MqttServer()
    mqtt_port = await events.start("127.0.0.1", 0)
    try:
        async with serving_simulator(sim, "127.0.0.1", 0, events=events) as sim_url:
            flags = {"emqx_url": sim_url, "api_key": sim.api_key, "api_secret": sim.api_secret,
                     "interval": args.interval, "listen": args.listen,
                     "classes": [{"name": name, "clientid": f"{name}-.*"}
                                 for name in CLIENT_GROUPS],
                     "aggregate": {"labels": ["node", "class"]},
                     "events": {"host": "127.0.0.1", "port": mqtt_port}}
            settings = load_settings(flags, {}, None)
            yield Demo(settings, banner(sim, sim_url, settings))
    finally:
        await events.stop()


def _browsable(host: str, port: int) -> str:
    """An http:// base URL to open for a listen address (a wildcard address means here)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def banner(sim: SimSettings, sim_url: str, settings: Settings) -> str:
    """What the demo prints once it serves: URLs, credentials, commands to try."""
    exporter_url = _browsable(settings.listen_host, settings.listen_port)
    api_url = f"{sim_url}/api/{sim.api}"
    credential = "API key" if sim.api == "v5" else "application id"
    nodes_curl = shlex.join(["curl", "-u", f"{sim.api_key}:{sim.api_secret}",
                             f"{api_url}/nodes"])
    first_look = shlex.join(["curl", "-s", f"{exporter_url}/metrics"]) + " | " + shlex.join(
        ["grep", "-E", "^emqx_(clients_online|clients_mqueue_messages|client_exporter_up)"])
    connection = ["--emqx-url", sim_url, "--api-key", sim.api_key, "--api-secret",
                  sim.api_secret]
    check = shlex.join(["emqx-client-exporter", "check", *connection])
    top = shlex.join(["emqx-client-exporter", "top", *connection, "--interval",
                      f"{settings.clusters[0].interval:g}", "--once"])
    return (
        f"\nDemo running: a simulated EMQX {sim.effective_version} cluster (API {sim.api}, "
        f"{sim.nodes} nodes, {sim.clients} clients), polled every "
        f"{settings.clusters[0].interval:g} s.\n"
        f"  metrics:    {exporter_url}/metrics\n"
        f"  status:     {exporter_url}/\n"
        f"  simulator:  {api_url}  ({credential} {sim.api_key}, secret {sim.api_secret})\n"
        + (f"  events:     mqtt://{ev.host}:{ev.port} {ev.topic}  (why clients disconnect)\n"
           if (ev := settings.clusters[0].events) else "") +
        f"Ask the simulator what the exporter asks EMQX first:\n"
        f"  {nodes_curl}\n"
        f"Look first at the status page (version, API, clients per node, last poll), then at\n"
        f"clients online and queued messages per node and class, and the exporter's own `up`:\n"
        f"  {first_look}\n"
        f"Poll the simulator once and read the summary, then see the worst clients (`top`\n"
        f"polls twice, one interval apart; leave out --once to keep it refreshing):\n"
        f"  {check}\n"
        f"  {top}\n"
        f"Next: point it at your EMQX, README.md section \"Connect your EMQX\".\n"
        f"Press Ctrl-C to stop.\n")
