"""Every user's email in the one normal form (accounts.addresses.normalize_email).

Users made by the manager were already stored lower-cased; users added in the admin were not.
A user whose normal form belongs to another user is a collision: two accounts for one person.
Merging them moves subscriptions and sign-ins, which is a person's decision, so this migration
leaves both rows exactly as they were, prints them, and carries on. Until a person merges them,
sign-in and lookups by email find the account already in the normal form.
"""

from django.db import migrations

import accounts.addresses


def normalize_users(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    normalize = accounts.addresses.normalize_email
    taken = set()
    changes = []
    for pk, email in User.objects.values_list("pk", "email").order_by("pk").iterator(chunk_size=2000):
        normal = normalize(email)
        if normal == email:
            taken.add(normal)
        else:
            changes.append((pk, email, normal))
    for pk, email, normal in changes:
        if normal in taken:
            print(f"\n  accounts.0002: user {pk} ({email!r}) left as it is: {normal!r} is another user; merge by hand.")
            continue
        User.objects.filter(pk=pk).update(email=normal)
        taken.add(normal)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="user",
            name="email",
            field=accounts.addresses.NormalizedEmailField(max_length=254, unique=True),
        ),
        migrations.RunPython(normalize_users, migrations.RunPython.noop, elidable=True),
    ]
