"""Command line: `run` (the daemon), `check` (one poll, a summary), `top` (the worst clients,
live), `simulate`, `demo`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from exporter import __version__
from exporter.config import Settings, load_settings
from exporter.contract import PARTS
from exporter.errors import AuthError, ConfigError, ListenError
from exporter.logs import configure_logging
from exporter.poller import PollReport
from exporter.reload import ConfigReloader
from exporter.schema import FLAGS, flag_help
from exporter.selection import RANKINGS, RATE_RANKINGS
from exporter.server import build_app
from exporter.service import Exporter
from exporter.slowclients import GuardedSite
from exporter.status import explain, listing_mode, unlisted_text
from exporter.top import run_top
from exporter.webgate import WebGate

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

#: Imported by the `simulate` and `demo` commands only (tests/test_boundary.py).
SIMULATOR_PACKAGE = "emqx_simulator"
DEMO_TEXT = "a simulated EMQX cluster and the exporter polling it, in one process"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emqx-client-exporter",
        description="Prometheus exporter for per-client metrics of EMQX MQTT brokers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    parts = ", ".join(f"{p.name}{'*' if p.default else ''}" for p in PARTS)
    for name, text in (("run", "poll EMQX in the background and serve /metrics"),
                       ("check", "poll once, print a summary; exit 0 ok, 1 failed, 2 config")):
        sub = commands.add_parser(name, help=text, description=text,
                                  epilog=f"Per-client parts (* = on by default): {parts}")
        _connection_options(sub)
    text = "show the worst clients, refreshed every interval (polls twice before the first table)"
    top = commands.add_parser("top", help=text, description=text)
    _connection_options(top)
    top.add_argument("--sort", choices=RANKINGS, default="mqueue_fill",
                     help="ranking to sort by (default mqueue_fill)")
    top.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    top.add_argument("--once", action="store_true",
                     help="print one table after the second poll and exit")
    text = "serve a simulated EMQX cluster (API, paging, errors, faults on demand)"
    sim = commands.add_parser(
        "simulate", help=text, description=text,
        epilog="Faults on demand (500s, NODE_DOWN, 401, skipped rows, ...) through its /sim "
               "control API, one example per fault: docs/simulator.md.")
    sim.add_argument("--api", choices=("v3", "v4", "v5"), default="v5",
                     help="EMQX API generation: v3 (EMQX 3.x), v4 (4.x) or v5 (5.x and 6.x); "
                          "default v5")
    sim.add_argument("--emqx-version", dest="emqx_version", metavar="VERSION",
                     help="EMQX version to imitate within the generation, e.g. 4.3.5 or "
                          "6.2.1 (default 3.2.8, 4.4.19 or 5.8.9)")
    sim.add_argument("--nodes", type=int, default=3, metavar="N",
                     help="nodes in the cluster, named emqx@10.0.0.1, ... (default 3)")
    sim.add_argument("--clients", type=int, default=1000, metavar="N",
                     help="MQTT clients, spread over the nodes (default 1000)")
    sim.add_argument("--listen", default="127.0.0.1:18083", metavar="HOST:PORT",
                     help="address to serve the API on (default 127.0.0.1:18083)")
    sim.add_argument("--api-key", default="exporter",
                     help="API key (v3/v4: application id) it accepts (default exporter); "
                          "the dashboard user is admin/public")
    sim.add_argument("--api-secret", default="secret",
                     help="the secret of that key or application (default secret)")
    sim.add_argument("--frozen", action="store_true",
                     help="stop the clock: identical pages on every walk (benchmarks)")
    sim.add_argument("--page-cache-mb", type=int, default=1024, metavar="MB",
                     help="with --frozen: memory for cached page bodies (default 1024)")
    sim.add_argument("--class-prefixes", action="store_true",
                     help="client ids start with sensor-, gateway- or app-")
    # `demo`'s flags take their limits and defaults from the simulator, which the container
    # image leaves out: its own parser is built, and the simulator imported, only when it runs.
    commands.add_parser("demo", help=DEMO_TEXT, add_help=False)
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    from exporter.demo import add_arguments

    parser = argparse.ArgumentParser(prog="emqx-client-exporter demo", description=DEMO_TEXT)
    add_arguments(parser)
    return parser


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; `demo`'s flags go to the demo's parser."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in ("simulate", "demo"):
        try:
            importlib.import_module(SIMULATOR_PACKAGE)
        except ModuleNotFoundError as exc:
            if exc.name != SIMULATOR_PACKAGE:
                raise
            parser.error(f"{args.command} needs the simulator (package {SIMULATOR_PACKAGE}), "
                         f"which the container image leaves out: run it from a pip install")
    if args.command == "demo":
        return _demo_parser().parse_args(rest, namespace=args)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def _connection_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--config", help="YAML configuration file")
    for setting in FLAGS:
        sub.add_argument(str(setting.flag), dest=setting.key, help=flag_help(setting))


def _settings(args: argparse.Namespace) -> Settings:
    flags: dict[str, Any] = {setting.key: getattr(args, setting.key) for setting in FLAGS}
    return load_settings(flags, os.environ, args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        if args.command == "run":
            settings = _settings(args)
            configure_logging(settings.log_level, settings.log_format)
            asyncio.run(_serve(settings, load=lambda: _settings(args)))
            return EXIT_OK
        if args.command == "check":
            settings = _settings(args)
            # The summary says what failed; a log line or traceback on top would only repeat it.
            configure_logging("critical", settings.log_format)
            return asyncio.run(_check(settings))
        if args.command == "top":
            settings = _settings(args)
            configure_logging("error", settings.log_format)
            if args.limit < 1:
                raise ConfigError("limit", f"must be >= 1, got {args.limit}")
            return asyncio.run(run_top(settings, args.sort, args.limit, once=args.once))
        if args.command == "simulate":
            configure_logging()
            asyncio.run(_simulate(args))
            return EXIT_OK
        configure_logging()
        asyncio.run(_demo(args))
        return EXIT_OK
    except ConfigError as exc:
        print(f"emqx-client-exporter: {exc.kind}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve(settings: Settings, banner: str | None = None,
                 load: Callable[[], Settings] | None = None) -> None:
    gate = WebGate(settings.web_config, settings.open_paths)  # a bad web config stops us here
    exporter = Exporter(settings)
    reloader = ConfigReloader(exporter, load or (lambda: settings), gate)
    runner = web.AppRunner(build_app(exporter, gate=gate, reloader=reloader), access_log=None)
    await runner.setup()
    try:
        site = GuardedSite(runner, settings.listen_host, settings.listen_port,
                           ssl_context=gate.ssl_context)
        try:
            await site.start()
        except OSError as exc:
            # asyncio wraps the bind error's text; the errno alone reads better.
            cause = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError("listen", f"cannot listen on {settings.listen_host}:"
                                        f"{settings.listen_port}: {cause}; choose another "
                                        f"address with --listen HOST:PORT") from exc
        log.info("serving", listen=f"{settings.listen_host}:{settings.listen_port}",
                 clusters=[c.name or c.url for c in settings.clusters],
                 tls=gate.ssl_context is not None, basic_auth=gate.credentials.enabled)
        if banner:
            print(banner, flush=True)
        await _until_signalled(reloader.reload)
        log.info("stopping")
    finally:
        await runner.cleanup()  # stops the pollers and saves the watch list's state


async def _until_signalled(on_hangup: Callable[[], Awaitable[object]]) -> None:
    """Wait for SIGTERM or SIGINT, so `run` shuts down cleanly and exits 0; SIGHUP reloads."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def hangup() -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(on_hangup())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        for task in reloads:
            await task


