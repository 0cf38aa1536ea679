from django.db import migrations


class Migration(migrations.Migration):
    """`RateLimit` moves to the core (billing/models/ratelimit.py), so the order page and the
    self-service page share one limiter. Only Django's picture of the models changes here; the
    table support_ratelimit and its rows stay, and billing/migrations/0018_ratelimit_moves_to_core.py
    takes the model over (the recipe of 0009_alert_moves_to_core)."""

    dependencies = [
        ("support", "0011_change_email_permission"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="RateLimit")]),
    ]
