"""The Support group may see disputes and early fraud warnings and submit dispute evidence
(its own permission, billing.submit_dispute_evidence); refunding at a warning stays with
"Support: refunds" (billing.refund_order)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

SUPPORT = [
    ("billing", "view_dispute"),
    ("billing", "view_earlyfraudwarning"),
    ("billing", "submit_dispute_evidence"),
]


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Support")
    for app_label, codename in SUPPORT:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Support").first()
    if group is not None:
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="billing", codename__in=[c for _, c in SUPPORT])
        )


class Migration(migrations.Migration):
    dependencies = [
        ("support", "0012_ratelimit_moves_to_core"),
        ("billing", "0022_disputes_and_fraud_warnings"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
