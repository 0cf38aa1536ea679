"""The fields and the two steps of the console's "Change email" form (support/admin_views.py
builds the form from this and its ActionForm)."""

from django import forms

from billing import email_change


class ChangeEmailFields(forms.Form):
    """Two steps: the new address, then (the same form again, `confirmed_email` filled in) a
    look at what the change does, old and new side by side, before anything changes. After
    `is_valid()`, `confirmation` holds the email_change.Preview to show when the change still
    needs its confirmation (None: confirmed, or refused). Needs `self.order` (ActionForm's)."""

    new_email = forms.CharField(label="Correct email", max_length=254, help_text="The address the customer reads.")
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional: how you know. Goes to the timeline.",
    )
    confirmed_email = forms.CharField(required=False, widget=forms.HiddenInput)

    confirmation: email_change.Preview | None = None

    def clean(self):
        data = super().clean()
        if "new_email" not in data or getattr(self, "order", None) is None:
            return data
        preview = email_change.preview(self.order, data["new_email"])
        if preview.problem:
            self.add_error("new_email", preview.problem)
            return data
        data["new_email"] = preview.new
        if data.get("confirmed_email") != preview.new:  # first step, or the address was edited
            self.confirmation = preview
            self.data = self.data.copy()
            self.data["confirmed_email"] = preview.new
        return data
