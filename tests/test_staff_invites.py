"""Joining the support team (issue 12, item 1): an invite from the console or create_support_login,
a one-time link to set a password, then the factor; and `reset_factors` for a lost phone."""

import html
import io
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import factors
from accounts.models import User
from outbox.models import OutboundEmail
from support.invites import invite_url, make_token
from tests.factories import UserFactory
from tests.fixtures.console import client_for, current_code, staff

pytestmark = pytest.mark.django_db

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def ana():
    """Support, may refund, may invite (accounts.add_user)."""
    return staff("ana@paidup.example", "Support", "Support: refunds", perms=("accounts.add_user",))


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.content.decode()))


def invite_path(email: str) -> str:
    body = OutboundEmail.objects.filter(to=email).latest("pk").body_text
    return re.search(r"https?://[^/\s]+(/admin/welcome/[^\s]+/)", body).group(1)


def choose(browser, path, password=PASSPHRASE):
    return browser.post(path, {"new_password1": password, "new_password2": password})


# --- the console's "Invite a support person" ------------------------------------------------


def test_a_support_person_invites_another_with_refunds(ana, django_capture_on_commit_callbacks):
    browser = client_for(ana)
    assert "Invite a support person" in text(browser.get(reverse("admin:index")))
    assert browser.get(reverse("admin:staff_invite_person")).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post(reverse("admin:staff_invite_person"), {"email": "Cai@PaidUp.example", "refunds": "on"})
    assert response.status_code == 302
    cai = User.objects.get(email="cai@paidup.example")
    assert cai.is_staff and not cai.has_usable_password()
    assert sorted(cai.groups.values_list("name", flat=True)) == ["Support", "Support: refunds"]
    email = OutboundEmail.objects.get(to="cai@paidup.example")
    assert "ana@paidup.example invited you" in email.body_text
    entry = LogEntry.objects.get(object_id=str(cai.pk))
    assert entry.user == ana and "Invited cai@paidup.example to support (with refunds)" in entry.change_message


def test_inviting_needs_the_permission(ana):
    plain = staff("val@paidup.example", "Support")
    browser = client_for(plain)
    assert browser.get(reverse("admin:staff_invite_person")).status_code == 403
    assert browser.post(reverse("admin:staff_invite_person"), {"email": "x@paidup.example"}).status_code == 403
    assert not User.objects.filter(email="x@paidup.example").exists()


def test_refunds_cannot_be_given_by_someone_who_cannot_refund():
    inviter = staff("val@paidup.example", "Support", perms=("accounts.add_user",))
    response = client_for(inviter).post(
        reverse("admin:staff_invite_person"), {"email": "x@paidup.example", "refunds": "on"}
    )
    assert response.status_code == 400 and "You may not refund money yourself" in text(response)
    assert not User.objects.filter(email="x@paidup.example").exists()


@pytest.mark.parametrize("typed", ["", "not-an-email", "a@", "<script>@x.example"])
def test_a_bad_address_is_refused_and_nothing_changes(ana, typed):
    response = client_for(ana).post(reverse("admin:staff_invite_person"), {"email": typed})
    assert response.status_code == 400
    assert "<script>@" not in response.content.decode()
    assert User.objects.count() == 1 and not OutboundEmail.objects.exists()


def test_inviting_a_customers_address_is_refused_and_nothing_changes(ana):
    from tests.factories import OrderFactory

    order = OrderFactory(email="dee@example.com", plan__name="Pro yearly")
    dee = UserFactory(email="dee@example.com")
    response = client_for(ana).post(reverse("admin:staff_invite_person"), {"email": " Dee@Example.com"})
    assert response.status_code == 400
    assert (
        f"That address belongs to a customer who bought Pro yearly (order {order.reference}). Staff need their "
        "own work address. Nothing was changed." in text(response)
    )
    dee.refresh_from_db()
    assert not dee.is_staff and not dee.groups.exists() and not OutboundEmail.objects.exists()
    assert not LogEntry.objects.exists()


