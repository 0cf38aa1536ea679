"""The baseline for bench/webhook_backlog.py: stock dj-stripe processing, PaidUp's receivers off.

Used only through `bench.settings_stock`. PaidUp's own AppConfig runs unchanged (its ready()
registers PaidUp's receivers and disconnects dj-stripe's PaymentIntent mirror); this one then
puts things back the way dj-stripe ships them. Production code never asks whether it is in a
benchmark: the switch is which AppConfig and URLconf the settings name.
"""

from billing.apps import BillingConfig


class StockBillingConfig(BillingConfig):
    default = False

    def ready(self) -> None:
        super().ready()
        from djstripe.event_handlers import handle_other_event
        from djstripe.models import Event
        from djstripe.signals import WEBHOOK_SIGNALS

        from billing import webhooks

        paidup_receivers = [
            webhooks.on_payment_intent_succeeded,
            webhooks.on_payment_intent_failed,
            webhooks.on_payment_intent_canceled,
        ]
        for name in webhooks.PAYMENT_INTENT_EVENTS:
            signal = WEBHOOK_SIGNALS[name]
            for receiver in paidup_receivers:
                signal.disconnect(receiver, sender=Event)
            signal.connect(handle_other_event, sender=Event)
