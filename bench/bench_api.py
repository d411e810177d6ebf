"""The API over real HTTP: the app started as `make run` starts it, driven by wrk.

The Procfile's web, relay and consumer commands run on a free port (BENCH_WEB_PORT, when
set) against the bench database; wrk (Debian's package) sends the requests, with
bench/wrk_api.lua adding the token and body. Each round measures, in this order:
- one client's increments (p50), and again with the relay and consumer paused (SIGSTOP,
  PAUSED_SECONDS): the web and PostgreSQL without the pipeline's work on the same cores;
- CLIENTS clients' increments for LOAD_SECONDS: responses >= 400 and socket errors,
  requests/s, p99, and the requests/s as a share of the service-level rate;
- CLIENTS clients on GET /api/counts/{id}/, then on /healthz: the read's share of /healthz;
- the CPU time each part of the stack (web, relay, consumer, PostgreSQL, Kafka, Redis and
  wrk itself) spent per increment of the CLIENTS clients' run, from /proc (each service
  found by the port it listens on): with every core busy, the increments/s the machine's
  cores allow, and the run's share of it.
Before the app starts, each round also measures the service-level write rate:
`count_increment` in this process, WRITERS threads on their own connections and counts (as
bench/bench_write_path.py does). Figures are the medians of the rounds; BENCH_ROUNDS (3) and
BENCH_LOAD_SECONDS (30) shorten a trial run.
Targets (issue 14): 0 errors, increments >= 0.4x the service rate with p99 <= 100 ms, one
client's p50 <= 3 ms, reads >= 0.5x /healthz.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import (
    ROOT,
    compare_writes,
    cpu_seconds,
    emit,
    listening_tree,
    log,
    median,
    session_pids,
    setup_bench,
)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
CLIENTS = 64
LOAD_SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", 30))
SHORT_SECONDS = 4
PAUSED_SECONDS = 2  # well within the relay's lease timeout (outbox/leases.py)
WRITERS = 4
SERVICE_SECONDS = 2
COUNTS = 64
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_api.lua"
APP_PROCESSES = ("web", "relay", "consumer")


def free_port() -> int:
    if port := os.environ.get("BENCH_WEB_PORT"):
        return int(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app(env: dict[str, str], port: int) -> Iterator[tuple[str, dict[str, int]]]:
    """Web, relay and consumer as `make run` (honcho: `sh -c`) starts them; their URL, and
    the session of each (its processes)."""
    from scripts.procfile import procfile_commands, web_command  # ROOT is on the path now

    env = {
        **env,
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        "RELAY_METRICS_PORT": "0",
        "CONSUMER_METRICS_PORT": "0",
    }
    commands = {**procfile_commands(), "web": web_command(port)}
    log_path = Path(tempfile.gettempdir()) / f"bench-api-{port}.log"
    log(f"app output in {log_path}")
    with open(log_path, "wb") as log_file:
        started = [
            subprocess.Popen(
                ["/bin/sh", "-c", commands[name]],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with all its workers
            )
            for name in APP_PROCESSES
        ]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, started[0])
        yield url, {name: process.pid for name, process in zip(APP_PROCESSES, started, strict=True)}
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until_serving(url: str, web: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise SystemExit(f"web exited with status {web.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"web did not answer {url}/healthz within {timeout:g}s")


def wrk(
    url: str, paths: list[str], clients: int, seconds: float, token: str = "", body: str = ""
) -> dict[str, float]:
    """One wrk run; requests, requests/s, latency percentiles in ms, failed responses."""
    env = {
        **os.environ,
        "BENCH_METHOD": "POST" if body else "GET",
        "BENCH_PATHS": ",".join(paths),
        "BENCH_BODY": body,
        "BENCH_TOKEN": token,
    }
    argv = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "5s"]
    done = subprocess.run(
        [*argv, "-s", str(WRK_SCRIPT), url], env=env, capture_output=True, text=True, check=True
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "requests": figures["requests"],
        "per_s": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "failed": figures["non_2xx"] + figures["socket_errors"],
    }


@functools.cache
def service_ports() -> dict[str, int]:
    """The port each service the app uses listens on, as `make services` reads it (once)."""
    from scripts.kafka_node import KafkaNode
    from scripts.services import Postgres, Redis

    return {
        "postgres": Postgres().address[1],
        "kafka": KafkaNode.from_env().port,
        "redis": Redis().address[1],
    }


def cpu_used(sessions: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack, and by wrk (this process's
    children that ended)."""
    parts = {name: session_pids(session) for name, session in sessions.items()}
    parts |= {name: listening_tree(port) for name, port in service_ports().items()}
    used = {name: cpu_seconds(pids) for name, pids in parts.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**used, "wrk": children.ru_utime + children.ru_stime}


@contextmanager
def paused(sessions: dict[str, int], names: tuple[str, ...]) -> Iterator[None]:
    """The named processes stopped (with their children) for the block, then resumed."""
    for name in names:
        os.killpg(sessions[name], signal.SIGSTOP)
    try:
        yield
    finally:
        for name in names:
            os.killpg(sessions[name], signal.SIGCONT)


