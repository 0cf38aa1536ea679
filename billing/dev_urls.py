"""Dev only (SHOW_DEV_EMAILS): read the outbox as rendered, without an email provider."""

from django.shortcuts import get_object_or_404, render
from django.urls import path

from .models import OutboundEmail


def email_list(request):
    return render(request, "billing/dev_emails.html", {"emails": OutboundEmail.objects.all()[:100]})


def email_detail(request, pk: int):
    email = get_object_or_404(OutboundEmail, pk=pk)
    return render(request, "billing/dev_email.html", {"email": email})


app_name = "dev"
urlpatterns = [
    path("", email_list, name="emails"),
    path("<int:pk>/", email_detail, name="email"),
]
