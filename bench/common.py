"""What every benchmark shares: its own environment, the result line and percentiles.

A benchmark calls `setup_bench()` before touching Django. That points the process (and,
through `BenchEnv.env`, the relay/consumer subprocesses it starts) at a separate database
(BENCH_DATABASE_URL, created and migrated when missing), fresh Kafka topics under
"bench.<random>." (deleted again at exit) and its own cache key prefix, so a benchmark
never disturbs the dev stack or a test run sharing the machine.

Each benchmark prints one JSON line per result with `emit()`; everything else goes to stderr.
Benchmarks run as `python bench/bench_<name>.py`, so they import this module as `common`
and import Django code only after `setup_bench()`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://countstream:countstream@127.0.0.1:5432/countstream_bench"


@dataclass(frozen=True)
class BenchEnv:
    run_id: str
    database_url: str
    env: dict[str, str]  # os.environ for subprocesses: same database, topics and cache


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def setup_bench() -> BenchEnv:
    """Prepare the benchmark environment and set up Django in this process."""
    run_id = uuid.uuid4().hex[:8]
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    overrides = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "false",  # as in production: DEBUG records every query
        "DATABASE_URL": database_url,
        "KAFKA_TOPIC_PREFIX": f"bench.{run_id}.",
        "KAFKA_CONSUMER_GROUP": f"bench.{run_id}.dashboard",
        "CACHE_KEY_PREFIX": f"bench:{run_id}",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    os.environ.update(overrides)
    sys.path.insert(0, str(ROOT))
    _create_database_if_missing(database_url)

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("kafka_topics", "ensure", stdout=sys.stderr)
    atexit.register(_delete_topics, overrides["KAFKA_TOPIC_PREFIX"])
    log(f"database {database_url.rsplit('/', 1)[-1]}, topics bench.{run_id}.*")
    return BenchEnv(run_id, database_url, dict(os.environ))


def _create_database_if_missing(database_url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _delete_topics(prefix: str) -> None:
    """Delete this run's topics: the managed ones and any a benchmark made itself."""
    from infra.kafka import admin_client

    admin = admin_client()  # keep it alive until the futures resolve
    topics = [name for name in admin.list_topics(timeout=10).topics if name.startswith(prefix)]
    for future in admin.delete_topics(topics, operation_timeout=30).values() if topics else []:
        try:
            future.result()
        except Exception as exc:  # cleanup must not hide the benchmark's own result
            log(f"could not delete a bench topic: {exc}")


Write = Callable[[str], object]


def write_rate(write: Write, count_ids: list, seconds: float) -> float:
    """Writes per second that `write` sustains for `seconds`, round-robin over the counts."""
    from django.db import connection

    done = 0
    ids = itertools.cycle(count_ids)
    started = time.perf_counter()
    deadline = started + seconds
    try:
        while time.perf_counter() < deadline:
            for _ in range(20):  # check the clock less often than we write
                write(next(ids))
            done += 20
    finally:
        connection.close()  # each writer thread has its own; do not leak them
    return done / (time.perf_counter() - started)


def compare_writes(
    sides: Mapping[str, Write], count_ids: list, writers: int, rounds: int, seconds: float
) -> dict[str, float]:
    """Median writes/s of each side: `writers` threads, each on its own connection and share
    of the counts, `seconds` per side and round. The order rotates every round, so drift on
    a shared machine hits every side."""
    names = list(sides)
    rates: dict[str, list[float]] = {name: [] for name in names}
    shares = [count_ids[i::writers] for i in range(writers)]
    for round_no in range(rounds):
        turn = round_no % len(names)
        for name in names[turn:] + names[:turn]:
            with ThreadPoolExecutor(writers) as pool:
                write, seconds_each = itertools.repeat(sides[name]), itertools.repeat(seconds)
                rates[name].append(sum(pool.map(write_rate, write, shares, seconds_each)))
        figures = ", ".join(f"{name} {values[-1]:.0f}/s" for name, values in rates.items())
        log(f"{writers} writer(s), round {round_no + 1}: {figures}")
    return {name: median(values) for name, values in rates.items()}


def percentile(samples: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Iterable[float], pcts: Iterable[float] = (50, 99)) -> dict[str, float]:
    """p50/p99/... and max of a sample, rounded for printing."""
    values = list(samples)
    figures = {f"p{pct:g}": round(percentile(values, pct), 3) for pct in pcts}
    figures["max"] = round(max(values), 3)
    return figures


def _socket_inodes(pid: int | str) -> set[str]:
    """The inodes of the sockets process `pid` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _tcp_sockets(net: Path, state: str, port: int, *, remote: bool) -> set[str]:
    """The inodes of the TCP sockets in `state` ("01" established, "0A" listening) whose
    local (or `remote`) port is `port`, from the tables under `net` (/proc/<pid>/net)."""
    # Distinct sockets, not rows: the kernel lists the table a page per read, and a socket
    # may be listed twice while others open and close between two reads.
    found = set()
    for table in ("tcp", "tcp6"):
        for row in (net / table).read_text().splitlines()[1:]:
            fields = row.split()
            address = fields[2] if remote else fields[1]
            if fields[3] == state and int(address.rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def established_connections(pid: int, remote_port: int) -> int:
    """TCP connections of process `pid` to `remote_port`, from /proc (exact, whatever else
    shares the server)."""
    connected = _tcp_sockets(Path(f"/proc/{pid}/net"), "01", remote_port, remote=True)
    return len(connected & _socket_inodes(pid))


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [0] is the state."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def session_pids(session: int) -> list[int]:
    """The processes of a session (a server started in a session of its own, and its
    workers)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            if int(_stat(proc.name)[3]) == session:
                pids.append(int(proc.name))
    return pids


def listening_tree(port: int) -> list[int]:
    """The process listening on TCP `port` on this machine and all its descendants (a
    server's workers, PostgreSQL's backends); empty if none listens."""
    listening = _tcp_sockets(Path("/proc/net"), "0A", port, remote=False)
    children: dict[int, list[int]] = {}
    server = None
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            pid = int(proc.name)
            children.setdefault(int(_stat(pid)[1]), []).append(pid)
            if server is None and listening & _socket_inodes(pid):
                server = pid
    tree, todo = [], [server] if server else []
    while todo:
        tree.append(pid := todo.pop())
        todo += children.get(pid, [])
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """The CPU time (user and system, all threads) these processes and their children that
    ended have used so far."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat(pid)
            ticks += sum(int(tick) for tick in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def session_connections(session: int, remote_port: int) -> int:
    """TCP connections of a session's processes to `remote_port` (see established_connections)."""
    return sum(established_connections(pid, remote_port) for pid in session_pids(session))


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def emit(
    name: str,
    figures: Mapping[str, float],
    units: Mapping[str, str],
    baseline: str,
    ratio: float | None,
) -> None:
    """Print the one JSON result line that bench/run.py collects."""
    line = {
        "name": name,
        "figures": dict(figures),
        "units": dict(units),
        "baseline": baseline,
        "ratio": None if ratio is None else round(ratio, 4),
    }
    print(json.dumps(line), flush=True)
