from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from . import checkout, refcookie
from .failpoints import failpoint
from .forms import CheckoutForm
from .models import Order, Plan
from .models.orders import is_valid_reference, new_reference, normalize_reference


def home(request):
    return redirect("billing:checkout")


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _resumable(order: Order | None) -> bool:
    """An order the customer must see before being invited to pay again."""
    if order is None:
        return False
    if order.state == Order.State.PAID:
        return True
    # A bank check (3-D Secure) left unfinished can be finished from the checkout page: paying
    # again brings back the same check for the same PaymentIntent, never a second charge.
    unfinished = checkout.RETRYABLE | {"requires_action"}
    return order.state == Order.State.PENDING and order.stripe_payment_status not in unfinished


@require_http_methods(["GET", "POST"])
def checkout_view(request):
    reference = refcookie.read(request)
    if request.method == "POST":
        reference = reference or refcookie.read_signed(request.POST.get("checkout_ref", ""))
        return _checkout_post(request, reference)

    order = Order.objects.filter(reference=reference).first() if reference else None
    if order is not None and order.stripe_payment_status == "requires_action":
        # The bank check may have been finished since, and the money taken, before the
        # webhook or the order page told us: ask Stripe before saying "not charged".
        order = checkout.sync_with_stripe(order, min_interval=0)
    if _resumable(order):
        return redirect(reverse("billing:order", args=[order.reference]) + "?resumed=1")
    if order is not None and order.state != Order.State.PENDING:
        reference = None  # that checkout is over; this is a new one
    reference = reference or new_reference()
    initial = {"email": order.email} if order is not None and order.state == Order.State.PENDING else {}
    notice = ""
    if order is not None and order.stripe_payment_status == "requires_action":
        notice = (
            "Your bank's security check for this order was not finished, and you have not been charged. "
            "Enter your card and press Pay: your bank will ask again, and you will be charged only once."
        )
    return _render_checkout(request, reference, CheckoutForm(initial=initial), notice=notice)


def _render_checkout(
    request, reference: str, form: CheckoutForm, *, status: int = 200, message: str = "", notice: str = ""
):
    plan = Plan.objects.filter(active=True).order_by("id").first()
    response = render(
        request,
        "billing/checkout.html",
        {
            "form": form,
            "plan": plan,
            "reference": reference,
            "signed_reference": refcookie.sign(reference),
            "message": message,
            "notice": notice,
            "stripe_js_url": settings.STRIPE_JS_URL,
            "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
            "card_mode": "token" if settings.STRIPE_API_BASE else "payment_method",
        },
        status=status,
    )
    refcookie.store(response, reference)
    return response


def _checkout_post(request, reference: str | None):
    form = CheckoutForm(request.POST)
    if reference is None:
        # No cookie and no valid page field: the page is stale. Nothing was charged.
        message = "This checkout page has expired. Please enter your details again. You have not been charged."
        return _checkout_error(request, new_reference(), form, message, status=400)
    if not form.is_valid():
        message = " ".join(e for errors in form.errors.values() for e in errors)
        return _checkout_error(request, reference, form, message, status=400)

    existing = Order.objects.filter(reference=reference).first()
    if existing is not None and existing.state != Order.State.PENDING:
        return _go_to_order(request, existing)
    order = checkout.open_order(reference, form.cleaned_data["email"], form.cleaned_data["plan"])
    outcome = checkout.pay(
        order, form.cleaned_data["payment_method"], email=form.cleaned_data["email"], plan=form.cleaned_data["plan"]
    )
    failpoint("before_response")
    if outcome.kind == "declined":
        message = f"{outcome.message} You have not been charged. You can try another card."
        return _checkout_error(request, reference, form, message, status=402)
    if outcome.kind == "action":
        order_url = reverse("billing:order", args=[order.reference])
        if _wants_json(request):
            return JsonResponse(
                {"requires_action": True, "client_secret": outcome.client_secret, "redirect": order_url}
            )
        return redirect(order_url)
    return _go_to_order(request, outcome.order)


def _go_to_order(request, order: Order):
    url = reverse("billing:order", args=[order.reference])
    if _wants_json(request):
        return JsonResponse({"redirect": url})
    return redirect(url)


def _checkout_error(request, reference: str, form: CheckoutForm, message: str, *, status: int):
    if _wants_json(request):
        response = JsonResponse({"error": message}, status=status)
        refcookie.store(response, reference)
        return response
    return _render_checkout(request, reference, form, status=status, message=message)


def order_status(request, reference: str):
    reference = normalize_reference(reference)
    if not is_valid_reference(reference):
        raise Http404("No such order")
    order = Order.objects.select_related("plan").filter(reference=reference).first()
    if order is None:
        raise Http404("No such order")
    order = checkout.sync_with_stripe(order)
    if _wants_json(request):
        return JsonResponse(
            {"reference": order.reference, "state": order.state, "fulfilled": order.state == Order.State.FULFILLED}
        )
    return render(
        request,
        "billing/order.html",
        {"order": order, "view": order_view_state(order), "resumed": "resumed" in request.GET},
    )


def order_view_state(order: Order) -> str:
    """Which of the page's stories to tell."""
    if order.state == Order.State.FULFILLED:
        return "ready"
    if order.state == Order.State.PAID:
        return "setting_up"
    if order.state == Order.State.REFUNDED:
        return "refunded"
    if order.state == Order.State.FAILED:
        return "not_charged"
    if order.stripe_payment_status in ("declined", "requires_payment_method"):
        return "declined"
    if order.stripe_payment_status == "requires_action":
        return "needs_authentication"
    return "confirming"
