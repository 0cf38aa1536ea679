from .emails import OutboundEmail
from .orders import IllegalTransition, Order, OrderEvent, Plan
from .subscriptions import Subscription

__all__ = ["IllegalTransition", "Order", "OrderEvent", "OutboundEmail", "Plan", "Subscription"]
