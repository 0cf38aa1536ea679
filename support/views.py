from django.conf import settings
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from . import selfservice
from .forms import ChargedForm


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])  # HEAD: uptime monitors, `curl -sI`
def charged(request):
    """The "charged but no access?" page. A valid request gets the same answer whatever we
    find: the work happens in a task, and its outcome goes to the email address."""
    form = ChargedForm(request.POST) if request.method == "POST" else ChargedForm()
    context = {"form": form, "reply_hours": settings.SUPPORT_REPLY_HOURS}
    if request.method != "POST" or not form.is_valid():
        return render(request, "support/charged.html", context, status=200 if request.method != "POST" else 400)
    data = form.cleaned_data
    context["email"] = data["email"]
    limit = selfservice.limit_reached(selfservice.client_address(request), data["email"])
    if limit:
        context["limit"] = limit  # "address": say so, and nothing about the email
        return render(request, "support/charged_limited.html", context, status=429)
    typed = request.POST.get("email", "").strip()  # for Stripe's case-sensitive customer search
    selfservice.submit(data["email"], data["card_last4"], data["paid_on"], typed=typed)
    return render(request, "support/charged_received.html", context)
