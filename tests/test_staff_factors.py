"""The staff second factor (issue 12, item 1): no admin page, action, JSON or autocomplete view
without a password sign-in and a verified factor in the same session; the "Confirm it's you"
page (authenticator-app code or backup code, throttled, single use); the first-day enrolment.
"""

import html
import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import factors
from billing.models import Order
from outbox.models import OutboundEmail
from tests.fixtures.console import (
    PASSWORD,
    act_url,
    change_url,
    current_code,
    fulfilled_order,
    staff_with_password,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ben():
    return staff_with_password("ben@paidup.example", "Support", "Support: refunds")


@pytest.fixture
def app(ben):
    return TOTPDevice.objects.create(user=ben, name="Authenticator app", confirmed=True)


def password_session(person, **next_) -> tuple[Client, object]:
    """A browser that passed the admin's password page only (no code yet)."""
    browser = Client()
    response = browser.post(
        reverse("admin:login") + (f"?next={next_['next']}" if next_ else ""),
        {"username": person.email, "password": PASSWORD, **next_},
    )
    return browser, response


def verify(browser, code: str, **extra):
    return browser.post(reverse("admin:staff_verify"), {"code": code, **extra})


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.content.decode()))


# --- nothing without a factor --------------------------------------------------------------


def test_it_sends_a_password_sign_in_to_confirm_its_you_not_to_an_error(ben, app):
    browser, response = password_session(ben)
    assert response.status_code == 302 and response.url.startswith(reverse("admin:staff_verify"))
    page = browser.get(response.url)
    assert page.status_code == 200
    assert "Confirm it's you" in text(page) and 'name="code"' in text(page)


def test_no_admin_page_action_or_json_view_opens_for_a_password_only_session(ben, app, stripe_api):
    order = fulfilled_order(stripe_api)
    browser, _ = password_session(ben)
    urls = [
        reverse("admin:index"),
        reverse("admin:billing_order_changelist"),
        change_url(order),
        act_url(order, "refund"),
        reverse("admin:billing_order_attach"),
        reverse("admin:autocomplete") + "?app_label=billing&model_name=order&field_name=plan&term=a",
        reverse("admin:accounts_user_changelist"),
        reverse("admin:staff_backup_codes"),
    ]
    for url in urls:
        response = browser.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("admin:login")), url
        assert browser.get(response.url).url.startswith(reverse("admin:staff_verify")), url


def test_a_direct_post_to_a_refund_does_nothing_without_a_factor(ben, app, stripe_api):
    order = fulfilled_order(stripe_api)
    browser, _ = password_session(ben)
    data = {"amount": "249.00", "reason": "asked", "token": str(uuid.uuid4()), "confirmed": "yes"}
    response = browser.post(act_url(order, "refund"), data)
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED and order.refunded_cents == 0
    assert stripe_api.refunds == []


def test_a_factor_verified_without_a_password_sign_in_opens_nothing(ben, app):
    """A session signed in some other way (a customer link, a stolen half-session) cannot be
    completed with a code: the code page wants the password first."""
    browser = Client()
    browser.force_login(ben)
    response = verify(browser, current_code(ben))
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    assert browser.get(reverse("admin:index")).status_code == 302
    assert TOTPDevice.objects.get(pk=app.pk).last_t == -1  # the code was not even tried


# --- the code ----------------------------------------------------------------------------


def test_the_right_code_opens_the_console_and_rotates_the_session_key(ben, app):
    browser, _ = password_session(ben)
    before = browser.session.session_key
    response = verify(browser, current_code(ben), next=change_url_any())
    assert response.status_code == 302 and response.url == change_url_any()
    assert browser.session.session_key != before
    stolen = Client()
    stolen.cookies["sessionid"] = before
    assert stolen.get(reverse("admin:index")).status_code == 302  # the old key is worth nothing
    assert browser.get(reverse("admin:index")).status_code == 200


def change_url_any() -> str:
    return reverse("admin:billing_order_changelist")


def test_next_pointing_at_another_host_is_ignored(ben, app):
    browser, response = password_session(ben, next="https://evil.example/admin/")
    assert "evil.example" not in response.url
    response = verify(browser, current_code(ben), next="https://evil.example/admin/")
    assert response.status_code == 302 and response.url == reverse("admin:index")


