from django.db import migrations, models


class Migration(migrations.Migration):
    """The health check alerts when due emails wait unsent: the q cluster that sends them is down."""

    dependencies = [
        ('support', '0007_unmatched_payment_alert'),
    ]

    operations = [
        migrations.AlterField(
            model_name='alert',
            name='reason',
            field=models.CharField(choices=[('unknown_payment', 'Unknown payment recovered'), ('no_email', 'Payment with no email address'), ('payment_mismatch', 'Payment does not match its order'), ('fulfil_failed', 'Fulfilment keeps failing'), ('paid_after_failed', 'Paid after the order had failed'), ('stale_heartbeat', 'Reconciliation has stopped running'), ('webhook_failed', 'Webhook event keeps failing'), ('customer_case', 'Customer says: charged, no access'), ('duplicate_payment', 'Second payment for one order'), ('unmatched_payment', 'Payment that matches no plan'), ('outbox_stuck', 'Emails are not being sent')], max_length=30),
        ),
    ]
