"""The OpenAPI document is a contract the running app keeps: schemathesis against a real server.

`st run` with every check and phase, as a client team would fuzz it, against the ASGI server
started as a real process on the test database. Bounded examples; once with a fixed seed
(the same cases every run) and once with a random one (printed, to replay a failure). The
coverage phase is deterministic, so the random run spends its time fuzzing instead.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

pytestmark = [pytest.mark.slow, pytest.mark.stack]

SCHEMATHESIS = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
EXAMPLES_PER_OPERATION = 15
ALL_PHASES = "examples,coverage,fuzzing,stateful"


@pytest.fixture
def live_api(app_processes, test_database_url) -> tuple[str, str]:
    """The web process on the test database, and a user's token for its writes."""
    user = get_user_model().objects.create_user("client-team", password="pw")
    token = Token.objects.create(user=user).key
    _, url = app_processes.web(database_url=test_database_url)
    return url, token


@pytest.mark.parametrize(
    ("seed", "phases"),
    [(20261126, ALL_PHASES), (random.randrange(2**32), "fuzzing,stateful")],
    ids=["fixed-seed", "random-seed"],
)
def test_the_live_api_keeps_its_openapi_schema(live_api, seed, phases, tmp_path):
    url, token = live_api
    argv = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/api/schema/",
        "--checks",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(seed),
        "--header",
        f"Authorization: Token {token}",
        "--no-color",
        "--generation-database",
        "none",
    ]
    # In tmp_path: schemathesis keeps a cache in its working directory.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert run.returncode == 0, f"schemathesis (seed {seed}) found failures:\n{run.stdout}"
