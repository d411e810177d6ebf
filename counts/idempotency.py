"""Idempotency keys: a write sent again with its key is answered, not done again.

`run_once` claims the user's key with an INSERT in the transaction that then does the write
(and so its outbox rows) and records the answer: key, write and event commit together or
not at all. A second request with the key, while the first is still running, waits on
the first one's uncommitted row (the unique index), then finds it committed and replays
its answer; had the first failed, its key is gone and the second does the write. A failed
write (any exception) keeps no key: its retry runs again, which is safe since it wrote
nothing. Keys live IDEMPOTENCY_KEY_RETENTION_HOURS; an expired key is claimed afresh, and
`prune_expired_keys` (Celery beat) deletes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from counts.models import IdempotencyKey
from infra.database import delete_in_batches


class KeyReused(Exception):
    """The key was first used with another request (method, path or body)."""


class KeyInUse(Exception):
    """The key's row went away while this request waited for it; a retry will settle it."""


@dataclass(frozen=True)
class Answer:
    """What a write answered, as stored for its replays."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def retention() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS)


_TABLE = IdempotencyKey._meta.db_table
# Claims the key, or takes over an expired one; no row back means someone else holds it.
_CLAIM = f"""
    INSERT INTO {_TABLE} AS held (user_id, key, fingerprint, body, headers, created_at)
    VALUES (%(user_id)s, %(key)s, %(fingerprint)s, '', '{{}}', now())
    ON CONFLICT (user_id, key) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
           status_code = NULL, body = '', headers = '{{}}'
     WHERE held.created_at < now() - %(retention)s
 RETURNING id
"""


def run_once(
    *, user_id: int, key: str, fingerprint: str, write: Callable[[], Answer]
) -> tuple[Answer, bool]:
    """Do `write` once per (user, key): returns its answer and False, or, for a key already
    used with the same fingerprint, the first answer and True (a replay, nothing written).

    Raises KeyReused for a key used with another fingerprint, KeyInUse in the rare case
    described at KeyInUse. `write` runs inside this transaction; its exceptions propagate.
    """
    params = {"user_id": user_id, "key": key, "fingerprint": fingerprint}
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM, {**params, "retention": retention()})
            claimed = cursor.fetchone()
        if claimed:
            answer = write()
            IdempotencyKey.objects.filter(pk=claimed[0]).update(
                status_code=answer.status, body=json.dumps(answer.body), headers=answer.headers
            )
            return answer, False
        held = IdempotencyKey.objects.filter(user_id=user_id, key=key).first()
    if held is None:
        raise KeyInUse(key)
    if held.fingerprint != fingerprint:
        raise KeyReused(key)
    return Answer(held.status_code, json.loads(held.body), held.headers), True


def prune_expired_keys(*, batch_size: int = 5_000, max_batches: int = 200) -> int:
    """Delete keys past the retention window in bounded batches; returns how many."""
    expired = IdempotencyKey.objects.filter(created_at__lt=timezone.now() - retention())
    # In any order: a BRIN range scan.
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)[0]
