"""`Alert` moves from support to the core, keeping its table (support_alert) and its rows.

How: Django's recipe for moving a model between apps ("SeparateDatabaseAndState" in
docs/ref/migration-operations): support/migrations/0009 deletes the model from the state only,
and this one creates it in the state only, over the existing table (Meta.db_table). No SQL runs
on the table. The content type support.alert is relabelled billing.alert, so its permissions
(and the "Support" group's view_alert) and admin log entries follow the model.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def relabel_content_type(apps, schema_editor, old="support", new="billing"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if ContentType.objects.filter(app_label=new, model="alert").exists():
        return  # already there (post_migrate ran between the two halves): leave both as they are
    ContentType.objects.filter(app_label=old, model="alert").update(app_label=new)


def relabel_back(apps, schema_editor):
    relabel_content_type(apps, schema_editor, old="billing", new="support")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0012_watchdog_email_kind"),
        ("support", "0009_alert_moves_to_core"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Alert",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("key", models.CharField(max_length=200, unique=True)),
                        (
                            "reason",
                            models.CharField(
                                choices=[
                                    ("unknown_payment", "Unknown payment recovered"),
                                    ("no_email", "Payment with no email address"),
                                    ("payment_mismatch", "Payment does not match its order"),
                                    ("fulfil_failed", "Fulfilment keeps failing"),
                                    ("paid_after_failed", "Paid after the order had failed"),
                                    ("stale_heartbeat", "Reconciliation has stopped running"),
                                    ("webhook_failed", "Webhook event keeps failing"),
                                    ("customer_case", "Customer says: charged, no access"),
                                    ("duplicate_payment", "Second payment for one order"),
                                    ("unmatched_payment", "Payment that matches no plan"),
                                    ("outbox_stuck", "Emails are not being sent"),
                                ],
                                max_length=30,
                            ),
                        ),
                        ("message", models.TextField()),
                        ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ("followup_sent_at", models.DateTimeField(blank=True, null=True)),
                        ("resolved_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "order",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="alerts",
                                to="billing.order",
                            ),
                        ),
                    ],
                    options={"ordering": ["created_at"], "db_table": "support_alert"},
                ),
            ],
        ),
        migrations.RunPython(relabel_content_type, relabel_back),
    ]
