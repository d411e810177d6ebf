"""The Procfile's commands, as `make run` (honcho) runs them, for the benchmarks and tests
that start the app the same way."""

from __future__ import annotations

import re
from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
DEVELOPMENT_PORT = "8000"


def procfile_commands() -> dict[str, str]:
    """Process name -> its shell command line."""
    lines = PROCFILE.read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def web_command(port: int) -> str:
    """The Procfile's web command (a shell command line), serving on `port` instead."""
    command = procfile_commands()["web"]
    moved, found = re.subn(rf"\b{DEVELOPMENT_PORT}\b", str(port), command)
    if found != 1:
        raise ValueError(f"the Procfile's web command must name port {DEVELOPMENT_PORT} once")
    return moved
