from django.db import migrations, models


class Migration(migrations.Migration):
    """The self-service page (/help/charged/) fulfils as itself, not as reconciliation. Choices
    only: no SQL, and old rows keep "reconciliation" (there is no telling them apart)."""

    dependencies = [
        ("billing", "0013_alert_moves_to_core"),
    ]

    operations = [
        migrations.AlterField(
            model_name="order",
            name="fulfilled_via",
            field=models.CharField(
                blank=True,
                choices=[
                    ("webhook", "Webhook"),
                    ("return", "Return page"),
                    ("reconciliation", "Reconciliation"),
                    ("support", "Support"),
                    ("self_service", "Self-service page"),
                ],
                max_length=16,
            ),
        ),
    ]
