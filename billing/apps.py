from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, delivery, email_log, webhooks  # noqa: F401  (registers checks and receivers)
        from .schedules import sync_after_migrate

        # After migrate, the schedule rows follow the settings (RECONCILE_INTERVAL_MINUTES).
        post_migrate.connect(sync_after_migrate, sender=self, dispatch_uid="billing.schedules")
