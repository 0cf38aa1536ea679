"""A fresh second factor before a large refund (issue 12 item 3, ASVS 4.0 2.8 / 3.7.1).

A refund that brings the order's refunded total to REFUND_REVERIFY_CENTS or more (default: the
price of the order's plan, so a full refund of a plan asks, and so does the last of several partial
refunds that add up to it) goes through only when the factor was verified in the last
REFUND_REVERIFY_WINDOW_SECONDS. Otherwise nothing is done: the form as typed (amount, reason,
idempotency token) is kept in the session, the person types one code on the verify page, and
comes back to the same refund's last question, prefilled, one click from done.
"""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpResponseRedirect, QueryDict
from django.urls import reverse

from . import staff_session

RESUME = "staff_refund_resume"  # {"path": the action URL, "data": the POST as typed}


def threshold_cents(order) -> int:
    """The refunded total (minor units) from which a fresh code is needed for `order`."""
    if settings.REFUND_REVERIFY_CENTS is not None:
        return settings.REFUND_REVERIFY_CENTS
    return order.plan.amount_cents if order.plan_id else order.amount_cents


def refund_amount(action_key: str, order, data: dict) -> int | None:
    """What the action would refund (minor units), or None for an action that refunds nothing."""
    if action_key == "refund":
        return data.get("amount")
    if action_key == "refund_warning":
        return order.refundable_cents
    return None


def needed(request, action_key: str, order, data: dict) -> bool:
    """True when this refund is large enough and the factor is not fresh enough.

    Large enough: the order's already refunded cents plus this amount reach the threshold, so a
    refund split in two ($200 then $49 of $249) asks at the second one.
    """
    amount = refund_amount(action_key, order, data)
    if amount is None or order.refunded_cents + amount < threshold_cents(order):
        return False
    return not staff_session.verified_within(request, settings.REFUND_REVERIFY_WINDOW_SECONDS)


def ask(request) -> HttpResponseRedirect:
    """Keep the typed form and send the person to "Confirm it's you", back here after."""
    data = {key: values for key, values in request.POST.lists() if key != "csrfmiddlewaretoken"}
    request.session[RESUME] = {"path": request.path, "data": data}
    back = request.path + "?" + urlencode({"resume": "1"})
    return HttpResponseRedirect(reverse("admin:staff_verify") + "?" + urlencode({REDIRECT_FIELD_NAME: back}))


def resume(request) -> QueryDict | None:
    """The form kept by `ask` for this very action URL (once), or None."""
    if request.GET.get("resume") != "1":
        return None
    kept = request.session.get(RESUME)
    if not kept or kept.get("path") != request.path:
        return None
    del request.session[RESUME]
    data = QueryDict(mutable=True)
    for key, values in kept["data"].items():
        data.setlist(key, values)
    return data


def waiting(request) -> bool:
    """True when a refund waits for this person's code (the verify page says so)."""
    return request.session.get(RESUME) is not None
