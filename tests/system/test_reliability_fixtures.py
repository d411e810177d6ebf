"""The fault-injection fixtures themselves work: private services stop, crash and come back."""

from pathlib import Path

import psycopg
import pytest

from scripts.service_tools import read_pid


def test_private_postgres_survives_a_crash_and_restart(private_postgres):
    url = private_postgres.create_database("faults_probe")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (n int); INSERT INTO probe VALUES (1)")
    conn = psycopg.connect(url, autocommit=True)

    private_postgres.stop("immediate")
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    private_postgres.start()

    with psycopg.connect(url) as fresh:
        assert fresh.execute("SELECT n FROM probe").fetchall() == [(1,)]


def test_a_private_broker_maps_the_classes_recorded_on_the_first_run(private_kafka):
    # The archive cuts a broker's start by about 40 %, which the fault tests pay a dozen times.
    pid = read_pid(private_kafka.pid_file)
    assert private_kafka.class_archive.exists()
    assert str(private_kafka.class_archive) in Path(f"/proc/{pid}/maps").read_text()
