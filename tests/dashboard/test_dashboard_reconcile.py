"""The reconcile job repairs the read model's drift from the database, and says what it did."""

from __future__ import annotations

import logging
import uuid

import pytest

from counts import cache, services
from dashboard import read_model
from dashboard.tasks import reconcile_dashboard
from tests.support.pipeline import database_truth, read_model_state

pytestmark = [pytest.mark.django_db, pytest.mark.stack]


def test_reconcile_repairs_drift_and_logs_it(pipeline, caplog):
    wrong, lost, _ = (services.count_create(name=n, value=1) for n in ("wrong", "lost", "ok"))
    pipeline.publish_pending()
    pipeline.consume_once()
    phantom = str(uuid.uuid4())
    client = cache.redis_client()
    client.hset(
        read_model.counts_key(), str(wrong.id), '{"name":"wrong","value":"9","vv":1,"nv":1}'
    )
    client.hdel(read_model.counts_key(), str(lost.id))
    client.hset(read_model.counts_key(), phantom, '{"name":"ghost","value":"5","vv":3,"nv":3}')

    assert reconcile_dashboard() == {"added": 0, "fixed": 0, "removed": 1}  # recent: consumer's
    with caplog.at_level(logging.INFO, logger="dashboard.tasks"):
        assert reconcile_dashboard(grace_seconds=0) == {"added": 1, "fixed": 1, "removed": 0}
        assert reconcile_dashboard(grace_seconds=0) == {"added": 0, "fixed": 0, "removed": 0}

    assert read_model_state() == database_truth()
    assert f"added 1 count(s): {lost.id}" in caplog.text
    assert f"fixed 1 count(s): {wrong.id}" in caplog.text
    assert "read model equals the database" in caplog.text
    # The phantom is gone for good: a late event about it cannot bring it back.
    late = {"id": phantom, "ts": 1, "vv": 4, "value": "4", "nv": 4, "name": "ghost"}
    assert read_model.apply_updates({phantom: read_model.Update(**late)}) == []
