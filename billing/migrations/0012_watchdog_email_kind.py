from django.db import migrations, models


class Migration(migrations.Migration):
    """The watchdog's alerts get a kind of their own: the health check sends them itself."""

    dependencies = [
        ('billing', '0011_outbox_message_id'),
    ]

    operations = [
        migrations.AlterField(
            model_name='outboundemail',
            name='kind',
            field=models.CharField(choices=[('confirmation', 'Confirmation'), ('recovery', 'Recovery'), ('refund', 'Refund'), ('signin', 'Sign-in link'), ('alert', 'Support alert'), ('case_opened', 'Support case opened'), ('watchdog', 'Watchdog alert')], max_length=20),
        ),
    ]