def one_round(
    url: str, sessions: dict[str, int], token: str, count_ids: list[str]
) -> dict[str, float]:
    increments = [f"/api/counts/{count_id}/increment/" for count_id in count_ids]
    read = [f"/api/counts/{count_ids[0]}/"]
    one = wrk(url, increments, 1, SHORT_SECONDS, token, body='{"delta":1}')
    with paused(sessions, ("relay", "consumer")):
        alone = wrk(url, increments, 1, PAUSED_SECONDS, token, body='{"delta":1}')
    before = cpu_used(sessions)
    many = wrk(url, increments, CLIENTS, LOAD_SECONDS, token, body='{"delta":1}')
    after = cpu_used(sessions)
    reads = wrk(url, read, CLIENTS, SHORT_SECONDS, token)
    healthz = wrk(url, ["/healthz"], CLIENTS, SHORT_SECONDS)
    return {
        "one_client_p50_ms": one["p50_ms"],
        "one_client_paused_p50_ms": alone["p50_ms"],
        "increments_per_s": many["per_s"],
        "increments_p99_ms": many["p99_ms"],
        "increments_failed": many["failed"] + one["failed"] + alone["failed"],
        "reads_per_s": reads["per_s"],
        "reads_failed": reads["failed"],
        "healthz_per_s": healthz["per_s"],
        **{
            f"cpu_ms_{name}": (after[name] - before[name]) * 1000 / many["requests"]
            for name in after
        },
    }


def main() -> None:
    bench = setup_bench()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from counts import services
    from counts.models import Count

    Count.objects.all().delete()
    user, _ = get_user_model().objects.get_or_create(username="bench-api")
    token = Token.objects.get_or_create(user=user)[0].key
    count_ids = [str(services.count_create(name=f"api-{i}").id) for i in range(COUNTS)]
    connection.close()  # the writer threads take their own

    def increment(count_id: str) -> None:
        services.count_increment(count_id=count_id, delta=1)

    # Before the app: a server that leaks connections must not starve this side of them.
    service = compare_writes({"service": increment}, count_ids, WRITERS, ROUNDS, SERVICE_SECONDS)
    rounds = []
    with app(bench.env, free_port()) as (url, sessions):
        wrk(url, [f"/api/counts/{count_ids[0]}/increment/"], CLIENTS, 2, token, '{"delta":1}')
        for number in range(1, ROUNDS + 1):
            rounds.append(one_round(url, sessions, token, count_ids))
            log(f"round {number}: {json.dumps({k: round(v, 2) for k, v in rounds[-1].items()})}")
    figures = {name: median(r[name] for r in rounds) for name in rounds[0]}
    report({**figures, "service_per_s": service["service"]}, rounds)
    report_cpu(figures)


def report(figures: dict[str, float], rounds: list[dict[str, float]]) -> None:
    failed = sum(r["increments_failed"] + r["reads_failed"] for r in rounds)
    of_rounds = f"medians of {ROUNDS} rounds"
    emit(
        "api_increment_one_client",
        figures={
            "p50_ms": round(figures["one_client_p50_ms"], 2),
            "pipeline_paused_p50_ms": round(figures["one_client_paused_p50_ms"], 2),
        },
        units={
            "p50_ms": f"ms per POST .../increment/, one wrk connection, {of_rounds}",
            "pipeline_paused_p50_ms": f"the same for {PAUSED_SECONDS} s with the relay and "
            "consumer paused: their work no longer shares the cores",
        },
        baseline="target p50 <= 3 ms",
        ratio=None,
    )
    ratio = figures["increments_per_s"] / figures["service_per_s"]
    emit(
        "api_increment_concurrent",
        figures={
            "per_s": round(figures["increments_per_s"]),
            "p99_ms": round(figures["increments_p99_ms"], 1),
            "failed": failed,
            "service_per_s": round(figures["service_per_s"]),
            "clients": CLIENTS,
        },
        units={
            "per_s": f"increments/s over HTTP, {CLIENTS} wrk connections for "
            f"{LOAD_SECONDS} s, {of_rounds}",
            "p99_ms": "ms, the 99th percentile of those requests",
            "failed": "responses >= 400 and socket errors, all rounds and runs together",
            "service_per_s": f"count_increment in-process, {WRITERS} writer threads, "
            f"{SERVICE_SECONDS} s per round",
            "clients": "concurrent HTTP connections",
        },
        baseline="the service-level write rate of the same run (target ratio >= 0.4, "
        "0 failed, p99 <= 100 ms)",
        ratio=ratio,
    )
    emit(
        "api_read_vs_healthz",
        figures={
            "reads_per_s": round(figures["reads_per_s"]),
            "healthz_per_s": round(figures["healthz_per_s"]),
        },
        units={
            "reads_per_s": f"GET /api/counts/{{id}}/ with a token, {CLIENTS} connections, "
            f"{SHORT_SECONDS} s, {of_rounds}",
            "healthz_per_s": f"GET /healthz, the same server and load, {of_rounds}",
        },
        baseline="/healthz of the same server (target ratio >= 0.5)",
        ratio=figures["reads_per_s"] / figures["healthz_per_s"],
    )


def report_cpu(figures: dict[str, float]) -> None:
    """Where the CPU of an increment goes, and the rate the cores allow at that cost."""
    cpu = {k.removeprefix("cpu_ms_"): v for k, v in figures.items() if k.startswith("cpu_ms_")}
    total = sum(cpu.values())
    cores = len(os.sched_getaffinity(0))
    ceiling = cores * 1000 / total
    emit(
        "api_increment_cpu",
        figures={
            **{name: round(ms, 3) for name, ms in cpu.items()},
            "total_ms": round(total, 3),
            "cores": cores,
            "ceiling_per_s": round(ceiling),
        },
        units={
            **{name: f"ms of CPU per increment, {CLIENTS} clients' run (/proc)" for name in cpu},
            "postgres": "ms of CPU per increment, PostgreSQL's server and its backends",
            "wrk": "ms of CPU per increment, the load generator",
            "total_ms": "the sum: ms of CPU per increment on this machine",
            "cores": "cores this process may run on",
            "ceiling_per_s": "cores x 1000 / total_ms: increments/s with all cores busy",
        },
        baseline="the increments/s over HTTP of the same run, as a share of the ceiling",
        ratio=figures["increments_per_s"] / ceiling,
    )


if __name__ == "__main__":
    main()
