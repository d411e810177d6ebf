"""Plain psycopg connections for the outbox's background work: the relay and its wake-ups."""

from __future__ import annotations

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

# TCP keepalives and a user timeout on both ends of a session, so that a peer that vanished
# (its machine stopped, the network drops packets) is noticed in seconds, not in the
# kernel's two hours: libpq's on the client's side, the server's settings of the same names
# on PostgreSQL's (which then ends the session and releases its advisory locks).
_TCP_LIBPQ = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms
}
_TCP_SERVER = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 1; "
    "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000"
)


def unflushed_connection(application_name: str, tcp_alive: bool = False) -> psycopg.Connection:
    """A connection made from Django's database settings but outside Django's per-thread
    handling, in autocommit, whose commits do not wait for the WAL flush, and without JIT.

    Only for writes a crash may lose without losing an event: the relay's marks (the rows
    are sent again) and wake-up NOTIFYs (the relay polls anyway). JIT: a claim planned with
    a long list of ids in flight is estimated costly enough to be compiled, which took about
    6 ms of a 60 ms claim and gained nothing on queries this short.

    `tcp_alive` adds the TCP keepalives and user timeout above (the relay's sessions).
    """
    params = connections[DEFAULT_DB_ALIAS].get_connection_params()
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    if tcp_alive:
        params.update(_TCP_LIBPQ)
    conn = psycopg.connect(**params, autocommit=True, application_name=application_name)
    conn.execute("SET synchronous_commit = off; SET jit = off")
    if tcp_alive:
        conn.execute(_TCP_SERVER)
    return conn


def id_array(ids: list[int]) -> str:
    """`ids` as one PostgreSQL array literal, for a `%s::bigint[]` parameter.

    psycopg would dump a list of ints one element at a time in Python, which for the
    relay's lists of tens of thousands of ids costs more than the query using them.
    """
    return "{" + ",".join(map(str, ids)) + "}"
