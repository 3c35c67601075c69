"""Redis high availability on loopback for tests: a master, replicas and three Sentinels, each
a real redis-server process (Debian's redis-sentinel, or `redis-server --sentinel`) with fast
failure detection (down after 1 s)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.redis_server import REDIS_SERVER, RedisServer, free_port

MASTER_NAME = "lrpseg-test"


class SentinelCluster:
    def __init__(self, root: Path, replicas: int = 2, sentinels: int = 3) -> None:
        self.root = root
        self.master = RedisServer(root / "master")
        follow = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replicas = [RedisServer(root / f"replica-{n}", extra=follow) for n in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> str:
        """LRPSEG_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        for n, port in enumerate(self.sentinel_ports):
            folder = self.root / f"sentinel-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # Sentinel rewrites its config: one writable file each
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 3000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 2\n"
            )
            command = [shutil.which("redis-sentinel") or REDIS_SERVER, str(config)]
            if not shutil.which("redis-sentinel"):
                command.append("--sentinel")
            log = (folder / "sentinel.log").open("ab")
            self.sentinels.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        self.wait(lambda: all(self.replicas_seen(port) == len(self.replicas) for port in self.sentinel_ports))

    def master_port(self, sentinel_port: int | None = None) -> int | None:
        """The master's port as a Sentinel reports it."""
        client = redis.Redis(port=sentinel_port or self.sentinel_ports[0], socket_timeout=1)
        try:
            found = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            return None if found is None else int(found[1])
        except redis.RedisError:
            return None
        finally:
            client.close()

    def replicas_seen(self, sentinel_port: int) -> int:
        client = redis.Redis(port=sentinel_port, socket_timeout=1)
        try:
            return sum(1 for r in client.sentinel_slaves(MASTER_NAME) if "s_down" not in r["flags"])
        except redis.RedisError:
            return 0
        finally:
            client.close()

    def kill_master(self) -> int:
        """SIGKILL the current master (a crash: no goodbye to anyone); its port."""
        port = self.master_port()
        for server in [self.master, *self.replicas]:
            if server.port == port:
                server.stop(signal.SIGKILL)
                return port
        raise AssertionError(f"no server of this cluster is the master (port {port})")

    def wait(self, check: object, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError("the Sentinel cluster did not settle")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        for server in [self.master, *self.replicas]:
            server.stop()
