"""Failpoints: deliberate crashes at the dangerous steps, to prove nothing is lost.

They do nothing unless the FAILPOINTS setting (environment variable) names them, e.g.
`FAILPOINTS=after_charge=exit` kills the process right after Stripe has taken the money,
`FAILPOINTS=fulfil_before_commit=raise,email_send=raise` raises at both places.

Names: after_order_commit, after_create_answer (Stripe created the PaymentIntent, we have not
committed its id), after_confirm_answer (Stripe answered the confirm, we have not committed the
answer), after_charge, fulfil_before_commit, before_response, email_send.
"""

import logging
import os

from django.conf import settings

logger = logging.getLogger(__name__)

NAMES = {
    "after_order_commit",
    "after_create_answer",
    "after_confirm_answer",
    "after_charge",
    "fulfil_before_commit",
    "before_response",
    "email_send",
}
ACTIONS = {"raise", "exit"}


class FailpointError(RuntimeError):
    pass


def parse(spec: str) -> dict[str, str]:
    """`"a=raise, b=exit"` → `{"a": "raise", "b": "exit"}`; a bare name means raise."""
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        points[name.strip()] = action.strip() or "raise"
    return points


def failpoint(name: str) -> None:
    action = parse(settings.FAILPOINTS).get(name)
    if action is None:
        return
    logger.error("failpoint %s: %s", name, action)
    if action == "exit":
        # A crash, not a clean shutdown: no response, no atexit, no on_commit.
        os._exit(13)
    raise FailpointError(f"failpoint {name}")
