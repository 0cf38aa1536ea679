"""Who did what (issue 12 item 6): staff sign-ins and sign-outs, failed sign-ins, lock-outs, and
second factors added and removed are StaffEvent rows, readable by the other support person in
"Staff sign-ins and security" next to everyone's console actions."""

import pytest
from django.test import Client
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from support.models import StaffEvent
from tests.factories import UserFactory
from tests.fixtures.console import PASSWORD, client_for, current_code, staff, staff_with_password
from tests.test_login_throttle import guess, sign_in

pytestmark = pytest.mark.django_db
K = StaffEvent.Kind


@pytest.fixture
def ann(db):
    return staff_with_password("ann@paidup.example", "Support")


def kinds() -> list[str]:
    return list(StaffEvent.objects.order_by("pk").values_list("kind", flat=True))


def test_a_staff_sign_in_and_sign_out_are_recorded_with_address_and_browser(ann):
    response, client = sign_in("ann@paidup.example", PASSWORD, "203.0.113.5", HTTP_USER_AGENT="Firefox/140")
    assert response.status_code == 302
    client.post("/admin/sign-out/")  # the sign-out that works before a factor is verified too
    login, logout = StaffEvent.objects.order_by("pk")
    assert (login.kind, login.user, login.email, login.actor) == (K.LOGIN, ann, ann.email, ann.email)
    assert (login.client_address, login.user_agent) == ("203.0.113.5", "Firefox/140")
    assert (logout.kind, logout.user, logout.client_address) == (K.LOGOUT, ann, "203.0.113.5")


def test_the_password_step_is_not_a_sign_in_until_a_factor_is_verified(ann):
    """A password-only session never reached the console: it is "Password accepted", and only the
    code (staff_session.verified, the one door for app, backup code and passkey) is "Second factor verified"."""
    device = TOTPDevice.objects.create(user=ann, name="Ann's phone", confirmed=True)
    StaffEvent.objects.all().delete()
    _, client = sign_in("ann@paidup.example", PASSWORD, "203.0.113.5")
    assert kinds() == [K.LOGIN] and K.LOGIN.label == "Password accepted"
    assert client.post("/admin/confirm/", {"code": current_code(ann)}).status_code == 302
    verified = StaffEvent.objects.get(kind=K.FACTOR_VERIFIED)
    assert (verified.user, verified.actor, verified.client_address) == (ann, ann.email, "203.0.113.5")
    assert "Ann's phone" in verified.detail and device.pk


def test_any_factor_verified_is_recorded_by_staff_session_verified(ann, rf):
    from django.contrib.sessions.backends.db import SessionStore

    from support import staff_session

    device = StaticDevice.objects.create(user=ann, name="backup codes", confirmed=True)
    request = rf.post("/admin/confirm/", REMOTE_ADDR="203.0.113.8")
    request.user, request.session = ann, SessionStore()
    staff_session.verified(request, device)
    event = StaffEvent.objects.get(kind=K.FACTOR_VERIFIED)
    assert (event.user, event.client_address, event.detail) == (ann, "203.0.113.8", "static device “backup codes”")


@pytest.mark.parametrize("code", ["000000", "abcd-efgh-jkmn"])
def test_a_code_refused_is_recorded_without_the_code(ann, code):
    TOTPDevice.objects.create(user=ann, name="Ann's phone", confirmed=True)
    StaticDevice.objects.create(user=ann, name="backup codes", confirmed=True)
    _, client = sign_in("ann@paidup.example", PASSWORD, "203.0.113.5")
    assert client.post("/admin/confirm/", {"code": code}).status_code == 400
    refused = StaffEvent.objects.get(kind=K.CODE_REFUSED)
    assert (refused.user, refused.actor, refused.client_address) == (ann, ann.email, "203.0.113.5")
    assert "didn't work" in refused.detail
    assert not any(code in str(row) or code.replace("-", "") in str(row) for row in StaffEvent.objects.values())
    assert not StaffEvent.objects.filter(kind=K.FACTOR_VERIFIED).exists()


