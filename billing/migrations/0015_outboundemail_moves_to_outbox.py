from django.db import migrations


class Migration(migrations.Migration):
    """OutboundEmail now belongs to the outbox app (outbox/migrations/0001_initial.py): remove it
    from billing's state only. The table billing_outboundemail and its rows stay as they are."""

    dependencies = [
        ("billing", "0014_self_service_via"),
        ("outbox", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[migrations.DeleteModel(name="OutboundEmail")],
        ),
    ]
