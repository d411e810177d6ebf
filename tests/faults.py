"""Fault injection for the reliability tests: private services to break, app processes to kill.

Nothing here touches the shared PostgreSQL (5432), Redis (6379) or Kafka (9092). Every
service a test stops or restarts is its own, on free loopback ports, in its own folder,
and is torn down when the test ends. Registered as a pytest plugin in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from scripts.services import (
    KafkaNode,
    free_ports,
    is_listening,
    kafka_cluster_id,
    newest_postgres,
)

ROOT = Path(__file__).resolve().parent.parent
# PostgreSQL runs as the `postgres` OS user, which cannot enter pytest's private tmp dirs.
FAULTS_HOME = ROOT / ".local" / "faults"

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll until `predicate` returns something truthy and return it; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def report(scenario: str, **figures: Any) -> None:
    """Print a scenario's figures as one JSON line (pytest shows it with -s or on failure)
    and append it to .local/reliability-figures.jsonl, where docs/reliability.md's come from."""
    line = json.dumps(
        {"scenario": scenario, "at": time.strftime("%FT%TZ", time.gmtime()), **figures}
    )
    print(line, flush=True)
    FAULTS_HOME.parent.mkdir(exist_ok=True)
    with open(FAULTS_HOME.parent / "reliability-figures.jsonl", "a") as figures_file:
        figures_file.write(line + "\n")


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path:
    return newest_postgres() / "bin"


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb) that a test may stop, crash and restart."""

    home: Path
    port: int
    user: str = "countstream"
    password: str = "countstream"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def _as_postgres(self, *argv: str) -> str:
        cmd = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd="/").stdout

    def init(self) -> PrivatePostgres:
        self.home.mkdir(parents=True)
        shutil.chown(self.home, "postgres", "postgres")
        pg = _postgres_bin()
        self._as_postgres(str(pg / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self.start()
        self.psql(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.home} "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        pg_ctl = str(_postgres_bin() / "pg_ctl")
        log = str(self.home / "postgres.log")
        self._as_postgres(pg_ctl, "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` is a clean shutdown; `immediate` is a crash (recovery runs on start)."""
        pg_ctl = str(_postgres_bin() / "pg_ctl")
        self._as_postgres(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = str(_postgres_bin() / "psql")
        return self._as_postgres(
            psql, "-h", str(self.home), "-p", str(self.port), "-d", database, "-tAc", sql
        )

    def create_database(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)


# --------------------------------------------------------------------------- Redis


@dataclass
class PrivateRedis:
    """A redis-server of the test's own to stop and start at will.

    `persistent` keeps its data across restarts (an append-only file), as a production
    Redis would: entries cached before an outage come back after it.
    """

    home: Path
    port: int
    persistent: bool = False
    process: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--dir", str(self.home)]
        argv += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        with open(self.home / "redis.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: is_listening("127.0.0.1", self.port), 15, f"redis on {self.port}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


# --------------------------------------------------------------------------- Kafka


def private_kafka_node(home: Path, heap: str = "512m") -> KafkaNode:
    port, controller_port = free_ports(2)
    return KafkaNode(port=port, controller_port=controller_port, home=home, heap=heap)


def crash_broker(node: KafkaNode) -> None:
    """SIGKILL a broker and wait until its port is closed, so a restart cannot see it alive.

    (A graceful stop of a combined broker+controller can take a minute; a crash is both
    faster and the harder fault.)
    """
    node.stop(hard=True)
    wait_for(lambda: not is_listening("127.0.0.1", node.port), 30, f"broker {node.port} to die")


@dataclass
class KafkaCluster:
    """Kafka brokers in one KRaft cluster with a static controller quorum, on loopback."""

    nodes: list[KafkaNode]

    @classmethod
    def build(cls, home: Path, size: int = 3, min_isr: int = 2) -> KafkaCluster:
        ports = free_ports(2 * size)
        voters = ",".join(f"{i + 1}@127.0.0.1:{ports[2 * i + 1]}" for i in range(size))
        cluster_id = kafka_cluster_id()
        nodes = [
            KafkaNode(
                port=ports[2 * i],
                controller_port=ports[2 * i + 1],
                home=home / f"node{i + 1}",
                node_id=i + 1,
                voters=voters,
                cluster_id=cluster_id,
                replication=size,
                min_isr=min_isr,
                heap="384m",
            )
            for i in range(size)
        ]
        return cls(nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> KafkaCluster:
        # The voters wait for each other's quorum, so they must start together.
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(KafkaNode.start, self.nodes))
        wait_for(self._all_registered, 60, "every broker to register with the controller")
        return self

    def _all_registered(self) -> bool:
        metadata = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=5)
        return len(metadata.brokers) == len(self.nodes)

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(hard=True), self.nodes))


# --------------------------------------------------------------------------- load


class SteadyLoad:
    """A background thread calling `action(n)` (a write, a read) at a steady rate.

    Failures are counted, not raised: "zero failed writes" is a figure the test asserts.
    """

    def __init__(self, action: Callable[[int], object], per_second: float = 50) -> None:
        self.action = action
        self.interval = 1 / per_second
        self.done = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.db import connections

        due = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    self.action(self.done + len(self.errors))
                    self.done += 1
                except Exception as exc:  # every failure is a finding, whatever its type
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                due += self.interval
                self._stop.wait(max(0.0, due - time.monotonic()))
        finally:
            connections.close_all()

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)


