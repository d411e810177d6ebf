"""The dashboard page with 100,000 counts: its HTML size and Chromium's time to show it,
beside the page as it was before it was served from read-model indexes (BASELINE_COMMIT).

Both pages run in real uvicorn processes on the same database and Redis keys; the old one
from `git archive BASELINE_COMMIT` in a temporary folder (skipped when git cannot give it).
Times from navigation start, in Debian's Chromium (headless): to the whole HTML received,
and to the first frame painted after the load event; medians of RUNS loads (one for a page
slower than 5 s).
Ports: BENCH_WEB_PORT and the next one when set, free ones otherwise.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path

import httpx
from common import ROOT, emit, log, setup_bench

COUNTS = 100_000
RUNS = 3
BASELINE_COMMIT = "4038aae"  # the page of issue 16: every count in its HTML
PAINTED = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
NOW = "performance.now()"  # ms since navigation start


def baseline_tree(into: Path) -> Path | None:
    """The project as of BASELINE_COMMIT, unpacked into `into`; None if git cannot give it."""
    done = subprocess.run(
        ["git", "archive", "--format=tar", BASELINE_COMMIT], cwd=ROOT, capture_output=True
    )
    if done.returncode != 0:
        log(f"no baseline: {done.stderr.decode().strip()}")
        return None
    with tarfile.open(fileobj=BytesIO(done.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into


def serve(stack: ExitStack, env: dict[str, str], tree: Path, port: int) -> str:
    """uvicorn serving the project in `tree` on `port`, once it answers; returns its URL."""
    from scripts.service_tools import is_listening

    command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=tree, env={**env, "PYTHONPATH": str(tree)}, stdout=subprocess.DEVNULL
    )
    stack.callback(stop, process)
    deadline = time.monotonic() + 60
    while not is_listening("127.0.0.1", port):
        assert process.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}/"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:  # still writing a 30 MB page to a closed socket
        process.kill()
        process.wait(10)


def measure(browser, url: str) -> dict[str, float]:
    """HTML bytes, medians of the time to the whole HTML and to the painted page, and the
    loads that failed (the old page reads every count from Redis in one reply, which can
    outlast the client's 0.5 s socket timeout on a busy machine)."""
    loads, failed = [], 0
    for _ in range(RUNS):
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        response = page.goto(url, wait_until="load", timeout=120_000)
        page.evaluate(PAINTED)
        html = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
        if response.ok:
            loads.append((html["decodedBodySize"], html["responseEnd"], page.evaluate(NOW)))
        else:
            failed += 1
            log(f"{url}: HTTP {response.status}")
        page.close()
        if loads and loads[-1][2] > 5000:  # one load of a slow page says enough
            break
    assert loads, f"every load of {url} failed"
    return {
        "kb": loads[0][0] / 1024,
        "html_ms": statistics.median(html for _, html, _ in loads),
        "render_ms": statistics.median(render for _, _, render in loads),
        "failed_loads": failed,
    }


def ports() -> list[int]:
    from scripts.service_tools import free_ports

    first = os.environ.get("BENCH_WEB_PORT")
    return [int(first), int(first) + 1] if first else free_ports(2)


def main() -> None:
    bench = setup_bench()
    from django.db import connection
    from playwright.sync_api import sync_playwright

    from bench.bulk_counts import insert_counts
    from counts.models import Count
    from infra.redis import redis_client, redis_key

    prefix = f"page-{bench.run_id}-"
    started = time.perf_counter()
    insert_counts(COUNTS, prefix)
    log(f"{COUNTS} counts inserted and shown in {time.perf_counter() - started:.1f}s")
    connection.close()
    env = {**bench.env, "DASHBOARD_PUBLIC": "true"}
    figures: dict[str, dict[str, float]] = {}
    try:
        with sync_playwright() as playwright, ExitStack() as stack:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
            )
            stack.callback(browser.close)
            new_port, old_port = ports()
            old_tree = baseline_tree(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            sides = {"new": (ROOT, new_port), "old": (old_tree, old_port)}
            for side, (tree, port) in sides.items():
                if tree is None:
                    continue
                url = serve(stack, env, tree, port)
                if side == "new":
                    httpx.get(url, timeout=60)  # the first request compiles the templates
                figures[side] = measure(browser, url)
                log(f"{side}: {figures[side]}")
    finally:
        Count.objects.filter(name__startswith=prefix).delete()
        client = redis_client()
        keys = list(client.scan_iter(match=redis_key("*"), count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])

    new, old = figures["new"], figures.get("old")
    results = {f"{name}_new": round(value, 1) for name, value in new.items()}
    if old:
        results |= {f"{name}_old": round(value, 1) for name, value in old.items()}
    unit = {"kb": "KiB", "html_ms": "ms", "render_ms": "ms", "failed_loads": "loads"}
    units = {name: unit[name.rsplit("_", 1)[0]] for name in results}
    emit(
        "dashboard_page_100k_counts",
        results,
        units,
        baseline=f"the page of commit {BASELINE_COMMIT}, every count in its HTML",
        ratio=old["render_ms"] / new["render_ms"] if old else None,
    )


if __name__ == "__main__":
    main()
