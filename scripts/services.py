#!/usr/bin/env python3
"""Start, stop and report the backing services countstream needs, on loopback.

    python3 scripts/services.py start   [postgres|redis|kafka ...]
    python3 scripts/services.py stop    [postgres|redis|kafka ...]
    python3 scripts/services.py status

A service already reachable at its configured address is reused, never started twice.
Only services on loopback are ever started. The script uses the standard library only,
so it runs before the virtualenv exists. Everything it creates lives in `.local/`.

- PostgreSQL: Debian's cluster (installed with apt when missing), with a role and a
  database made from DATABASE_URL (password auth on loopback).
- Redis: Debian's redis-server, a project-local instance bound to 127.0.0.1.
- Kafka: the real Apache broker in KRaft mode, its jars resolved from Maven Central by
  scripts/kafka/pom.xml and run with the machine's Java 17 (scripts/kafka_node.py).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

if not __package__:  # run as `python3 scripts/services.py`: import as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.kafka_node import KafkaNode
from scripts.service_tools import (
    LOCAL,
    LOOPBACK,
    ServiceError,
    apt_install,
    is_listening,
    log,
    require_loopback,
    run,
    stop_pid,
    wait_until,
)

DEFAULT_DATABASE_URL = "postgres://countstream:countstream@127.0.0.1:5432/countstream"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


# --------------------------------------------------------------------------- PostgreSQL


def newest_postgres() -> Path:
    """The newest PostgreSQL that Debian's packages installed, e.g. /usr/lib/postgresql/15."""
    return max(Path("/usr/lib/postgresql").iterdir(), key=lambda version: int(version.name))


@dataclass
class Postgres:
    url: str = field(default_factory=lambda: os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))

    @property
    def parts(self):
        return urlsplit(self.url)

    @property
    def address(self) -> tuple[str, int]:
        return self.parts.hostname or "127.0.0.1", self.parts.port or 5432

    def start(self) -> None:
        host, port = self.address
        if is_listening(host, port):
            log(f"postgres: reusing the server at {host}:{port}")
        else:
            require_loopback("postgres", host, port)
            self._start_debian_cluster(port)
        self._ensure_role_and_database()

    def _start_debian_cluster(self, port: int) -> None:
        if not shutil.which("pg_lsclusters"):
            apt_install("postgresql", "postgresql-contrib")
        cluster = self._cluster_on_port(port)
        if cluster is None:
            version = newest_postgres().name
            log(f"postgres: creating cluster {version}/countstream on port {port}")
            run(["pg_createcluster", version, "countstream", "--port", str(port)])
            cluster = (version, "countstream")
        version, name = cluster
        log(f"postgres: starting Debian cluster {version}/{name} on port {port}")
        run(["pg_ctlcluster", version, name, "start"])
        wait_until(lambda: is_listening("127.0.0.1", port), 30, "postgres")

    @staticmethod
    def _cluster_on_port(port: int) -> tuple[str, str] | None:
        out = run(["pg_lsclusters", "--no-header"]).stdout
        for line in out.splitlines():
            version, name, cluster_port, *_ = line.split()
            if int(cluster_port) == port:
                return version, name
        return None

    def _ensure_role_and_database(self) -> None:
        if not self._can_run_as_superuser():
            return
        user = self.parts.username or "countstream"
        password = self.parts.password or "countstream"
        database = self.parts.path.lstrip("/") or "countstream"
        role_sql = (
            "DO $$ BEGIN "
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
            f"CREATE ROLE \"{user}\" LOGIN CREATEDB PASSWORD '{password}'; END IF; END $$;"
        )
        self._psql(role_sql)
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'")
        if exists.strip() != "1":
            log(f"postgres: creating database {database} owned by {user}")
            self._psql(f'CREATE DATABASE "{database}" OWNER "{user}"')

    def _can_run_as_superuser(self) -> bool:
        # The role/database set-up needs local superuser access (Debian's peer auth for
        # the postgres user). On an external server we trust DATABASE_URL as given.
        host, _ = self.address
        return host in LOOPBACK and os.geteuid() == 0 and shutil.which("runuser") is not None

    def _psql(self, sql: str) -> str:
        _, port = self.address
        cmd = ["runuser", "-u", "postgres", "--", "psql", "-p", str(port), "-tAc", sql]
        return run(cmd, cwd="/").stdout

    def stop(self) -> None:
        host, port = self.address
        if not shutil.which("pg_lsclusters") or (cluster := self._cluster_on_port(port)) is None:
            log("postgres: no local Debian cluster on the configured port")
            return
        if not is_listening(host, port):
            log(f"postgres: cluster {'/'.join(cluster)} is not running")
            return
        run(["pg_ctlcluster", *cluster, "stop"])
        log(f"postgres: stopped cluster {'/'.join(cluster)}")

    def status(self) -> dict:
        host, port = self.address
        up = is_listening(host, port)
        version = None
        if up and shutil.which("psql"):
            env = {**os.environ, "PGCONNECT_TIMEOUT": "3"}
            try:
                version = run(
                    ["psql", self.url, "-tAc", "SHOW server_version"], env=env
                ).stdout.strip()
            except subprocess.CalledProcessError:
                version = "unknown (login failed)"
        return {"service": "postgres", "up": up, "address": f"{host}:{port}", "version": version}


# --------------------------------------------------------------------------- Redis


@dataclass
class Redis:
    url: str = field(default_factory=lambda: os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    @property
    def home(self) -> Path:
        return LOCAL / "redis"

    def start(self) -> None:
        host, port = self.address
        if is_listening(host, port):
            log(f"redis: reusing the server at {host}:{port}")
            return
        require_loopback("redis", host, port)
        if not shutil.which("redis-server"):
            apt_install("redis-server")
        self.home.mkdir(parents=True, exist_ok=True)
        log(f"redis: starting redis-server on 127.0.0.1:{port}")
        run(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--daemonize",
                "yes",
                "--dir",
                str(self.home),
                "--pidfile",
                str(self.home / "redis.pid"),
                "--logfile",
                str(self.home / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
        )
        wait_until(lambda: is_listening("127.0.0.1", port), 15, "redis", self.home / "redis.log")

    def stop(self) -> None:
        stop_pid(self.home / "redis.pid", "redis")

    def status(self) -> dict:
        host, port = self.address
        up = is_listening(host, port)
        version = None
        if up:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(b"INFO server\r\n")
                reply = conn.recv(65536).decode(errors="replace")
            if match := re.search(r"redis_version:(\S+)", reply):
                version = match.group(1)
        return {"service": "redis", "up": up, "address": f"{host}:{port}", "version": version}


# --------------------------------------------------------------------------- CLI

SERVICES = {"postgres": Postgres, "redis": Redis, "kafka": KafkaNode.from_env}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "stop", "status"}:
        print(__doc__)
        return 2
    command, names = argv[0], argv[1:] or list(SERVICES)
    unknown = set(names) - set(SERVICES)
    if unknown:
        print(
            f"unknown service(s): {', '.join(sorted(unknown))}; choose from {', '.join(SERVICES)}"
        )
        return 2
    failed = False
    for name in names:  # on `stop`, one that fails must not keep the others running
        try:
            service = SERVICES[name]()
            if command == "status":
                state = service.status()
                up = "up" if state["up"] else "down"
                print(f"{name:<9} {up:<5} {state['address']:<16} {state['version'] or '-'}")
            else:
                getattr(service, command)()
        except (ServiceError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or ""
            print(f"[services] error: {exc} {detail}".strip(), file=sys.stderr)
            if command != "stop":
                return 1
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
