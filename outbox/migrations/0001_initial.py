"""The outbox row moves from billing to the outbox app, and its table and rows stay where they are.

State only: the model is created here in Django's state with db_table "billing_outboundemail",
the same fields, index name, foreign key to billing.Order and constraint names it had in billing
(billing/migrations/0014 removes it from billing's state). The database is not touched, so no
row is copied, locked or lost. The one row that does change is the model's content type
(billing.outboundemail becomes outbox.outboundemail), so permissions already granted to people
and groups (the "Support" group's view_outboundemail) follow the model instead of being orphaned.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def move_content_type(apps, schema_editor, old="billing", new="outbox"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label=new, model="outboundemail").exists():
        ContentType.objects.using(db).filter(app_label=old, model="outboundemail").update(app_label=new)


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, old="outbox", new="billing")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("billing", "0012_watchdog_email_kind"),
        ("contenttypes", "0002_remove_content_type_name"),
        # The "Support" group is given billing.view_outboundemail there; move the content type after.
        ("support", "0003_support_groups"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="OutboundEmail",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("kind", models.CharField(choices=[("confirmation", "Confirmation"), ("recovery", "Recovery"), ("refund", "Refund"), ("signin", "Sign-in link"), ("alert", "Support alert"), ("case_opened", "Support case opened"), ("watchdog", "Watchdog alert")], max_length=20)),
                        ("to", models.EmailField(max_length=254)),
                        ("status", models.CharField(choices=[("queued", "Queued"), ("sending", "Sending"), ("retry", "Waiting to retry"), ("sent", "Sent"), ("failed", "Failed")], default="queued", max_length=10)),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("last_error", models.TextField(blank=True)),
                        ("next_attempt_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("subject", models.CharField(max_length=255)),
                        ("body_text", models.TextField()),
                        ("body_html", models.TextField()),
                        ("provider_message_id", models.CharField(blank=True, max_length=255)),
                        ("message_id", models.CharField(blank=True, max_length=255)),
                        ("uncertain_attempts", models.PositiveSmallIntegerField(default=0)),
                        ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ("sent_at", models.DateTimeField(blank=True, null=True)),
                        ("order", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="emails", to="billing.order")),
                    ],
                    options={
                        "db_table": "billing_outboundemail",
                        "ordering": ["-created_at"],
                        "indexes": [models.Index(fields=["status", "next_attempt_at"], name="billing_out_status_bab225_idx")],
                        "constraints": [
                            models.UniqueConstraint(condition=models.Q(("order__isnull", False)), fields=("order", "kind"), name="one_email_per_order_and_kind"),
                            models.UniqueConstraint(condition=models.Q(("kind__in", ("confirmation", "recovery"))), fields=("order",), name="one_access_email_per_order"),
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_type, move_content_type_back, elidable=False),
    ]
