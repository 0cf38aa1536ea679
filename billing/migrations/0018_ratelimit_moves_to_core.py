"""`RateLimit` moves from support to the core, keeping its table (support_ratelimit) and its rows.

The recipe of 0013_alert_moves_to_core: support/migrations/0012 deletes the model from the state
only, this one creates it in the state only over the existing table (Meta.db_table); no SQL runs
on the table. The content type support.ratelimit is relabelled billing.ratelimit so that its
permissions follow the model (no group holds any of them).
"""

from django.db import migrations, models


def relabel_content_type(apps, schema_editor, old="support", new="billing"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if ContentType.objects.filter(app_label=new, model="ratelimit").exists():
        return  # already there (post_migrate ran between the two halves): leave both as they are
    ContentType.objects.filter(app_label=old, model="ratelimit").update(app_label=new)


def relabel_back(apps, schema_editor):
    relabel_content_type(apps, schema_editor, old="billing", new="support")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0017_email_delivery_and_correction"),
        ("support", "0012_ratelimit_moves_to_core"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="RateLimit",
                    fields=[
                        ("key", models.CharField(max_length=100, primary_key=True, serialize=False)),
                        ("hits", models.PositiveIntegerField(default=0)),
                        ("expires_at", models.DateTimeField(db_index=True)),
                    ],
                    options={"db_table": "support_ratelimit"},
                ),
            ],
        ),
        migrations.RunPython(relabel_content_type, relabel_back),
    ]