def test_a_replayed_code_is_refused_and_recorded(ann):
    TOTPDevice.objects.create(user=ann, name="Ann's phone", confirmed=True)
    code = current_code(ann)
    _, first = sign_in("ann@paidup.example", PASSWORD, "203.0.113.5")
    assert first.post("/admin/confirm/", {"code": code}).status_code == 302
    _, second = sign_in("ann@paidup.example", PASSWORD, "203.0.113.6")
    assert second.post("/admin/confirm/", {"code": code}).status_code == 400
    assert kinds().count(K.FACTOR_VERIFIED) == 1 and kinds().count(K.CODE_REFUSED) == 1


def test_a_customer_signing_in_is_not_a_staff_event(db):
    customer = UserFactory(email="cus@example.com")
    client_for(customer).post("/account/sign-out/")
    assert kinds() == []


def test_a_failed_sign_in_records_the_email_as_typed_and_the_address_never_the_password(ann):
    sign_in(" ANN@paidup.example", "hunter2-guess", "203.0.113.7")
    sign_in("an@paidup.example", "hunter2-guess", "203.0.113.7")  # a typo of a real staff address
    real, typo = StaffEvent.objects.order_by("pk")
    assert (real.kind, real.user, real.email, real.client_address) == (K.LOGIN_FAILED, ann, ann.email, "203.0.113.7")
    assert (typo.kind, typo.user, typo.email) == (K.LOGIN_FAILED, None, "an@paidup.example")
    assert not any("hunter2" in str(row) for row in StaffEvent.objects.values())


def test_a_lock_out_is_one_event_however_many_tries_follow(ann):
    guess("ann@paidup.example", 8)
    assert kinds().count(K.LOCKED_OUT) == 1
    assert kinds().count(K.LOGIN_FAILED) == 8
    event = StaffEvent.objects.get(kind=K.LOCKED_OUT)
    assert (event.user, event.client_address) == (ann, "198.51.100.1")
    assert "30 minutes" in event.detail
    refused = StaffEvent.objects.filter(kind=K.LOGIN_FAILED).order_by("pk").last()
    assert "locked out" in refused.detail


def test_a_factor_confirmed_is_one_event_and_its_later_saves_are_not(ann):
    device = TOTPDevice.objects.create(user=ann, name="Ann's phone", confirmed=False)
    assert kinds() == []  # an enrolment started, not finished
    device.confirmed = True
    device.save()
    device.refresh_from_db()
    device.last_t = 12345  # what a code check saves
    device.save()
    StaticDevice.objects.create(user=ann, name="backup codes", confirmed=True)
    events = StaffEvent.objects.order_by("pk")
    assert [(e.kind, e.user, e.actor) for e in events] == [(K.FACTOR_ADDED, ann, "manage.py")] * 2
    assert "Ann's phone" in events[0].detail


