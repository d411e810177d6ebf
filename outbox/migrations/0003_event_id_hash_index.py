"""event_id: a hash index instead of a unique btree (see OutboxMessage.Meta.indexes).

The hash index is built concurrently, before the unique constraint goes, so a live outbox
keeps taking writes and event_id lookups always have an index.
"""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("outbox", "0002_outbox_parked_by_key"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="outboxmessage",
            index=django.contrib.postgres.indexes.HashIndex(
                fields=["event_id"], name="outbox_event_id"
            ),
        ),
        migrations.AlterField(
            model_name="outboxmessage",
            name="event_id",
            field=models.UUIDField(editable=False),
        ),
    ]
