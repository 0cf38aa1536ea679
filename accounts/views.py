from django import forms
from django.conf import settings
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from .addresses import NormalizedEmailFormField
from .models import User
from .signin import send_signin_link, user_for_token


class SignInForm(forms.Form):
    email = NormalizedEmailFormField(
        error_messages={
            "required": "Please enter the email address you paid with.",
            "invalid": "That doesn't look like an email address. Please check it.",
        }
    )


@login_required
def account(request):
    subscriptions = request.user.subscriptions.select_related("order__plan").order_by("-ends_at")
    return render(
        request,
        "accounts/account.html",
        {
            "subscriptions": subscriptions,
            "active": request.user.active_subscription,
            "access_ends_at": request.user.access_ends_at,  # a year bought on top counts
        },
    )


def signin(request):
    """Ask for a sign-in link. Says the same thing whether the email is known, unknown, a staff
    address (which gets no link: accounts/signin.py) or over its limit: links per email and per
    client address are limited (settings.SIGNIN_LINK_LIMITER, the core's rate limit wired in by
    config), and a request over a limit sends nothing."""
    form = SignInForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        allowed = import_string(settings.SIGNIN_LINK_LIMITER)(request, email)
        user = User.objects.filter(email=email, is_active=True).first()
        if user is not None and allowed:
            send_signin_link(user)
        return render(request, "accounts/signin_sent.html", {"email": form.cleaned_data["email"]})
    return render(request, "accounts/signin.html", {"form": form})


def signin_link(request, token: str):
    """GET shows a button; POST signs in. Mail scanners that prefetch links use GET, so a
    prefetch cannot use up the single-use link."""
    user = user_for_token(token)
    if user is None:
        return render(request, "accounts/signin_invalid.html", status=400)
    if request.method == "POST":
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("accounts:account")
    return render(request, "accounts/signin_confirm.html", {"email": user.email})


@require_POST
def signout(request):
    logout(request)
    return redirect("accounts:signin")
