"""The fault-injection fixtures themselves work: private services stop, crash and come back."""

import psycopg
import pytest


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
