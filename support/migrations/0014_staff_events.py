"""Who did what (issue 12, item 6): the StaffEvent rows, and what the Support group may see and do
at the door: read the staff events and every person's console actions (the admin log), read the sign-in lock-outs (axes' access attempts) and delete
one, which unlocks that email or address. Superusers have all of it anyway."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

SUPPORT = [
    ("support", "view_staffevent"),
    ("axes", "view_accessattempt"),
    ("axes", "delete_accessattempt"),
    ("admin", "view_logentry"),  # the console's actions by everyone (refunds, fulfils…), next to the sign-ins
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
        for app_label, codename in SUPPORT:
            group.permissions.remove(*Permission.objects.filter(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):

    dependencies = [
        ('support', '0013_dispute_permissions'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("axes", "0010_accessattemptexpiration"),
        ("admin", "0003_logentry_add_action_flag_choices"),
    ]

    operations = [
        migrations.CreateModel(
            name='StaffEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('login', 'Signed in'), ('logout', 'Signed out'), ('login_failed', 'Failed sign-in'), ('locked_out', 'Locked out'), ('unlocked', 'Unlocked'), ('factor_added', 'Second factor added'), ('factor_removed', 'Second factor removed')], db_index=True, max_length=20)),
                ('email', models.CharField(blank=True, db_index=True, max_length=254)),
                ('actor', models.CharField(blank=True, max_length=254)),
                ('client_address', models.CharField(blank=True, max_length=64)),
                ('user_agent', models.CharField(blank=True, max_length=500)),
                ('at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('detail', models.CharField(blank=True, max_length=500)),
                ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='staff_events', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'staff sign-in and security event',
                'verbose_name_plural': 'Staff sign-ins and security',
                'ordering': ['-at', '-pk'],
            },
        ),
        migrations.RunPython(grant, revoke),
    ]
