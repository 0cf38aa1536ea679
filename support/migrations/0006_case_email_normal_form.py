"""Support cases' emails in the one normal form, so a customer who asks again with other
capitals finds their open case (the lookup is now exact on accounts.addresses.normalize_email)."""

from django.db import migrations

import accounts.addresses


def normalize_cases(apps, schema_editor):
    SupportCase = apps.get_model("support", "SupportCase")
    normalize = accounts.addresses.normalize_email
    for pk, email in list(SupportCase.objects.values_list("pk", "email")):
        if normalize(email) != email:
            SupportCase.objects.filter(pk=pk).update(email=normalize(email))


class Migration(migrations.Migration):
    dependencies = [
        ("support", "0005_duplicate_payment_alert"),
        ("accounts", "0002_normalized_email"),
    ]

    operations = [
        migrations.RunPython(normalize_cases, migrations.RunPython.noop, elidable=True),
    ]
