"""The Apache Kafka broker in KRaft mode, as scripts/services.py starts it for the app and
tests start private nodes and clusters: its jars resolved from Maven Central by
scripts/kafka/pom.xml, run with the machine's Java 17. Standard library only."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from scripts.service_tools import (
    LOCAL,
    ROOT,
    ServiceError,
    apt_install,
    free_ports,
    is_listening,
    log,
    read_pid,
    require_loopback,
    run,
    stop_pid,
    wait_until,
)

KAFKA_POM_DIR = ROOT / "scripts" / "kafka"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"

KAFKA_PROPERTIES = """\
# Written by scripts/kafka_node.py; a KRaft broker+controller tuned for a small machine.
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
