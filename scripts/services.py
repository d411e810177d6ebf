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
  scripts/kafka/pom.xml and run with the machine's Java 17.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("COUNTSTREAM_LOCAL_DIR", ROOT / ".local"))
KAFKA_POM_DIR = ROOT / "scripts" / "kafka"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

DEFAULT_DATABASE_URL = "postgres://countstream:countstream@127.0.0.1:5432/countstream"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"


class ServiceError(RuntimeError):
    """A service could not be started; the message says why and what to do."""


def log(message: str) -> None:
    print(f"[services] {message}", flush=True)


def is_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports that were free a moment ago."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(closing(socket.socket())) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def wait_until(predicate, timeout: float, what: str, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    hint = f"; see {log_file}" if log_file else ""
    raise ServiceError(f"{what} did not come up within {timeout:.0f}s{hint}")


def require_loopback(name: str, host: str, port: int) -> None:
    """Nothing answers at host:port; refuse to start a service anywhere but on loopback."""
    if host not in LOOPBACK:
        raise ServiceError(f"{name}: nothing answers at {host}:{port} and it is not loopback")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(f"{' '.join(packages)} missing; install it (apt-get needs root)")
    log(f"installing {' '.join(packages)} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_pid(pid_file: Path, name: str, timeout: float = 30) -> None:
    pid = read_pid(pid_file)
    if pid is None:
        log(f"{name}: not running (no live pid in {pid_file.name})")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_pid(pid_file) == pid:
        time.sleep(0.2)
    if read_pid(pid_file) == pid:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    log(f"{name}: stopped (pid {pid})")


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


# --------------------------------------------------------------------------- Kafka

KAFKA_PROPERTIES = """\
# Written by scripts/services.py; a single KRaft node tuned for a small machine.
process.roles=broker,controller
node.id={node_id}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
{quorum}
log.dirs={data_dir}
num.partitions=3
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=168
"""


def kafka_cluster_id() -> str:
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    # Like Kafka's own Uuid.randomUuid(): an id starting with "-" would read as an option.
    return kafka_cluster_id() if cluster_id.startswith("-") else cluster_id


@dataclass
class KafkaNode:
    """One Apache Kafka broker+controller process in KRaft mode.

    The default node is the project's single broker. Tests build private nodes (other
    ports and folders) to stop and start brokers without disturbing the shared one, and
    several nodes with `voters` form a multi-broker cluster.
    """

    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    home: Path = field(default_factory=lambda: LOCAL / "kafka")
    node_id: int = 1
    voters: str | None = None  # "1@127.0.0.1:19093,2@..." for a static multi-node quorum
    cluster_id: str | None = None
    replication: int = 1
    min_isr: int = 1
    heap: str = "512m"

    @classmethod
    def from_env(cls) -> KafkaNode:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP)
        host, _, port = bootstrap.split(",")[0].rpartition(":")
        return cls(host=host or "127.0.0.1", port=int(port), controller_port=int(port) + 1)

    @property
    def libs(self) -> Path:
        return LOCAL / "kafka-libs"

    @property
    def class_archive(self) -> Path:
        """The broker's classes as the JVM parsed them (a dynamic CDS archive, one per
        checkout): a broker that maps them starts about 40 % faster."""
        return self.libs.with_name("kafka-classes.jsa")

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def version(self, libs: Path | None = None) -> str | None:
        libs = libs or self.libs
        jars = sorted(libs.glob("kafka_2.13-*.jar")) if libs.exists() else []
        match = re.search(r"kafka_2\.13-([\d.]+)\.jar", jars[0].name) if jars else None
        return match.group(1) if match else None

    def running_version(self) -> str | None:
        """The version of the local broker process serving our port, whoever started it
        (another checkout, a test): read from its classpath's jar. None if not found."""
        listener = f"PLAINTEXT://127.0.0.1:{self.port}"
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().decode(errors="replace").split("\0")
                if "kafka.Kafka" not in args or "-cp" not in args:
                    continue
                if listener not in Path(args[-2]).read_text():  # args[-1] is "" after \0
                    continue
            except (OSError, IndexError):
                continue
            return self.version(Path(args[args.index("-cp") + 1]).parent)
        return None

    def fetch_jars(self) -> None:
        if self.version() is not None:
            return
        if not shutil.which("mvn") or not shutil.which("java"):
            apt_install("maven", "openjdk-17-jre-headless")
        log("kafka: resolving the broker's jars from Maven Central (first run only) ...")
        tmp = self.libs.with_suffix(".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-Dstyle.color=never",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
            ],
            cwd=KAFKA_POM_DIR,
            check=True,
        )
        tmp.rename(self.libs)
        self.class_archive.unlink(missing_ok=True)  # recorded from other jars

    def start(self) -> None:
        if is_listening(self.host, self.port):
            log(f"kafka: reusing the broker at {self.host}:{self.port}")
            return
        require_loopback("kafka", self.host, self.port)
        if (pid := read_pid(self.pid_file)) is not None:
            log(f"kafka: pid {pid} is starting already; waiting for it")
        else:
            self.fetch_jars()
            self.archive_classes()
            self._write_config()
            self._format_storage()
            self._launch()
        wait_until(self.is_ready, 90, f"kafka on 127.0.0.1:{self.port}", self.log_file)
        log(f"kafka: broker {self.version()} up on 127.0.0.1:{self.port}")

    def archive_classes(self) -> None:
        """Record the classes a broker loads, once: a throwaway broker runs until it listens
        and writes them at its exit. Kept only if a JVM then starts with them."""
        if self.class_archive.exists():
            return
        log("kafka: recording the broker's classes for faster starts (until it succeeds once) ...")
        with tempfile.TemporaryDirectory() as tmp:
            port, controller_port = free_ports(2)
            probe = KafkaNode(port=port, controller_port=controller_port, home=Path(tmp))
            probe._write_config()
            probe._format_storage()
            recording = Path(tmp) / "classes.jsa"
            command = probe._java_cmd(
                "kafka.Kafka",
                str(probe.home / "server.properties"),
                sharing=[f"-XX:ArchiveClassesAtExit={recording}"],
            )
            server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: is_listening(probe.host, port), 90, "the recording broker")
                server.terminate()  # the JVM writes the archive as it exits
                server.wait(60)
            except (ServiceError, subprocess.TimeoutExpired):
                server.kill()
                server.wait()
            # -Xshare:on: a JVM that cannot map the archive refuses to start.
            sharing = ["-Xshare:on", f"-XX:SharedArchiveFile={recording}"]
            check = self._java_cmd("kafka.Kafka", "--version", sharing=sharing)
            if recording.exists() and subprocess.run(check, capture_output=True).returncode == 0:
                os.replace(recording, self.class_archive)
            else:
                log("kafka: could not record the classes; brokers start without them")

    def is_ready(self) -> bool:
        if read_pid(self.pid_file) is None and not is_listening(self.host, self.port):
            raise ServiceError(f"kafka exited during start-up; see {self.log_file}")
        return is_listening(self.host, self.port)

    def _write_config(self) -> None:
        if self.voters:
            quorum = f"controller.quorum.voters={self.voters}"
        else:
            quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "server.properties").write_text(
            KAFKA_PROPERTIES.format(
                node_id=self.node_id,
                port=self.port,
                controller_port=self.controller_port,
                quorum=quorum,
                data_dir=self.home / "data",
                replication=self.replication,
                min_isr=self.min_isr,
            )
        )

    def _format_storage(self) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(self.cluster_id or kafka_cluster_id())
        mode = [] if self.voters else ["--standalone"]
        log(f"kafka: formatting storage in {self.home / 'data'}")
        run(
            self._java_cmd(
                "kafka.tools.StorageTool",
                "format",
                "-c",
                str(self.home / "server.properties"),
                "-t",
                id_file.read_text().strip(),
                *mode,
                "--ignore-formatted",
            )
        )

    def _java_cmd(self, main_class: str, *args: str, sharing: list[str] | None = None) -> list[str]:
        """The JVM command; `sharing`, its class-data-sharing options, defaults to mapping
        the recorded archive if there is one."""
        if sharing is None:
            sharing = self._class_sharing()
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            f"-Dlog4j2.configurationFile={KAFKA_POM_DIR / 'log4j2.properties'}",
            *sharing,
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def _class_sharing(self) -> list[str]:
        if not self.class_archive.exists():
            return []
        return [f"-XX:SharedArchiveFile={self.class_archive}"]

    def _launch(self) -> None:
        with open(self.home / "logs" / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(self.home / "server.properties")),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        log(f"kafka: started pid {proc.pid}, log in {self.log_file}")

    def stop(self, hard: bool = False) -> None:
        if hard and (pid := read_pid(self.pid_file)) is not None:
            os.kill(pid, signal.SIGKILL)
            self.pid_file.unlink(missing_ok=True)
            return
        stop_pid(self.pid_file, f"kafka:{self.port}", timeout=60)

    def status(self) -> dict:
        up = is_listening(self.host, self.port)
        version = None
        if up:
            version = self.running_version() or "external"
        return {
            "service": "kafka",
            "up": up,
            "address": f"{self.host}:{self.port}",
            "version": version,
        }


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
