from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import formats, timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from config.failpoints import failpoint

from . import access, checkout, client, email_typos, order_links, payment_status, ratelimit, refcookie
from .forms import CheckoutForm
from .models import Order, Plan
from .models.orders import new_reference


def home(request):
    return redirect("billing:checkout")


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _resumable(order: Order | None) -> bool:
    """An order the customer must see before being invited to pay again: paid or fulfilled, or
    a payment that is moving or may have moved (`billing.payment_status`)."""
    if order is None:
        return False
    if order.state in (Order.State.PAID, Order.State.FULFILLED):
        return True  # already paid: the order first, and "Buy another year" there (never by accident)
    # Nothing charged (pay again, confirm again) or a bank check left unfinished (paying again
    # brings back the same check for the same PaymentIntent): the checkout page is the place.
    step = payment_status.status(order.stripe_payment_status).next_step
    staying = {payment_status.PAY, payment_status.CONFIRM, payment_status.AUTHENTICATE}
    return order.state == Order.State.PENDING and step not in staying


# Access notices ("You already have access until …") one client address may be shown per 10 minutes.
ACCESS_NOTICES = 10

NOTICES = {
    "requires_action": (
        "Your bank's security check for this order was not finished, and you have not been charged. "
        "Enter your card and press Pay: your bank will ask again, and you will be charged only once."
    ),
    "requires_confirmation": (
        "Your last payment attempt didn't go through because of a problem on the payment side, and "
        "you have not been charged. Enter your card and press Pay to try again."
    ),
}


@require_http_methods(["GET", "HEAD", "POST"])  # HEAD: uptime monitors, `curl -sI`
def checkout_view(request):
    reference = refcookie.read(request)
    if request.method == "POST":
        reference = reference or refcookie.read_signed(request.POST.get("checkout_ref", ""))
        return _checkout_post(request, reference)

    order = Order.objects.filter(reference=reference).first() if reference else None
    if order is not None and payment_status.status(order.stripe_payment_status).next_step in (
        payment_status.AUTHENTICATE,
        payment_status.ASK,
    ):
        # The bank check may have been finished since, or a confirm that got no answer may
        # have charged: ask Stripe before saying "not charged".
        order = checkout.sync_with_stripe(order, min_interval=0)
    if _resumable(order):
        return redirect(reverse("billing:order", args=[order.reference]) + "?resumed=1")
    if order is not None and order.state != Order.State.PENDING:
        reference = None  # that checkout is over; this is a new one
    reference = reference or new_reference()
    initial = {"email": order.email} if order is not None and order.state == Order.State.PENDING else {}
    notice = NOTICES.get(order.stripe_payment_status, "") if order is not None else ""
    return _render_checkout(request, reference, CheckoutForm(initial=initial), notice=notice)


