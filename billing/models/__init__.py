# The outbox row lives in the outbox app; re-exported so `billing.models.OutboundEmail` keeps working
# (Core may import Outbox).
from outbox.models import OutboundEmail

from .alerts import Alert
from .disputes import Dispute, EarlyFraudWarning
from .orders import IllegalTransition, Order, OrderEvent, Plan
from .ratelimit import RateLimit
from .reconciliation import Lease, ReconciliationRun
from .subscriptions import Refund, Subscription

__all__ = [
    "Alert",
    "Dispute",
    "EarlyFraudWarning",
    "IllegalTransition",
    "Lease",
    "Order",
    "OrderEvent",
    "OutboundEmail",
    "Plan",
    "RateLimit",
    "ReconciliationRun",
    "Refund",
    "Subscription",
]
