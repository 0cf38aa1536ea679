"""The console's "Invite a support person" page: a support person with `accounts.add_user`
invites another (staff, the Support group, and "Support: refunds" only if the inviter may refund),
by the one-time invite email of support/invites.py. The admin log names who invited whom."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from .staff import StaffError, grant_support_access

PERMISSION = "accounts.add_user"


class InviteForm(forms.Form):
    email = forms.CharField(label="Their work email", max_length=254)
    refunds = forms.BooleanField(label="They may refund money", required=False, help_text='Joins "Support: refunds".')


def invite_person(request):
    """GET the form; POST invites (nothing changes on an error, which the page names). Raises
    PermissionDenied without accounts.add_user."""
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    form = InviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        refunds = form.cleaned_data["refunds"]
        if refunds and not request.user.has_perm("billing.refund_order"):
            form.add_error("refunds", "You may not refund money yourself, so you cannot give it to someone else.")
        else:
            try:
                change = grant_support_access(
                    form.cleaned_data["email"], refunds=refunds, invited_by=request.user.email
                )
            except StaffError as error:
                form.add_error("email", f"{error} Nothing was changed.")
            else:
                LogEntry.objects.log_actions(
                    user_id=request.user.pk,
                    queryset=[change.user],
                    action_flag=ADDITION,
                    change_message=f"Invited {change.user.email} to support" + (" (with refunds)." if refunds else "."),
                    single_object=True,
                )
                messages.success(request, f"An invite is on its way to {change.user.email}; the link works once.")
                return HttpResponseRedirect(reverse("admin:index"))
    context = {**admin.site.each_context(request), "title": "Invite a support person", "form": form}
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "admin/staff/invite_person.html", context, status=status)
