from django.conf import settings
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from . import selfservice
from .forms import ChargedForm


@never_cache
@require_http_methods(["GET", "POST"])
def charged(request):
    """The "charged but no access?" page. A valid request gets the same answer whatever we
    find: the work happens in a task, and its outcome goes to the email address."""
    form = ChargedForm(request.POST) if request.method == "POST" else ChargedForm()
    context = {"form": form, "reply_hours": settings.SUPPORT_REPLY_HOURS}
    if request.method == "GET" or not form.is_valid():
        return render(request, "support/charged.html", context, status=200 if request.method == "GET" else 400)
    data = form.cleaned_data
    context["email"] = data["email"]
    if not selfservice.within_limits(selfservice.client_address(request), data["email"]):
        return render(request, "support/charged_limited.html", context, status=429)
    selfservice.submit(data["email"], data["card_last4"], data["paid_on"])
    return render(request, "support/charged_received.html", context)
