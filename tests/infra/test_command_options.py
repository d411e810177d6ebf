"""`relay` and `consume` alike: option checks, a metrics port in use, the metrics host."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command

from tests.support.paths import ROOT

COMMANDS = ["relay", "consume"]


def run_python(*argv: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_METRICS_")}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size: invalid positive integer: '0' (must be at least 1)"),
        (["--batch-size", "many"], "--batch-size: invalid positive integer: 'many'"),
        (["--metrics-port", "70000"], "--metrics-port: invalid port: '70000'"),
        (["--metrics-port", "-1"], "--metrics-port: invalid port: '-1'"),
    ],
)
def test_bad_option_values_are_refused_alike(command, args, message):
    with pytest.raises(CommandError, match=re.escape(f"argument {message}")):
        call_command(command, *args)


@pytest.mark.parametrize("command", COMMANDS)
def test_on_the_command_line_a_bad_value_exits_2_with_the_reason(command):
    result = run_python("manage.py", command, "--batch-size", "0")
    assert result.returncode == 2
    assert "error: argument --batch-size: invalid positive integer: '0'" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_metrics_port_in_use_is_fatal_for_both(command, busy_port):
    with pytest.raises(CommandError, match=f"cannot serve metrics on 127.0.0.1:{busy_port}"):
        call_command(command, "--metrics-port", str(busy_port))


def test_relay_metrics_address_is_read_when_relay_metrics_host_is_unset():
    show = "import django; django.setup(); from django.conf import settings as s; "
    show += "print(s.RELAY_METRICS_HOST)"
    assert run_python("-c", show).stdout.split() == ["127.0.0.1"]
    assert run_python("-c", show, RELAY_METRICS_ADDRESS="0.0.0.0").stdout.split() == ["0.0.0.0"]
    both = run_python("-c", show, RELAY_METRICS_ADDRESS="0.0.0.0", RELAY_METRICS_HOST="::1")
    assert both.stdout.split() == ["::1"]
