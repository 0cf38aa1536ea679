from .emails import OutboundEmail
from .orders import IllegalTransition, Order, OrderEvent, Plan
from .reconciliation import Lease, ReconciliationRun
from .subscriptions import Refund, Subscription

__all__ = [
    "IllegalTransition",
    "Lease",
    "Order",
    "OrderEvent",
    "OutboundEmail",
    "Plan",
    "ReconciliationRun",
    "Refund",
    "Subscription",
]
