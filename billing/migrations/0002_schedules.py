"""The django-q2 schedules PaidUp needs in every environment."""

from django.db import migrations

SCHEDULES = [
    # (name, function, minutes)
    ("send due emails", "billing.emails.send_due_emails", 1),
]


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, func, minutes in SCHEDULES:
        Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": "I", "minutes": minutes, "repeats": -1}
        )


def remove(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name__in=[name for name, _, _ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(create, remove)]