def test_create_support_login_refuses_a_customer_with_a_subscription(db):
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import Subscription
    from tests.factories import OrderFactory

    eve = UserFactory(email="eve@example.com")  # her order was bought under her old address
    now = timezone.now()
    Subscription.objects.create(
        order=OrderFactory(email="eve.old@example.com"), user=eve, starts_at=now, ends_at=now + timedelta(days=1)
    )
    with pytest.raises(CommandError, match="customer who bought a subscription. Staff need their own work address"):
        call_command("create_support_login", "eve@example.com", stdout=io.StringIO())
    eve.refresh_from_db()
    assert not eve.is_staff and not eve.groups.exists() and not OutboundEmail.objects.exists()


def test_a_customer_account_without_purchases_or_already_staff_can_be_invited(ana):
    from tests.factories import OrderFactory

    UserFactory(email="fay@example.com")  # signed up, never bought
    OrderFactory(email="ana@paidup.example")  # staff who bought once stay staff (nothing to refuse)
    browser = client_for(ana)
    assert browser.post(reverse("admin:staff_invite_person"), {"email": "fay@example.com"}).status_code == 302
    assert User.objects.get(email="fay@example.com").is_staff
    assert browser.post(reverse("admin:staff_invite_person"), {"email": "ana@paidup.example"}).status_code == 302


# --- the invite link ---------------------------------------------------------------------