def describe(report: PollReport, label: str, *, listing: str = "unknown",
             auth: str = "none") -> str:
    """The human summary `check` prints for one cluster; a failed poll is one line."""
    if report.error is not None and all(o.error is not None for o in report.outcomes):
        return f"cluster {label}: FAILED: {failure_text(report)}"
    version = next((n.version for n in report.nodes if n.version), "unknown")
    generation = report.generation or "unknown"
    lines = [f"cluster {label}:",
             f"  EMQX {version}, API {generation}, listing {listing}, auth {auth}"]
    cluster_wide = listing.endswith("(cluster-wide)") and not any(
        o.walk is not None and o.walk.node is not None for o in report.outcomes)
    for o in report.outcomes:
        if o.error is None and o.walk is not None:
            pages = "" if cluster_wide else f", {_pages(o.walk.pages)}"
            lines.append(f"  node {o.node or '(no node)'}: {o.clients} clients{pages}, "
                         f"{o.seconds:.2f} s")
        else:
            reason = f" [reason {o.error.reason}]" if o.error is not None else ""
            lines.append(f"  node {o.node}: FAILED: {o.error}{reason}")
    if cluster_wide:
        walked = next((o for o in report.outcomes if o.walk is not None), None)
        if walked is not None and walked.walk is not None:
            lines.append(f"  cluster-wide walk: {_pages(walked.walk.pages)}, "
                         f"{walked.seconds:.2f} s")
    lines.append(f"  clients: {report.clients} (duplicates dropped: {report.duplicates})")
    unlisted = unlisted_text(report.unlisted)
    if unlisted is not None:
        lines.append(f"  unlisted rows: {unlisted}")
    if report.bad_rows or report.bad_values:
        lines.append(f"  dropped as wrong-typed or out of range: {report.bad_values} values, "
                     f"{report.bad_rows} rows (api_errors_total bad_value, bad_row)")
    if report.result is not None:
        lines.append(f"  series: {report.result.per_client_series} per-client, "
                     f"{report.result.aggregate_series} aggregate")
        if report.result.selection is not None:
            lines.extend(f"  {line}" for line in explain(report.result.selection))
            rates = [r for r in RATE_RANKINGS if r in report.result.selection.top]
            if rates:
                lines.append(f"  top by {', '.join(rates)}: empty here; a rate needs a "
                             "second poll (the daemon ranks from its second poll)")
    lines.append(f"  poll took {report.duration:.2f} s")
    if report.error is not None:
        lines.append(f"  FAILED: {report.error}")
    return "\n".join(lines)


