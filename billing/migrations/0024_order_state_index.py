"""An index on Order.state alone, built without locking the orders table on PostgreSQL.

Why concurrently: a plain CREATE INDEX holds a SHARE lock on billing_order until it is built,
which blocks every INSERT and UPDATE of an order: checkouts and fulfilments would wait for the
whole build during a rolling deploy (docs/deploy.md), on a table that only grows.
CREATE INDEX CONCURRENTLY takes a lock that lets writes go on; the price is that it cannot run
inside a transaction, hence `atomic = False` (and a failed build leaves an INVALID index that
`DROP INDEX CONCURRENTLY billing_order_state_idx` clears before a retry).

SQLite (the embedded default) has no CONCURRENTLY and no concurrent writers to spare: the
operation below builds an ordinary index there, so the same migration runs on both.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    """AddIndexConcurrently on PostgreSQL, AddIndex anywhere else (same state change)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0023_alert_reasons_disputes"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="order",
            index=models.Index(fields=["state"], name="billing_order_state_idx"),
        ),
    ]
