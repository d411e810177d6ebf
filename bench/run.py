"""Run every bench/bench_*.py in turn, print their JSON lines, write bench/results/latest.json.

    .venv/bin/python bench/run.py [NAME_FILTER]

Benchmarks run one at a time (they would skew each other's figures on a small machine).
Exits non-zero when any benchmark failed or printed no result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "latest.json"
TIMEOUT_SECONDS = 240  # each benchmark promises to finish in under three and a half minutes


def result_lines(stdout: str) -> list[dict]:
    """The JSON result objects a benchmark printed (other stdout lines are ignored)."""
    results = []
    for line in stdout.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and {"name", "figures", "units"} <= parsed.keys():
            results.append(parsed)
    return results


def run_one(script: Path) -> tuple[list[dict], str | None]:
    """Run one benchmark; return its results and an error (None when it succeeded)."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=BENCH_DIR.parent,
            stdout=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return [], f"timed out after {TIMEOUT_SECONDS}s"
    results = result_lines(done.stdout)
    print(f"[run] {script.name}: {time.monotonic() - started:.1f}s", file=sys.stderr)
    if done.returncode != 0:
        return results, f"exit status {done.returncode}"
    return results, None if results else "printed no result"


def main(argv: list[str]) -> int:
    name_filter = argv[0] if argv else ""
    scripts = sorted(p for p in BENCH_DIR.glob("bench_*.py") if name_filter in p.stem)
    results, failures = [], {}
    for script in scripts:
        print(f"[run] {script.name} ...", file=sys.stderr, flush=True)
        found, error = run_one(script)
        for result in found:
            print(json.dumps(result), flush=True)
        results.extend(found)
        if error:
            failures[script.name] = error
            print(f"[run] {script.name} FAILED: {error}", file=sys.stderr)
    RESULTS.parent.mkdir(exist_ok=True)
    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": results,
        "failures": failures,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[run] {len(results)} result(s) written to bench/results/latest.json", file=sys.stderr)
    return 1 if failures or not scripts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
