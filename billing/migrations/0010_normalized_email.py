"""Order emails in the one normal form (accounts.addresses.normalize_email).

Checkout always stored `strip().lower()`, so only rows from other ways in (support's attach,
reconciliation adopting a Stripe customer's email, non-NFKC input) change. Orders are not unique
on email, so nothing can collide. The UPPER(email) index served `email__iexact`, which no code
uses any more: every lookup is exact on the normal form, served by the plain email index.
"""

from django.db import migrations

import accounts.addresses


def normalize_orders(apps, schema_editor):
    Order = apps.get_model("billing", "Order")
    normalize = accounts.addresses.normalize_email
    rows = Order.objects.exclude(email="").values_list("pk", "email").iterator(chunk_size=2000)
    changes = [(pk, normalize(email)) for pk, email in rows if normalize(email) != email]
    for pk, normal in changes:
        Order.objects.filter(pk=pk).update(email=normal)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_reconciliation_scan_and_charge_time"),
        ("accounts", "0002_normalized_email"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="order",
            name="billing_order_email_upper",
        ),
        migrations.AlterField(
            model_name="order",
            name="email",
            field=accounts.addresses.NormalizedEmailField(blank=True, max_length=254),
        ),
        migrations.RunPython(normalize_orders, migrations.RunPython.noop, elidable=True),
    ]
