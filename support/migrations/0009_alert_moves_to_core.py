from django.db import migrations


class Migration(migrations.Migration):
    """`Alert` moves to the core (billing/models/alerts.py). Only Django's picture of the models
    changes here; the table support_alert and its rows stay where they are, and
    billing/migrations/0013_alert_moves_to_core.py takes the model over."""

    dependencies = [
        ("support", "0008_outbox_stuck_alert"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="Alert")]),
    ]
