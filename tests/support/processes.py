"""The app's processes (relay, consumer, web) as real OS processes a test starts and kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scripts.service_tools import free_ports, is_listening
from tests.support.paths import ROOT
from tests.support.waiting import wait_for


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

    def wait_assigned(self, timeout: float = 60) -> None:
        """A consumer: until its latest start has its partitions (its catch-up is done)."""

        def since_start() -> str:
            return self.log().rsplit("--- start", 1)[-1]

        wait_for(lambda: "assigned " in since_start(), timeout, f"{self.name}'s partitions")


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


def api_client(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=10)
