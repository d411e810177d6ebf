"""Seeing, from a test, that a database session waits for a row lock."""

from __future__ import annotations

from django.db import connection


def a_session_waits_for_a_lock(table: str) -> bool:
    """True while some session of the test database waits for a lock in a query on `table`."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # fresh, also inside a transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE %s",
            [f"%{table}%"],
        )
        return cursor.fetchone()[0] > 0