# --------------------------------------------------------------------------- app processes


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for a Django connection's settings (the pytest test database)."""
    s = settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def process_env(database_url: str, **env: str) -> dict[str, str]:
    """The environment of a Django process a test starts: tests.settings on `database_url`."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        **env,
    }


def run_manage(database_url: str, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py *argv` in a subprocess on `database_url`; its output captured as text."""
    command = [sys.executable, "manage.py", *argv]
    env = process_env(database_url, **env)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


@dataclass
class AppProcess:
    """`manage.py relay`, `manage.py consume` or the ASGI server, as a real OS process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> AppProcess:
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts + 1}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, no goodbye to Kafka or PostgreSQL."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.alive:
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else 0

    def restart(self) -> AppProcess:
        self.kill()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# Quick lease checks and progress lines; no metrics ports, which the processes would share.
# Quick rebalances and reports, so tests see lanes move and figures change within a second.
RELAY_TIMING = ("--rebalance-interval", "0.2", "--report-interval", "0.5")
RELAY_ARGS = ("--metrics-port", "0", *RELAY_TIMING)
CONSUMER_ARGS = ("--metrics-port", "0")

COMMANDS = {
    "relay": ["manage.py", "relay"],
    "consume": ["manage.py", "consume"],
    "web": ["-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--no-access-log"],
}


@dataclass
class AppProcesses:
    """Starts app processes against a given database, Kafka and Redis; kills them all at the end."""

    logs: Path
    started: list[AppProcess] = field(default_factory=list)

    def spawn(
        self,
        kind: str,
        *args: str,
        database_url: str,
        kafka: str | None = None,
        redis: str | None = None,
        **env: str,
    ) -> AppProcess:
        environment = {
            **process_env(database_url),
            "PYTHONUNBUFFERED": "1",
            **({"KAFKA_BOOTSTRAP_SERVERS": kafka} if kafka else {}),
            **({"REDIS_URL": redis} if redis else {}),
            **env,
        }
        name = f"{kind}-{len(self.started) + 1}"
        process = AppProcess(
            name, [sys.executable, *COMMANDS[kind], *args], environment, self.logs / f"{name}.log"
        )
        self.started.append(process.start())
        return process

    def web(self, **kwargs: Any) -> tuple[AppProcess, str]:
        """The ASGI server on a free port, once it answers /healthz; returns it and its URL."""
        (port,) = free_ports(1)
        process = self.spawn("web", "--port", str(port), **kwargs)
        wait_for(lambda: is_listening("127.0.0.1", port), 60, f"{process.name} on {port}")
        return process, f"http://127.0.0.1:{port}"

    def bound(self, **common: str) -> Callable[..., Any]:
        """`start(kind, *args, **env)` with `common` (database, Kafka, env) applied to all."""

        def start(kind: str, *args: str, **env: str) -> Any:
            if kind == "web":
                return self.web(**common, **env)
            return self.spawn(kind, *args, **common, **env)

        return start

    def stop_all(self) -> None:
        for process in self.started:
            process.kill()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def app_processes(tmp_path: Path) -> Iterator[AppProcesses]:
    processes = AppProcesses(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
def app_stack(pipeline, app_processes, test_database_url) -> Callable[..., Any]:
    """`start(kind, *args, **env)` on the test database and the topics, consumer group and
    cache keys of the `pipeline` fixture (tests/pipeline.py)."""
    return app_processes.bound(database_url=test_database_url, **pipeline.env)


def api_client(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=10)


@pytest.fixture
def start_relay(app_processes, test_database_url) -> Callable[..., AppProcess]:
    """`start_relay(*args, **env)`: `manage.py relay` on the test database and the topics of
    tests.settings, without a metrics port unless `args` give one."""

    def start(*args: str, **env: str) -> AppProcess:
        argv = ("--metrics-port", "0", *args)
        return app_processes.spawn("relay", *argv, database_url=test_database_url, **env)

    return start


@pytest.fixture(scope="module")
def count_topics() -> None:
    """The two count topics of tests.settings, for tests that publish without a consumer."""
    from counts.events import TOPICS
    from infra.topics import ensure_topics

    ensure_topics(list(TOPICS))


@pytest.fixture
def test_database_url(transactional_db) -> str:
    """The pytest test database, for processes the test starts (needs `transactional_db`)."""
    from django.db import connection

    return database_url(connection.settings_dict)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    (port,) = free_ports(1)
    server = PrivatePostgres(FAULTS_HOME / f"pg-{uuid.uuid4().hex[:8]}", port).init()
    yield server
    server.destroy()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (port,) = free_ports(1)
    server = PrivateRedis(tmp_path / "redis", port).start()
    yield server
    server.stop()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (port,) = free_ports(1)
    server = PrivateRedis(tmp_path / "redis", port, persistent=True).start()
    yield server
    server.stop()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaNode]:
    node = private_kafka_node(tmp_path / "kafka")
    node.start()
    yield node
    node.stop(hard=True)


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster.build(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()
