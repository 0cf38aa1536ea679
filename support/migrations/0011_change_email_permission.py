"""The "Support" group may correct an order's email (the console's "Change email" action).

Like 0003, the permission is created here if post_migrate has not made it yet.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

PERMISSION = ("billing", "change_order_email")


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.get(content_type__app_label=PERMISSION[0], codename=PERMISSION[1])
    group, _ = Group.objects.get_or_create(name="Support")
    group.permissions.add(permission)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name="Support"):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="billing", codename=PERMISSION[1]))


class Migration(migrations.Migration):
    dependencies = [
        ("support", "0009_alert_moves_to_core"),
        ("billing", "0017_email_delivery_and_correction"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