def _pages(count: int) -> str:
    return f"{count} page" if count == 1 else f"{count} pages"


def failure_text(report: PollReport) -> str:
    """Why a poll failed, on one line, with the reason label and what to do."""
    error = report.error
    assert error is not None
    cause = str(error).replace("\n", " ")
    if report.outcomes and len(report.outcomes) > 1:
        cause = f"all {len(report.outcomes)} nodes failed; first: {cause}"
    hint = ""
    if isinstance(error, AuthError):
        hint = " (check the credentials given"
        if error.credential_kind == "dashboard login" and error.reason != "login_locked":
            hint += ("; the daemon retries a rejected login after a growing pause, as EMQX "
                     "5.9+ locks the user for 10 minutes after 5 failures in 5 minutes")
        hint += ")"
    return f"{cause}{hint} [reason {error.reason}]"


async def _check(settings: Settings) -> int:
    exporter = Exporter(settings)
    try:
        reports = await exporter.poll_all_once()
    finally:
        await exporter.stop()
    for poller, report in zip(exporter.pollers, reports, strict=True):
        auth = poller.client.auth
        print(describe(report, poller.label, listing=listing_mode(poller.dialect),
                       auth=auth.kind if auth is not None else "none"))
    # A node that failed fails `check` too: the daemon would report it with node_up 0.
    complete = all(r.ok and all(o.error is None for o in r.outcomes) for r in reports)
    return EXIT_OK if complete else EXIT_FAILED


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _simulate(args: argparse.Namespace) -> None:
    from emqx_simulator import SimSettings, run_simulator

    host, port = _host_port(args.listen)
    settings = SimSettings(api=args.api, version=args.emqx_version, nodes=args.nodes,
                           clients=args.clients, api_key=args.api_key,
                           api_secret=args.api_secret, frozen=args.frozen,
                           page_cache_mb=args.page_cache_mb, class_prefixes=args.class_prefixes)
    await run_simulator(settings, host, port)


async def _demo(args: argparse.Namespace) -> None:
    from exporter.demo import simulated_cluster

    async with simulated_cluster(args) as demo:
        await _serve(demo.settings, demo.banner)
