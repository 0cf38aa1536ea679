"""Support logins: a staff account in the Support groups, joining by a one-time invite link.

`manage.py create_support_login` calls `grant_support_access()`; tests call it directly. The
groups ("Support", and "Support: refunds" for money going back) are created by the migration
support/0003_support_groups with least privilege. No password is ever chosen, printed or
logged here: the person gets a single-use invite link by email (support/invites.py) to choose
a password and enrol a second factor, or sets a password through an interactive prompt (the
command's --set-password). Staff never sign in by a customer's sign-in link.
"""

from dataclasses import dataclass, field

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from accounts.addresses import normalize_email
from accounts.models import User

from .invites import send_invite

SUPPORT_GROUP = "Support"
REFUNDS_GROUP = "Support: refunds"


class StaffError(ValueError):
    """Input the operator must fix; the message says what. Nothing was changed."""


@dataclass
class StaffChange:
    user: User
    created: bool
    changes: list[str] = field(default_factory=list)
    link_sent: bool = False

    def describe(self) -> str:
        """What was done, for the operator's terminal: created/updated/kept and the changes, the
        groups and superuser flag, and whether an invite link is on its way. One query (groups)."""
        what = "Created" if self.created else ("Updated" if self.changes else "Kept")
        lines = [f"{what} support login {self.user.email}" + (f": {', '.join(self.changes)}." if self.changes else ".")]
        groups = ", ".join(sorted(self.user.groups.values_list("name", flat=True))) or "none"
        lines.append(f"Groups: {groups}. Superuser: {'yes' if self.user.is_superuser else 'no'}.")
        if self.link_sent:
            lines.append(
                f"A single-use invite link is on its way to {self.user.email} (sent by the q cluster): it sets "
                "a password and a second factor. Later sign-ins: /admin/ (password, then the code)."
            )
        return "\n".join(lines)


def clean_email(value: str) -> str:
    """The login as stored (trimmed, lowercased, like accounts.UserManager). Raises StaffError
    when it is not an email address (Django's validate_email)."""
    email = (value or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError as error:
        raise StaffError(f"{value!r} is not an email address.") from error
    return email


def _refuse_a_customer(user: User) -> None:
    """StaffError when `user` is a customer (not staff, with an order or a subscription): making
    her staff would turn her sign-in links off and her account into a console login."""
    from billing.models import Order

    if user.is_staff:
        return
    order = Order.objects.filter(email=normalize_email(user.email)).select_related("plan").order_by("-created_at")
    latest = order.first()
    if latest is None and not user.subscriptions.exists():
        return
    bought = f"{latest.plan.name} (order {latest.reference})" if latest else "a subscription"
    raise StaffError(f"That address belongs to a customer who bought {bought}. Staff need their own work address.")


@transaction.atomic
def grant_support_access(
    email: str, *, refunds: bool = False, superuser: bool = False, send_link: bool = True, invited_by: str = ""
) -> StaffChange:
    """Make `email` a staff login in the Support group (and "Support: refunds" with `refunds`,
    superuser with `superuser`); create the user, without a usable password, if needed.

    Idempotent: running it again changes nothing already true, never removes a group and never
    touches a password. With `send_link`, an invite email is queued (sent after commit by the q
    cluster; `invited_by` names who asked, default "The PaidUp operator"). Raises StaffError on
    a malformed email, an inactive account, a customer's account (not staff, with an order or a
    subscription: staff need their own work address), or missing groups (migrations not run);
    nothing is changed then.
    """
    email = clean_email(email)
    wanted = [SUPPORT_GROUP] + ([REFUNDS_GROUP] if refunds else [])
    groups = list(Group.objects.filter(name__in=wanted))
    if len(groups) != len(wanted):
        raise StaffError("The Support groups do not exist yet: run `manage.py migrate` first.")
    user = User.objects.select_for_update().filter(email__iexact=email).first()
    created = user is None
    if created:
        user = User.objects.create_user(email)  # no password: unusable until one is set on purpose
    elif not user.is_active:
        raise StaffError(f"{email} is a deactivated account; reactivate it in the admin first if you mean it.")
    else:
        _refuse_a_customer(user)
    change = StaffChange(user, created)
    if not user.is_staff:
        user.is_staff = True
        change.changes.append("staff access")
    if superuser and not user.is_superuser:
        user.is_superuser = True
        change.changes.append("superuser")
    user.save()
    have = set(user.groups.values_list("name", flat=True))
    for group in groups:
        if group.name not in have:
            user.groups.add(group)
            change.changes.append(f"joined {group.name!r}")
    if send_link:
        send_invite(user, invited_by or "The PaidUp operator")
        change.link_sent = True
    return change


def staff_person(email: str, *, what: str) -> User:
    """The active staff account for `email`. Raises StaffError (saying `what` needs it) for a
    malformed email, no such account, or an account that is not active staff."""
    email = clean_email(email)
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        raise StaffError(f"There is no account for {email}.")
    if not user.is_staff or not user.is_active:
        raise StaffError(f"{email} is not an active support login; {what} is for support logins only.")
    return user


@transaction.atomic
def reset_factors(email: str, *, by: str) -> str:
    """Delete the second factors of the staff person `email` (they enrol again at their next
    password sign-in), end all their sessions, and write an admin LogEntry naming `by` (a staff
    email: who did it). Returns a sentence saying what was done. Raises StaffError, with nothing
    changed, for a malformed or unknown email, a non-staff or inactive account, or an unknown `by`.
    """
    from accounts.factors import reset_and_log

    actor = staff_person(by, what="--by")
    person = staff_person(email, what="resetting factors")
    return f"{person.email}: {reset_and_log(person, actor)} Logged as done by {actor.email}."
