"""Many counts at once, for the dashboard's scale tests and benchmark: one INSERT ... SELECT
over generate_series, then the read model is rebuilt from the database (the reconcile job).

These counts bypass the outbox on purpose (100,000 service calls would take minutes): no
events exist for them, so only tests and benchmarks use this. Needs Django set up.
"""

from __future__ import annotations

from datetime import timedelta


def insert_counts(how_many: int, prefix: str) -> None:
    """Counts named "<prefix>000001"... with varied values, then shown by the read model."""
    from django.db import connection

    from counts.models import Count
    from dashboard.services import reconcile_read_model

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Count._meta.db_table}
                (id, name, description, value, version, created_at, updated_at)
            SELECT gen_random_uuid(), %s || lpad(i::text, 6, '0'), '', (i * 7919) %% 100003, 1,
                   now() - interval '1 hour', now() - interval '1 hour'
            FROM generate_series(1, %s) AS i
            """,
            [prefix, how_many],
        )
    reconcile_read_model(grace=timedelta(0))
