"""One log line per email the provider accepted, naming the order by its reference, not the address.

anymail's `post_send` signal fires for every anymail backend (the production ESP, the console and
test backends), after the provider answered; `outbox.sending` tags each message with its kind and,
for an order's email, the order reference (`message.metadata["order_reference"]`).
"""

import logging

from anymail.signals import post_send
from django.dispatch import receiver

logger = logging.getLogger("outbox")


@receiver(post_send)
def log_sent(sender, message, status, esp_name: str, **kwargs) -> None:
    """anymail's post_send receiver: log at INFO the email's kind (its first tag), its order
    reference if any, anymail's statuses and message id. Never logs the address (privacy)."""
    kind = (getattr(message, "tags", None) or ["email"])[0]
    reference = (getattr(message, "metadata", None) or {}).get("order_reference")
    statuses = ",".join(sorted(status.status or [])) or "unknown"
    where = f"order {reference}: " if reference else ""
    logger.info("%s%s email handed to %s (%s, message id %s)", where, kind, esp_name, statuses, status.message_id)