def test_a_wrong_code_says_so_and_opens_nothing(ben, app):
    browser, _ = password_session(ben)
    response = verify(browser, "000000" if current_code(ben) != "000000" else "111111")
    assert response.status_code == 400
    assert "That code didn't work" in text(response)
    assert browser.get(reverse("admin:index")).status_code == 302


def test_a_code_works_once(ben, app):
    code = current_code(ben)
    first, _ = password_session(ben)
    assert verify(first, code).status_code == 302
    second, _ = password_session(ben)
    response = verify(second, code)
    assert response.status_code == 400 and "each code works once" in text(response)
    assert second.get(reverse("admin:index")).status_code == 302


def test_wrong_codes_are_throttled_by_django_otp(ben, app):
    browser, _ = password_session(ben)
    wrong = "000000" if current_code(ben) != "000000" else "111111"
    assert verify(browser, wrong).status_code == 400
    response = verify(browser, current_code(ben))  # at once: the app's right code must wait now
    assert response.status_code == 400
    assert "That was a wrong code. Please wait 1 second and" in text(response)  # one is not "too many"
    assert "in a row" not in text(response)
    assert browser.get(reverse("admin:index")).status_code == 302


def test_several_wrong_codes_are_counted_in_the_wait_message(ben, app):
    from django.utils import timezone

    TOTPDevice.objects.filter(user=ben).update(throttling_failure_count=3, throttling_failure_timestamp=timezone.now())
    error = factors.check_code(ben, current_code(ben)).error
    assert error.startswith("3 wrong codes in a row. Please wait")


def test_a_backup_code_works_once_and_is_not_stored_in_clear(ben, app):
    codes = factors.new_backup_codes(ben)
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = set(StaticToken.objects.filter(device__user=ben).values_list("token", flat=True))
    assert not stored & {c.replace("-", "") for c in codes} and not stored & set(codes)
    browser, _ = password_session(ben)
    assert verify(browser, codes[3].upper().replace("-", " ")).status_code == 302  # as typed from paper
    assert factors.backup_codes_left(ben) == 9
    again, _ = password_session(ben)
    response = verify(again, codes[3])
    assert response.status_code == 400 and "backup code didn't work" in text(response)


@pytest.mark.parametrize("typed", ["", "   ", "12345", "x" * 39, "<script>alert(1)</script>"])
def test_junk_in_the_code_field_is_refused_plainly(ben, app, typed):
    browser, _ = password_session(ben)
    response = verify(browser, typed)
    assert response.status_code == 400
    assert "<script>alert(1)" not in response.content.decode()
    assert browser.get(reverse("admin:index")).status_code == 302


# --- enrolment ---------------------------------------------------------------------------


def test_a_person_without_a_factor_is_sent_to_enrol_and_sees_no_order(ben, stripe_api):
    order = fulfilled_order(stripe_api)
    browser, response = password_session(ben)
    assert response.url.startswith(reverse("admin:staff_enrol"))
    page = browser.get(response.url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "<svg" in body and not re.search(r"<script(?![^>]*\bsrc=)", body)  # QR code inline, no inline script
    device = TOTPDevice.objects.get(user=ben, confirmed=False)
    assert factors.secret_text(device) in body
    assert order.reference not in body
    assert browser.get(change_url(order)).status_code == 302
    assert browser.get(reverse("admin:staff_verify")).url.startswith(reverse("admin:staff_enrol"))


def test_enrolling_confirms_the_app_and_shows_ten_backup_codes_once(ben):
    browser, response = password_session(ben)
    browser.get(response.url)
    device = TOTPDevice.objects.get(user=ben, confirmed=False)
    wrong = browser.post(reverse("admin:staff_enrol"), {"code": "12"})
    assert wrong.status_code == 400 and "Type those 6 digits" in text(wrong)
    code = f"{factors_totp(device):06d}"
    response = browser.post(reverse("admin:staff_enrol"), {"code": code})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    shown = re.findall(r"<code>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code>", response.content.decode())
    assert len(shown) == 10
    device.refresh_from_db()
    assert device.confirmed
    assert browser.get(reverse("admin:index")).status_code == 200
    assert browser.get(reverse("admin:staff_enrol")).status_code == 302  # enrolled: no second QR code


def test_the_enrol_page_needs_a_password_sign_in(ben):
    browser = Client()
    browser.force_login(ben)
    response = browser.get(reverse("admin:staff_enrol"))
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    assert not TOTPDevice.objects.filter(user=ben).exists()
    assert Client().get(reverse("admin:staff_enrol")).url.startswith(reverse("admin:login"))


def factors_totp(device) -> int:
    from django_otp.oath import totp

    return totp(device.bin_key, device.step, device.t0, device.digits, device.drift)


# --- customer links never open the console ------------------------------------------------


def test_a_staff_address_in_the_customer_sign_in_form_gets_no_link_and_the_same_words(client, ben, mailoutbox):
    stranger = client.post(reverse("accounts:signin"), {"email": "nobody@example.com"})
    response = client.post(reverse("accounts:signin"), {"email": ben.email})
    assert response.status_code == stranger.status_code == 200
    assert text(response).replace(ben.email, "EMAIL") == text(stranger).replace("nobody@example.com", "EMAIL")
    assert not OutboundEmail.objects.filter(to=ben.email).exists()


def test_a_link_made_before_the_account_became_staff_signs_nobody_in(client, ben):
    from accounts.signin import make_token

    ben.is_staff = False
    ben.save()
    token = make_token(ben)
    ben.is_staff = True
    ben.save()
    response = client.post(reverse("accounts:signin_link", args=[token]))
    assert response.status_code == 400
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("admin:index")).status_code == 302


