from django.apps import AppConfig


class OutboxConfig(AppConfig):
    """The outbox: stored email rows, queue-on-commit, the send task, retries, the sweep.

    It imports no order rules: a row may point at its order (a foreign key by string), and
    order emails write to the order's timeline through `order.log()`, nothing more.
    """

    name = "outbox"
    default_auto_field = "django.db.models.BigAutoField"
