"""The Procfile's processes start in a fresh checkout: one with no `.local/` folder, as when
`make run` reuses services that are already running (nothing then creates `.local/`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.procfile import procfile_commands
from tests.support.paths import ROOT
from tests.support.waiting import wait_for


@pytest.mark.stack
def test_celery_beat_starts_where_no_local_folder_exists(tmp_path: Path):
    checkout = tmp_path / "checkout"  # the cwd honcho gives it; the code comes from ROOT
    checkout.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",  # this run's own broker database and queue
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # as `make run` does
    }
    log = tmp_path / "beat.log"
    with open(log, "wb") as out:
        # As honcho runs it: through the shell, in the checkout, its own process group.
        beat = subprocess.Popen(
            procfile_commands()["beat"],
            shell=True,
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        schedules = checkout / ".local"
        wait_for(
            lambda: beat.poll() is not None or any(schedules.glob("celerybeat-schedule*")),
            60,
            "beat to write its schedule or exit",
        )
        assert beat.poll() is None, log.read_text()
    finally:
        if beat.poll() is None:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(30)
