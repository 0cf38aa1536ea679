from django.apps import AppConfig


class SupportConfig(AppConfig):
    name = "support"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Support"

    def ready(self) -> None:
        from . import staff_events

        staff_events.connect()  # who did what: sign-ins, lock-outs, second factors
