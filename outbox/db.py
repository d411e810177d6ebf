"""Plain psycopg connections for the outbox's background work: the relay and its wake-ups."""

from __future__ import annotations

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections


def unflushed_connection(application_name: str) -> psycopg.Connection:
    """A connection made from Django's database settings but outside Django's per-thread
    handling, in autocommit, whose commits do not wait for the WAL flush, and without JIT.

    Only for writes a crash may lose without losing an event: the relay's marks (the rows
    are sent again) and wake-up NOTIFYs (the relay polls anyway). JIT: a claim planned with
    a long list of ids in flight is estimated costly enough to be compiled, which took about
    6 ms of a 60 ms claim and gained nothing on queries this short.
    """
    params = connections[DEFAULT_DB_ALIAS].get_connection_params()
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    conn = psycopg.connect(**params, autocommit=True, application_name=application_name)
    conn.execute("SET synchronous_commit = off; SET jit = off")
    return conn


def id_array(ids: list[int]) -> str:
    """`ids` as one PostgreSQL array literal, for a `%s::bigint[]` parameter.

    psycopg would dump a list of ints one element at a time in Python, which for the
    relay's lists of tens of thousands of ids costs more than the query using them.
    """
    return "{" + ",".join(map(str, ids)) + "}"
