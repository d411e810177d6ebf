"""Where services live, waiting for a port, free ports, running commands, installing
packages and stopping processes by pid file: for scripts/services.py and
scripts/kafka_node.py, and the tests and benchmarks that start servers. Standard library
only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import ExitStack, closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("COUNTSTREAM_LOCAL_DIR", ROOT / ".local"))
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


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
