"""The order page, `/orders/<reference>/`: where an order stands, told to the browser that paid
(its reference cookie) or a signed link from its emails in full, and to anyone else as the state
and the next step only, rate-limited; plus the one-time correction of a bounced email address."""

from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import checkout, email_change, order_links, payment_status, ratelimit, refcookie
from .client import client_address
from .forms import CorrectEmailForm
from .models import Order
from .models.orders import is_valid_reference, normalize_reference
from .views import wants_json

LOOKUPS_PER_WINDOW = 30
LOOKUP_WINDOW_SECONDS = 600


def order_status(request, reference: str):
    """The order page (HTML, or `{reference, state, fulfilled}` as JSON). The details (email,
    amount, plan, times) only for the browser holding the order's reference cookie or a valid
    signed link from its emails (billing/order_links.py), which then gets the cookie; everyone
    else sees the state and what to do next, rate-limited per client address, and made-up
    references the same 404 whatever their shape."""
    reference = normalize_reference(reference)
    valid = is_valid_reference(reference)
    holder = valid and refcookie.read(request) == reference
    link = order_links.check(reference, request.GET.get(order_links.PARAM, "")) if valid else order_links.INVALID
    trusted = holder or link == order_links.VALID
    if not trusted and not ratelimit.allow(
        "order-lookup", client_address(request), limit=LOOKUPS_PER_WINDOW, window=LOOKUP_WINDOW_SECONDS
    ):
        return _too_many_lookups(request)
    order = Order.objects.select_related("plan").filter(reference=reference).first() if valid else None
    if order is None:
        raise Http404("No such order")
    # Everyone's look may ask Stripe (at most every 3 s per order): the state shown must be true,
    # and a stranger learns nothing from the time it takes that the state does not already say.
    order = checkout.sync_with_stripe(order)
    if wants_json(request):
        return JsonResponse(
            {"reference": order.reference, "state": order.state, "fulfilled": order.state == Order.State.FULFILLED}
        )
    if not trusted:
        view = order_view_state(order)
        context = {
            "order": order,
            "view": view,
            "headline": HEADLINES[view],
            "link_expired": link == order_links.EXPIRED,
        }
        return render(request, "billing/order_public.html", context)
    response = render(request, "billing/order.html", {"order": order, **_page(request, order)})
    if not holder and not _checkout_in_progress(request):
        refcookie.store(response, order.reference)  # the link's browser keeps the page after a reload
    return response


def _checkout_in_progress(request) -> bool:
    """Whether this browser's reference cookie names an unfinished order: a link from an email
    must not take the cookie from a checkout still under way in another tab."""
    current = refcookie.read(request)
    return current is not None and Order.objects.filter(reference=current, state=Order.State.PENDING).exists()


def _too_many_lookups(request):
    retry_after = ratelimit.seconds_left(LOOKUP_WINDOW_SECONDS)
    minutes = -(-retry_after // 60)
    if wants_json(request):
        response = JsonResponse({"error": "Too many order lookups; try again later."}, status=429)
    else:
        response = render(request, "billing/order_limited.html", {"minutes": minutes}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


# The outcome first in the tab's title, where a screen reader starts and a busy person looks.
HEADLINES = {
    "ready": "You're all set",
    "setting_up": "Payment received, setting up your access",
    "awaiting_payment": "Waiting for your payment",
    "confirming": "Confirming your payment",
    "processing": "Your bank is processing your payment",
    "not_charged_retry": "Payment didn't go through, not charged",
    "needs_authentication": "Your bank wants to confirm it's you",
    "declined": "Payment didn't go through, not charged",
    "not_charged": "Order not completed, not charged",
    "refunded": "Refunded",
}
# The stories that can change by themselves: the page polls the order's JSON while it tells one.
WAITING_VIEWS = {"awaiting_payment", "confirming", "processing", "setting_up", "needs_authentication"}


def _page(request, order: Order, form: CorrectEmailForm | None = None) -> dict:
    """The order page's context beside the order: its story, the tab's headline, whether it
    polls, and the bounced-email correction (for the cookie holder only)."""
    view = order_view_state(order)
    return {
        "view": view,
        "resumed": "resumed" in request.GET,
        "headline": HEADLINES[view],
        "waiting": view in WAITING_VIEWS,
        **_correction(request, order, form),
    }


def _correction(request, order: Order, form: CorrectEmailForm | None = None) -> dict:
    """The bounced-email notice and its one-time correction form: only for the browser holding
    the order's reference cookie (billing.refcookie); nothing for anyone else."""
    if refcookie.read(request) != order.reference:
        return {}
    bounced = email_change.customer_may_correct(order)
    return {
        "bounced": bounced,
        "correction_form": form or (CorrectEmailForm() if bounced else None),
        "corrected": "corrected" in request.GET,
    }


@require_POST
def correct_email(request, reference: str):
    """POST /orders/<reference>/email/: the customer corrects an address their access email
    could not reach, once (billing.email_change.change_email, by_customer). Only from the browser
    holding the order's reference cookie; anyone else gets 403 and learns nothing about the order."""
    reference = normalize_reference(reference)
    # The cookie first, before the order is looked up: a browser without it gets the same 403
    # for a real and a made-up reference, so this form cannot tell which orders exist.
    if not is_valid_reference(reference) or refcookie.read(request) != reference:
        return render(request, "billing/correct_email_refused.html", status=403)
    order = Order.objects.select_related("plan").filter(reference=reference).first()
    if order is None:
        raise Http404("No such order")
    form = CorrectEmailForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            email_change.change_email(order, form.cleaned_data["email"], actor="customer", by_customer=True)
        except email_change.EmailChangeRefused as refused:
            error = str(refused)
        else:
            return redirect(reverse("billing:order", args=[order.reference]) + "?corrected=1")
    if error:
        form.add_error("email", error)
    context = {"order": order, **_page(request, order, form)}
    return render(request, "billing/order.html", context, status=400)


def order_view_state(order: Order) -> str:
    """Which of the page's stories to tell: by state, and while pending by the PaymentIntent
    status table (`billing.payment_status`)."""
    if order.state == Order.State.FULFILLED:
        return "ready"
    if order.state == Order.State.PAID:
        return "setting_up"
    if order.state == Order.State.REFUNDED:
        return "refunded"
    if order.state == Order.State.FAILED:
        return "not_charged"
    return payment_status.status(order.stripe_payment_status).view
