"""Private PostgreSQL, Redis and Kafka servers that a test may stop, crash and restart.

Nothing here touches the shared PostgreSQL (5432), Redis (6379) or Kafka (9092): each server
is on free loopback ports, in its own folder, and is torn down when its test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from scripts.kafka_node import KafkaNode, kafka_cluster_id
from scripts.service_tools import free_ports, is_listening, read_pid
from scripts.services import newest_postgres
from tests.support.waiting import wait_for

# --------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path:
    return newest_postgres() / "bin"


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb) that a test may stop, crash and restart.

    It runs as the `postgres` OS user, so its folder is a fresh one in the system's temp
    folder, owned by `postgres`: neither the checkout (a clone may sit in a 0700 folder) nor
    pytest's tmp folders (0700) can be entered by that user.
    """

    port: int
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="countstream-pg-")))
    user: str = "countstream"
    password: str = "countstream"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def _as_postgres(self, *argv: str) -> str:
        cmd = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd="/").stdout

    def init(self) -> PrivatePostgres:
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


@contextmanager
def frozen(node: KafkaNode) -> Iterator[None]:
    """SIGSTOP a broker for the block: its connections stay open and take requests, but
    nothing is answered until it is thawed (SIGCONT) and works through them."""
    pid = read_pid(node.pid_file)
    assert pid is not None, f"broker {node.port} is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


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
        # The voters wait for each other's quorum, so they must start together; the classes
        # are recorded first, by one of them, if they were not yet.
        self.nodes[0].archive_classes()
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
