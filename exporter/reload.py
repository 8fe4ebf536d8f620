"""Reloading the main configuration on SIGHUP or `POST /-/reload`, as Prometheus does.

The file is read and checked completely before anything changes: a bad one is logged with the
key at fault, `emqx_client_exporter_config_last_reload_successful` turns 0, and the running
configuration goes on. A good one is applied by Exporter.apply (pollers rebuilt only for the
clusters that changed; the served snapshot stays) and the web config is looked at again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from exporter.config import Settings
from exporter.errors import ConfigError
from exporter.logs import configure_logging
from exporter.selfmetrics import ReloadStatus
from exporter.service import Exporter
from exporter.webgate import WebGate

log = structlog.get_logger(__name__)

#: Settings bound to the listening socket: changing them needs a restart.
RESTART_ONLY = ("listen_host", "listen_port", "web_config")


class ConfigReloader:
    """Loads the settings again (flags, environment and file, as at start) and applies them."""

    def __init__(self, exporter: Exporter, load: Callable[[], Settings],
                 gate: WebGate | None = None) -> None:
        self.exporter = exporter
        self.load = load
        self.gate = gate
        self.status = ReloadStatus(True, exporter.clock())
        exporter.metrics.reloads["config"] = self.status
        self._lock = asyncio.Lock()

    async def reload(self) -> ConfigError | None:
        """Reload once (concurrent calls wait their turn); the error when the file was bad."""
        async with self._lock:
            old = self.exporter.settings
            try:
                settings = self.load()
                for name in RESTART_ONLY:
                    if getattr(settings, name) != getattr(old, name):
                        key = "listen" if name.startswith("listen") else name
                        raise ConfigError(key, "changing it needs a restart")
            except ConfigError as exc:
                self.status.record(False, self.exporter.clock())
                log.error("config_reload_failed", error=str(exc))
                return exc
            if (settings.log_level, settings.log_format) != (old.log_level, old.log_format):
                configure_logging(settings.log_level, settings.log_format)
            await self.exporter.apply(settings)
            if self.gate is not None:
                self.gate.open_paths = frozenset(settings.open_paths)
                self.gate.check()
            self.status.record(True, self.exporter.clock())
            log.info("config_reloaded", clusters=len(settings.clusters))
            return None
