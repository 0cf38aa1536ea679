from django import forms
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from billing import emails

from .models import User
from .signin import user_for_token


class SignInForm(forms.Form):
    email = forms.EmailField(
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
        {"subscriptions": subscriptions, "active": request.user.active_subscription},
    )


def signin(request):
    """Ask for a sign-in link. Says the same thing whether or not the email is known."""
    form = SignInForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = User.objects.filter(email__iexact=form.cleaned_data["email"], is_active=True).first()
        if user is not None:
            emails.send_signin_link(user)
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