def test_a_factor_removed_through_the_admin_names_who_removed_it(ann):
    device = TOTPDevice.objects.create(user=ann, name="Ann's phone", confirmed=True)
    boss = UserFactory(email="boss@paidup.example", is_staff=True, is_superuser=True)
    response = client_for(boss).post(f"/admin/otp_totp/totpdevice/{device.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not TOTPDevice.objects.filter(user=ann).exists()
    removed = StaffEvent.objects.get(kind=K.FACTOR_REMOVED)
    assert (removed.user, removed.actor, removed.client_address) == (ann, "boss@paidup.example", "127.0.0.1")


def test_a_factor_in_the_admin_shows_no_secret_and_cannot_be_added_or_edited(ann):
    from django_otp.plugins.otp_static.models import StaticToken

    device = TOTPDevice.objects.create(user=ann, name="Ann's phone", confirmed=True)
    backup = StaticDevice.objects.create(user=ann, name="backup codes", confirmed=True)
    StaticToken.objects.create(device=backup, token="secrettoken1234")
    boss = client_for(UserFactory(email="boss@paidup.example", is_staff=True, is_superuser=True))
    page = boss.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/")
    assert page.status_code == 200 and "Ann&#x27;s phone" in page.content.decode()
    secrets = (device.key, device.key.upper(), device.config_url.split("secret=")[1].split("&")[0])
    assert not any(secret in page.content.decode() for secret in secrets)
    for extra in ("config/", "qrcode/"):  # django-otp's own admin served the key as a QR code here
        response = boss.get(f"/admin/otp_totp/totpdevice/{device.pk}/{extra}", follow=True)
        assert not any(secret in response.content.decode() for secret in secrets)
    static = boss.get(f"/admin/otp_static/staticdevice/{backup.pk}/change/")
    assert static.status_code == 200 and "secrettoken1234" not in static.content.decode()
    edit = {"user": ann.pk, "name": "mine now", "confirmed": "on", "key": "00" * 20, "step": 30, "t0": 0}
    assert boss.post(f"/admin/otp_totp/totpdevice/{device.pk}/change/", edit).status_code == 403
    assert boss.get("/admin/otp_totp/totpdevice/add/").status_code == 403
    assert boss.post("/admin/otp_totp/totpdevice/add/", edit).status_code == 403
    assert boss.get("/admin/otp_static/staticdevice/add/").status_code == 403
    device.refresh_from_db()
    assert (device.name, TOTPDevice.objects.count()) == ("Ann's phone", 2)  # Ann's and boss's own
    assert boss.post(f"/admin/otp_static/staticdevice/{backup.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not StaticDevice.objects.filter(pk=backup.pk).exists()
    assert StaffEvent.objects.get(kind=K.FACTOR_REMOVED).actor == "boss@paidup.example"


def test_a_factor_removed_by_a_command_says_so(ann):
    TOTPDevice.objects.create(user=ann, name="phone", confirmed=True)
    TOTPDevice.objects.filter(user=ann).delete()
    removed = StaffEvent.objects.get(kind=K.FACTOR_REMOVED)
    assert (removed.user, removed.actor) == (ann, "manage.py")


# --- the admin list ---------------------------------------------------------------------


def test_the_other_support_person_reads_the_events_searches_and_filters(ann):
    sign_in("ann@paidup.example", PASSWORD, "203.0.113.5")
    sign_in("nobody@paidup.example", "wrong", "203.0.113.6")
    bob = client_for(staff("bob@paidup.example", "Support"))
    page = bob.get("/admin/support/staffevent/").content.decode()
    assert "ann@paidup.example" in page and "nobody@paidup.example" in page and "Failed sign-in" in page
    found = bob.get("/admin/support/staffevent/", {"q": "nobody"}).content.decode()
    assert "nobody@paidup.example" in found and "ann@paidup.example" not in found
    failed_only = bob.get("/admin/support/staffevent/", {"kind__exact": "login_failed"}).content.decode()
    assert "nobody@paidup.example" in failed_only and "ann@paidup.example" not in failed_only


def test_the_events_are_read_only(ann):
    sign_in("ann@paidup.example", PASSWORD)
    event = StaffEvent.objects.get()
    bob = client_for(staff("bob@paidup.example", "Support"))
    assert bob.get("/admin/support/staffevent/add/").status_code == 403
    assert bob.post(f"/admin/support/staffevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    bob.post(f"/admin/support/staffevent/{event.pk}/change/", {"kind": "logout", "email": "x@y.z"})
    event.refresh_from_db()
    assert (event.kind, event.email) == (K.LOGIN, "ann@paidup.example")


def test_the_landing_page_links_the_events_and_everyones_console_actions(ann):
    page = client_for(staff("bob@paidup.example", "Support")).get("/admin/").content.decode()
    assert "/admin/support/staffevent/" in page and "/admin/admin/logentry/" in page
    assert "/admin/axes/accessattempt/" in page


def test_everyones_console_actions_are_readable_by_support(ann):
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user_id=ann.pk, queryset=[ann], action_flag=CHANGE, change_message="Refunded $249.00", single_object=True
    )
    page = client_for(staff("bob@paidup.example", "Support")).get("/admin/admin/logentry/")
    assert page.status_code == 200 and "Refunded $249.00" in page.content.decode()


def test_staff_without_the_permission_see_no_events(ann):
    sign_in("ann@paidup.example", PASSWORD)
    outsider = client_for(staff("temp@paidup.example"))
    assert outsider.get("/admin/support/staffevent/").status_code == 403
    assert outsider.get("/admin/admin/logentry/").status_code == 403
    assert "/admin/support/staffevent/" not in outsider.get("/admin/").content.decode()


def test_anonymous_visitors_get_the_login_page_not_the_events(ann):
    response = Client().get("/admin/support/staffevent/")
    assert response.status_code == 302 and response.url.startswith("/admin/login/")