@pytest.fixture
def cai(ana, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        client_for(ana).post(reverse("admin:staff_invite_person"), {"email": "cai@paidup.example"})
    return User.objects.get(email="cai@paidup.example")


def test_the_invite_leads_to_a_password_then_the_factor_then_the_console(cai):
    path = invite_path(cai.email)
    browser = Client()
    page = browser.get(path)
    assert page.status_code == 200 and "Welcome to PaidUp support, cai@paidup.example" in text(page)
    weak = choose(browser, path, "password")
    assert weak.status_code == 400 and "too common" in text(weak)
    response = choose(browser, path)
    assert response.status_code == 302 and response.url == reverse("admin:staff_enrol")
    assert browser.get(reverse("admin:index")).status_code == 302  # no order before a factor
    browser.get(reverse("admin:staff_enrol"))
    device = TOTPDevice.objects.get(user=cai, confirmed=False)
    from django_otp.oath import totp

    code = f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"
    codes_page = browser.post(reverse("admin:staff_enrol"), {"code": code})
    assert len(re.findall(r"<code>[a-z2-9-]{14}</code>", codes_page.content.decode())) == 10
    assert browser.get(reverse("admin:index")).status_code == 200
    cai.refresh_from_db()
    assert cai.check_password(PASSPHRASE)


def test_the_staff_event_for_accepting_an_invite_never_stores_the_token(cai):
    from support.models import StaffEvent

    path = invite_path(cai.email)
    token = path.removeprefix("/admin/welcome/").strip("/")
    assert choose(Client(), path).status_code == 302
    event = StaffEvent.objects.get(kind=StaffEvent.Kind.LOGIN, user=cai)
    assert event.detail == "at /admin/welcome/…"
    assert not any(token in str(row) for row in StaffEvent.objects.values())


def test_the_invite_works_once(cai):
    path = invite_path(cai.email)
    choose(Client(), path)
    again = Client()
    assert again.get(path).status_code == 400
    response = choose(again, path, "another long passphrase")
    assert response.status_code == 400 and "This invite link no longer works" in text(response)
    cai.refresh_from_db()
    assert cai.check_password(PASSPHRASE)


def test_the_invite_expires(ana, time_machine, settings, django_capture_on_commit_callbacks):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        client_for(ana).post(reverse("admin:staff_invite_person"), {"email": "cai@paidup.example"})
    cai = User.objects.get(email="cai@paidup.example")
    path = invite_path(cai.email)
    time_machine.shift(settings.STAFF_INVITE_MAX_AGE + 60)
    response = choose(Client(), path)
    assert response.status_code == 400
    cai.refresh_from_db()
    assert not cai.has_usable_password()


def test_a_tampered_invite_is_refused(cai):
    token = make_token(cai)
    other = UserFactory(email="eve@example.com", is_staff=True)
    payload, stamp, signature = token.split(":")
    forged_signature = f"{payload}:{stamp}:{signature[:-3]}{'aaa' if not signature.endswith('aaa') else 'bbb'}"
    someone_else = f"{make_token(other).split(':')[0]}:{stamp}:{signature}"  # another person's id, this signature
    for bad in [forged_signature, someone_else, "x", token + "x"]:
        assert choose(Client(), reverse("admin:staff_invite", args=[bad])).status_code == 400


def test_an_invite_is_not_a_customer_sign_in_and_a_customer_link_is_not_an_invite(cai):
    from accounts.signin import make_token as customer_token

    assert Client().get(reverse("accounts:signin_link", args=[make_token(cai)])).status_code == 400
    assert Client().get(reverse("admin:staff_invite", args=[customer_token(cai)])).status_code == 400


def test_an_invite_for_an_account_no_longer_staff_is_refused(cai, settings):
    url = invite_url(cai)
    assert url.startswith(settings.SITE_URL + "/admin/welcome/")
    cai.is_staff = False
    cai.save()
    assert choose(Client(), url.removeprefix(settings.SITE_URL)).status_code == 400


# --- reset_factors -----------------------------------------------------------------------


@pytest.fixture
def dan():
    person = staff("dan@paidup.example", "Support")
    person.set_password(PASSPHRASE)
    person.save()
    TOTPDevice.objects.create(user=person, name="Authenticator app", confirmed=True)
    factors.new_backup_codes(person)
    return person


def test_reset_factors_deletes_the_devices_ends_the_sessions_and_is_logged(ana, dan):
    browser = Client()
    browser.post(reverse("admin:login"), {"username": dan.email, "password": PASSPHRASE})
    browser.post(reverse("admin:staff_verify"), {"code": current_code(dan)})
    assert browser.get(reverse("admin:index")).status_code == 200
    call_command("reset_factors", "DAN@paidup.example", "--by", ana.email)
    assert not TOTPDevice.objects.filter(user=dan).exists() and not StaticDevice.objects.filter(user=dan).exists()
    assert browser.get(reverse("admin:index")).status_code == 302  # the session is gone
    assert not any(s.get_decoded().get("_auth_user_id") == str(dan.pk) for s in Session.objects.all())
    entry = LogEntry.objects.get(object_id=str(dan.pk))
    assert entry.user == ana and "Reset second factors: 2 device(s) deleted, 1 session(s) ended" in entry.change_message
    again = Client()
    response = again.post(reverse("admin:login"), {"username": dan.email, "password": PASSPHRASE})
    assert response.url.startswith(reverse("admin:staff_enrol"))  # enrols again


@pytest.mark.parametrize(
    "email, by, words",
    [
        ("nobody@paidup.example", "ana@paidup.example", "There is no account for nobody@paidup.example"),
        ("cleo@example.com", "ana@paidup.example", "cleo@example.com is not an active support login"),
        ("not an email", "ana@paidup.example", "is not an email address"),
        ("dan@paidup.example", "nobody@paidup.example", "There is no account for nobody@paidup.example"),
        ("dan@paidup.example", "cleo@example.com", "is not an active support login"),
    ],
)
def test_reset_factors_refuses_bad_input_and_changes_nothing(ana, dan, email, by, words):
    UserFactory(email="cleo@example.com")
    with pytest.raises(CommandError, match=f"{re.escape(words)}.*Nothing was changed"):
        call_command("reset_factors", email, "--by", by)
    assert TOTPDevice.objects.filter(user=dan).exists() and factors.backup_codes_left(dan) == 10
    assert not LogEntry.objects.exists()


def test_the_user_admin_resets_factors_too_and_refuses_a_customer_in_the_selection(dan):
    boss = staff("boss@paidup.example", perms=("accounts.change_user", "accounts.view_user"))
    cleo = UserFactory(email="cleo@example.com")
    browser = client_for(boss)
    url = reverse("admin:accounts_user_changelist")
    action = {"action": "reset_second_factors"}
    refused = browser.post(url, {**action, "_selected_action": [dan.pk, cleo.pk]}, follow=True)
    assert "Not a support login: cleo@example.com. Nothing was changed." in text(refused)
    assert TOTPDevice.objects.filter(user=dan).exists() and not LogEntry.objects.exists()
    done = browser.post(url, {**action, "_selected_action": [dan.pk]}, follow=True)
    assert "For dan@paidup.example: Reset second factors: 2 device(s) deleted" in text(done)
    assert not TOTPDevice.objects.filter(user=dan).exists()
    assert LogEntry.objects.get(object_id=str(dan.pk)).user == boss