# --- the dev login (make run) ------------------------------------------------------------


def test_the_dev_login_is_printed_with_fresh_codes_that_work_each_run(settings, plan):
    from io import StringIO

    from django.core.management import call_command

    settings.DEBUG = True

    def seed() -> str:
        out = StringIO()
        call_command("seed_demo", stdout=out)
        return out.getvalue()

    first = seed()
    password = re.search(r"Dev support login: support@paidup.example / (\S+)", first).group(1)
    codes = re.findall(r"\b[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}\b", first)
    uri = re.search(r"otpauth://totp/\S+", first).group(0)
    assert len(codes) == 5 and "secret=" in uri and "issuer=PaidUp%20support" in uri
    second = seed()
    assert re.search(r"otpauth://totp/\S+", second).group(0) != uri  # a fresh secret each run
    new_codes = re.findall(r"\b[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}\b", second)
    new_password = re.search(r"Dev support login: support@paidup.example / (\S+)", second).group(1)
    assert new_password != password
    from accounts.models import User

    person = User.objects.get(email="support@paidup.example")
    browser = Client()
    response = browser.post(reverse("admin:login"), {"username": person.email, "password": new_password})
    assert response.url.startswith(reverse("admin:staff_verify"))
    assert verify(browser, new_codes[0]).status_code == 302
    assert browser.get(reverse("admin:index")).status_code == 200
    assert factors.check_code(person, codes[0]).device is None  # last run's codes are gone


def test_new_backup_codes_replace_the_old_ones_and_are_logged(ben, app):
    from django.contrib.admin.models import LogEntry

    from tests.fixtures.console import client_for

    old = factors.new_backup_codes(ben)
    browser = client_for(ben)
    assert browser.get(reverse("admin:staff_backup_codes")).status_code == 405  # a POST button only
    response = browser.post(reverse("admin:staff_backup_codes"))
    shown = re.findall(r"<code>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code>", response.content.decode())
    assert response.status_code == 200 and len(shown) == 10 and not set(shown) & set(old)
    assert factors.check_code(ben, shown[0]).device is not None
    assert "your old ones no longer work" in text(response) and "Your second factor is set up" not in text(response)
    assert "from a set you replaced" in factors.check_code(ben, old[0]).error
    assert "works only once" not in factors.check_code(ben, old[0]).error
    assert "Printed new backup codes" in LogEntry.objects.get(object_id=str(ben.pk)).change_message


def test_the_code_and_enrol_forms_need_csrf(ben, app):
    browser = Client(enforce_csrf_checks=True)
    browser.post(reverse("admin:login"), {"username": ben.email, "password": PASSWORD})  # refused: no token
    assert "_auth_user_id" not in browser.session
    signed = Client(enforce_csrf_checks=True)
    signed.force_login(ben)
    assert verify(signed, current_code(ben)).status_code == 403
    assert signed.post(reverse("admin:staff_enrol"), {"code": "123456"}).status_code == 403
