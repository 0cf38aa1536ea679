"""Run reconciliation every minute in the q cluster (idempotent: update_or_create by name)."""

from django.db import migrations


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="reconcile",
        defaults={"func": "billing.tasks.reconcile", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="reconcile").delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_reconciliation")]
    operations = [migrations.RunPython(create, remove)]