def _render_checkout(
    request,
    reference: str,
    form: CheckoutForm,
    *,
    status: int = 200,
    message: str = "",
    notice: str = "",
    extra: dict | None = None,
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
            **(extra or {}),
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
    if request.POST.get("email_choice") in ("suggested", "typed"):
        return _choose_email(request, reference, form)
    if not form.is_valid():
        # An email error is shown next to the email field (the page links to it); the rest
        # (card, plan) have no field of ours to sit by and go in the box above the form.
        message = " ".join(e for name, errors in form.errors.items() if name != "email" for e in errors)
        return _checkout_error(request, reference, form, message, status=400)

    existing = Order.objects.filter(reference=reference).first()
    if existing is not None and existing.state != Order.State.PENDING:
        return _go_to_order(request, existing)
    email = form.cleaned_data["email"]
    # Before the order and before Stripe: a likely typo, or access that already runs, is asked
    # about first; only the answer for this very address lets the payment go on.
    suggestion = email_typos.suggest(email)
    if suggestion and not form.confirms("email_checked"):
        return _ask_before_charge(request, reference, form, suggestion=suggestion)
    until = access.access_until(email)
    if until and not form.confirms("extend_access"):
        # The notice tells when an email's access ends: counted per client address, so the
        # checkout cannot be used to look up many people's emails.
        if not ratelimit.allow("access-notice", client.client_address(request), limit=ACCESS_NOTICES, window=600):
            message = (
                "Too many checkouts from here just now. Please try again in ten minutes. You have not been charged."
            )
            return _checkout_error(request, reference, form, message, status=429)
        return _ask_before_charge(request, reference, form, until=until)
    order = checkout.open_order(
        reference,
        email,
        form.cleaned_data["plan"],
        client_ip=client.client_address(request),
        user_agent=client.user_agent(request),
    )
    if until:
        access.confirmed_extension(order, until)
    outcome = checkout.pay(
        order, form.cleaned_data["payment_method"], email=form.cleaned_data["email"], plan=form.cleaned_data["plan"]
    )
    failpoint("before_response")
    if outcome.kind == "declined":
        message = f"{outcome.message} You have not been charged. You can try another card."
        return _checkout_error(request, reference, form, message, status=402)
    if outcome.kind == "retry":
        return _checkout_error(request, reference, form, outcome.message, status=503)
    if outcome.kind == "action":
        order_url = _order_url(request, order)
        if wants_json(request):
            return JsonResponse(
                {"requires_action": True, "client_secret": outcome.client_secret, "redirect": order_url}
            )
        return redirect(order_url)
    return _go_to_order(request, outcome.order)


def _order_url(request, order: Order) -> str:
    """Where the checkout sends the customer: the order page, with a signed link when this
    browser holds no cookie for the order (it refuses cookies), so it still sees its details."""
    if refcookie.read(request) == order.reference:
        return reverse("billing:order", args=[order.reference])
    return order_links.order_path(order.reference)


def access_notice(until) -> str:
    """What the checkout says to an email whose access runs until `until` (a datetime)."""
    return (
        f"You already have access until {formats.date_format(timezone.localtime(until), 'j M Y')} with this email. "
        "You don't need to pay again: sign in to use it. If you want another year on top, tick the box below "
        "and press Pay: it starts when your current access ends."
    )


def suggestion_notice(typed: str, suggestion: str) -> str:
    return f"Did you mean {suggestion}? You typed {typed}. Nothing has been charged."


def _ask_before_charge(request, reference: str, form: CheckoutForm, *, suggestion: str = "", until=None):
    """Nothing charged, nothing stored: ask about a likely typo (`suggestion`, the corrected
    address) or about access that already runs (`until`), in HTML or in the page script's JSON."""
    email = form.cleaned_data["email"]
    message = suggestion_notice(email, suggestion) if suggestion else access_notice(until)
    if wants_json(request):
        answer = {"error": message}
        if suggestion:
            answer["email_suggestion"] = {"typed": email, "suggested": suggestion}
        else:
            until_text = formats.date_format(timezone.localtime(until), "j M Y")
            answer["access"] = {"email": email, "until": until_text, "signin_url": reverse("accounts:signin")}
        response = JsonResponse(answer, status=409)
        refcookie.store(response, reference)
        return response
    context = {
        "suggestion": suggestion,
        "typed_email": email,
        "access_until": until,
        "email_checked": email if form.confirms("email_checked") else "",
    }
    return _render_checkout(request, reference, form, status=409, extra=context)


def _choose_email(request, reference: str, form: CheckoutForm):
    """Without the page script, the typo question's two buttons post the form: "Use" puts the
    suggested address in the field, "Keep" keeps the typed one; either way the page comes back
    with that address marked as checked, and nothing is charged or stored."""
    form.is_valid()
    email = form.cleaned_data.get("email")
    if not email:
        return _checkout_error(request, reference, form, " ".join(form.errors.get("email", [])), status=400)
    if request.POST["email_choice"] == "suggested":
        email = email_typos.suggest(email) or email
    return _render_checkout(request, reference, CheckoutForm(initial={"email": email}), extra={"email_checked": email})


@require_safe
def email_suggestion(request):
    """GET ?domain=gmial.com → {"suggestion": "gmail.com"} or {"suggestion": null}: the page
    script's as-you-type check, from the same function the checkout POST uses. Only the domain
    is sent, so no address lands in access logs; anything that is not a domain gets null."""
    domain = request.GET.get("domain", "")
    suggestion = email_typos.suggest_domain(domain) if len(domain) <= email_typos.MAX_LENGTH else None
    response = JsonResponse({"suggestion": suggestion})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def checkout_another(request):
    """ "Buy another year" on a paid order's page: a new checkout with a new reference. The paid
    order stays as it is; nothing is charged here (the new checkout asks again before paying)."""
    response = redirect("billing:checkout")
    refcookie.store(response, new_reference())
    return response


def _go_to_order(request, order: Order):
    url = _order_url(request, order)
    if wants_json(request):
        return JsonResponse({"redirect": url})
    return redirect(url)


def _checkout_error(request, reference: str, form: CheckoutForm, message: str, *, status: int):
    """The checkout again with what went wrong. JSON for the page's script: `error` is every
    sentence, `field_errors` the ones that belong next to a field (`{"email": "…"}`), and
    `form_error` the rest, so that the script can mark the field and move focus to it."""
    if wants_json(request):
        field_errors = {"email": " ".join(form.errors["email"])} if "email" in form.errors else {}
        everything = " ".join(part for part in (field_errors.get("email", ""), message) if part)
        response = JsonResponse(
            {"error": everything, "field_errors": field_errors, "form_error": message}, status=status
        )
        refcookie.store(response, reference)
        return response
    return _render_checkout(request, reference, form, status=status, message=message)


# Order lookups per client address without the order's cookie or link: a customer who lost the
# cookie types a reference a few times; 30 in 10 minutes is far too few to find one of the 30^6.
