"""The "Support" group with least privilege, and "Support: refunds" for money going back."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

SUPPORT = [
    ("billing", "view_order"),
    ("billing", "view_orderevent"),
    ("billing", "view_outboundemail"),
    ("billing", "view_subscription"),
    ("billing", "view_refund"),
    ("billing", "view_plan"),
    ("billing", "fulfil_order"),
    ("billing", "resend_access"),
    ("billing", "extend_subscription"),
    ("support", "view_alert"),
    ("support", "view_supportcase"),
    ("support", "change_supportcase"),
    ("accounts", "view_user"),
]
REFUNDS = [("billing", "refund_order"), ("billing", "attach_payment")]


def create_groups(apps, schema_editor):
    # Permissions are normally created after migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in (("Support", SUPPORT), ("Support: refunds", REFUNDS)):
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in codenames:
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Support", "Support: refunds"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("support", "0002_cases"),
        ("billing", "0005_support_console"),
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]
    operations = [migrations.RunPython(create_groups, remove_groups)]
