"""Password guessing at the admin login (issue 12 item 2): django-axes locks an email after
AXES_FAILURE_LIMIT failures and, on its own count, a client address; the lock-out page says the
same for every email, real or not; the operator unlocks with `manage.py unlock_login`."""

import html
from datetime import timedelta
from io import StringIO

import pytest
from axes.models import AccessAttempt
from django.core.management import CommandError, call_command
from django.test import Client

from support.models import StaffEvent
from tests.fixtures.console import PASSWORD, client_for, staff, staff_with_password

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
LOCKED = "Too many sign-in attempts. Try again in 30 minutes"


@pytest.fixture
def ann(db):
    return staff_with_password("ann@paidup.example", "Support")


def sign_in(email: str, password: str, address: str = "198.51.100.1", client: Client | None = None, **headers):
    client = client or Client(REMOTE_ADDR=address, **headers)
    return client.post(LOGIN, {"username": email, "password": password}), client


def guess(email: str, times: int, *, addresses=None) -> None:
    for n in range(times):
        address = addresses[n] if addresses else "198.51.100.1"
        response, _ = sign_in(email, f"wrong-{n}", address)
        assert response.status_code in (200, 429)


def test_it_signs_in_with_the_right_password(ann):
    response, client = sign_in("ann@paidup.example", PASSWORD)
    # The password is right: on to the second step (she has no factor yet, so enrolling one).
    assert response.status_code == 302 and response.url.startswith("/admin/enrol/")
    assert client.get(response.url).status_code == 200


def test_it_locks_an_email_after_the_limit_whatever_the_address(ann):
    # Five guesses from five addresses: no address reaches its own limit, the email does.
    guess("ann@paidup.example", 5, addresses=[f"203.0.113.{n}" for n in range(5)])
    response, client = sign_in("ann@paidup.example", PASSWORD, "192.0.2.50")
    assert response.status_code == 429
    assert LOCKED in html.unescape(response.content.decode())
    assert client.get("/admin/").status_code == 302  # not signed in
    # Another email from that fresh address is not affected.
    other = staff("bob@paidup.example", "Support")
    other.set_password(PASSWORD)
    other.save()
    assert sign_in("bob@paidup.example", PASSWORD, "192.0.2.50")[0].status_code == 302


def test_the_lock_out_page_has_no_sidebar_and_points_to_access_attempts(ann):
    guess("ann@paidup.example", 5)
    response, _ = sign_in("ann@paidup.example", PASSWORD)
    page = html.unescape(response.content.decode())
    assert response.status_code == 429 and LOCKED in page
    assert "permission to view or edit anything" not in page and 'id="nav-sidebar"' not in page
    assert "Access attempts" in page and "Axes ›" not in page


def test_it_locks_an_address_after_the_limit_whatever_the_email(ann):
    guess_emails = [f"guess{n}@paidup.example" for n in range(5)]
    for n, email in enumerate(guess_emails):
        sign_in(email, f"wrong-{n}", "203.0.113.9")
    response, client = sign_in("ann@paidup.example", PASSWORD, "203.0.113.9")
    assert response.status_code == 429 and client.get("/admin/").status_code == 302
    # Ann herself, from elsewhere, is not locked: the address was.
    assert sign_in("ann@paidup.example", PASSWORD, "192.0.2.77")[0].status_code == 302


def test_the_limit_is_not_reached_one_guess_early(ann):
    guess("ann@paidup.example", 4)
    assert sign_in("ann@paidup.example", PASSWORD)[0].status_code == 302


def test_signing_in_to_another_account_does_not_clear_the_guesses(ann):
    """Knowing Bob's password must not buy more guesses at Ann's: a right password (the first step
    only) clears no count, neither the email's nor the address's (AXES_RESET_ON_SUCCESS = False)."""
    bob = staff("bob@paidup.example", "Support")
    bob.set_password(PASSWORD)
    bob.save()
    guess("ann@paidup.example", 4)
    assert sign_in("bob@paidup.example", PASSWORD)[0].status_code == 302
    guess("ann@paidup.example", 1)
    # Ann's email is locked wherever she comes from; the address is locked for every email.
    assert sign_in("ann@paidup.example", PASSWORD, "192.0.2.60")[0].status_code == 429
    assert sign_in("bob@paidup.example", PASSWORD)[0].status_code == 429
    assert sign_in("bob@paidup.example", PASSWORD, "192.0.2.61")[0].status_code == 302


def test_her_own_right_password_does_not_clear_her_guesses(ann):
    guess("ann@paidup.example", 4, addresses=[f"203.0.113.{n}" for n in range(4)])
    assert sign_in("ann@paidup.example", PASSWORD, "192.0.2.62")[0].status_code == 302
    guess("ann@paidup.example", 1, addresses=["203.0.113.40"])
    assert sign_in("ann@paidup.example", PASSWORD, "192.0.2.63")[0].status_code == 429


def test_spelling_the_email_differently_does_not_get_more_guesses(ann):
    spellings = [
        "ANN@paidup.example",
        " Ann@PaidUp.example",
        "ann@PAIDUP.EXAMPLE",
        "aNN@paidup.example",
        "ann@paidup.example",
    ]
    for n, spelling in enumerate(spellings):
        sign_in(spelling, "wrong", f"203.0.113.{n}")
    assert sign_in("ann@paidup.example", PASSWORD, "192.0.2.1")[0].status_code == 429


def test_an_unknown_email_gets_the_same_answers_as_a_real_one(ann):
    real, _ = sign_in("ann@paidup.example", "wrong", "203.0.113.1")
    unknown, _ = sign_in("nobody@paidup.example", "wrong", "203.0.113.2")
    assert real.status_code == unknown.status_code == 200
    assert real.context["form"].errors == unknown.context["form"].errors  # the one generic message

    guess("ann@paidup.example", 5, addresses=[f"203.0.113.{10 + n}" for n in range(5)])
    guess("nobody@paidup.example", 5, addresses=[f"203.0.113.{20 + n}" for n in range(5)])
    locked_real, _ = sign_in("ann@paidup.example", PASSWORD, "192.0.2.3")
    locked_unknown, _ = sign_in("nobody@paidup.example", "anything", "192.0.2.4")
    assert locked_real.status_code == locked_unknown.status_code == 429
    assert locked_real.content == locked_unknown.content
    page = html.unescape(locked_real.content.decode())
    assert "ann@paidup.example" not in page and "unlock_login" in page and "other support person" in page


def test_the_lock_lifts_after_the_cool_off(ann, time_machine):
    guess("ann@paidup.example", 5)
    assert sign_in("ann@paidup.example", PASSWORD)[0].status_code == 429
    time_machine.move_to(timedelta(minutes=29))
    assert sign_in("ann@paidup.example", PASSWORD)[0].status_code == 429
    time_machine.move_to(timedelta(minutes=31))
    assert sign_in("ann@paidup.example", PASSWORD)[0].status_code == 302


def test_the_limit_and_cool_off_are_settings(ann, settings):
    settings.AXES_FAILURE_LIMIT = 2
    guess("ann@paidup.example", 2)
    assert sign_in("ann@paidup.example", PASSWORD)[0].status_code == 429


def test_the_address_is_the_houses_one_rule_behind_a_proxy(ann, settings):
    """NUM_PROXIES=1: the address the proxy saw (last in X-Forwarded-For), not what the client claims."""
    settings.NUM_PROXIES = 1
    for n in range(5):
        # The client forges a new first entry each time; the proxy appends the real address.
        sign_in(f"guess{n}@paidup.example", "wrong", "10.0.0.1", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 203.0.113.66")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.66"}
    response, _ = sign_in("ann@paidup.example", PASSWORD, "10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.66")
    assert response.status_code == 429
    assert (
        sign_in("ann@paidup.example", PASSWORD, "10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.67")[0].status_code == 302
    )


def test_the_password_tried_is_never_stored(ann):
    sign_in("ann@paidup.example", "hunter2-secret-guess")
    stored = [str(row) for row in AccessAttempt.objects.values()] + [str(row) for row in StaffEvent.objects.values()]
    assert stored and not any("hunter2-secret-guess" in row for row in stored)


# --- unlocking --------------------------------------------------------------------------


def unlock(target: str) -> str:
    out = StringIO()
    call_command("unlock_login", target, stdout=out)
    return out.getvalue()


def test_unlock_login_lifts_an_email_lock(ann):
    guess("ann@paidup.example", 5, addresses=[f"203.0.113.{n}" for n in range(5)])
    assert "Unlocked the email ann@paidup.example" in unlock(" Ann@PaidUp.example ")
    assert sign_in("ann@paidup.example", PASSWORD, "192.0.2.9")[0].status_code == 302
    event = StaffEvent.objects.get(kind=StaffEvent.Kind.UNLOCKED)
    assert (event.email, event.actor) == ("ann@paidup.example", "manage.py")


def test_unlock_login_lifts_an_address_lock(ann):
    for n in range(5):
        sign_in(f"guess{n}@paidup.example", "wrong", "203.0.113.9")
    assert "Unlocked the address 203.0.113.9" in unlock("203.0.113.9")
    assert sign_in("ann@paidup.example", PASSWORD, "203.0.113.9")[0].status_code == 302


def test_unlock_login_says_when_there_is_nothing_to_unlock(ann):
    assert "nothing to unlock" in unlock("ann@paidup.example")
    assert not StaffEvent.objects.filter(kind=StaffEvent.Kind.UNLOCKED).exists()


@pytest.mark.parametrize(
    "bad", ["", "   ", "ann", "@paidup.example", "ann@", "999.1.1.1", "203.0.113.9; DROP", "a b@x.example"]
)
def test_unlock_login_refuses_what_is_neither_an_email_nor_an_address(ann, bad):
    guess("ann@paidup.example", 5)
    before = list(AccessAttempt.objects.values_list("pk", "failures_since_start"))
    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("unlock_login", bad, stdout=StringIO())
    assert list(AccessAttempt.objects.values_list("pk", "failures_since_start")) == before
    assert sign_in("ann@paidup.example", PASSWORD, "192.0.2.200")[0].status_code == 429


# --- the admin pages --------------------------------------------------------------------


def test_support_sees_the_lock_outs_and_unlocks_from_the_admin(ann):
    guess("ann@paidup.example", 5)
    bob = staff("bob@paidup.example", "Support")
    console = client_for(bob)
    page = console.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and "ann@paidup.example" in page.content.decode()
    attempt = AccessAttempt.objects.get()
    confirm = console.get(f"/admin/axes/accessattempt/{attempt.pk}/delete/")
    assert confirm.status_code == 200
    console.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert not AccessAttempt.objects.exists()
    assert sign_in("ann@paidup.example", PASSWORD)[0].status_code == 302


def test_staff_outside_the_support_group_cannot_see_or_unlock(ann):
    guess("ann@paidup.example", 5)
    outsider = client_for(staff("temp@paidup.example"))
    attempt = AccessAttempt.objects.get()
    assert outsider.get("/admin/axes/accessattempt/").status_code == 403
    assert outsider.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()


@pytest.mark.parametrize(
    "data",
    [
        {"username": "", "password": ""},
        {"username": "ann@paidup.example\x00", "password": "x"},
        {"username": "ann@paidup.example"},
        {},
    ],
)
def test_bad_login_input_gets_the_form_again_and_locks_nobody(ann, data):
    for _ in range(6):
        response = Client(REMOTE_ADDR="203.0.113.99").post(LOGIN, data)
        assert response.status_code == 200 and response.context["form"].errors
    assert sign_in("ann@paidup.example", PASSWORD, "203.0.113.99")[0].status_code == 302


def test_a_huge_email_is_a_failed_guess_like_any_other_and_stored_cut_short(ann):
    huge = "a" * 10_000 + "@paidup.example"
    statuses = [sign_in(huge, "x", "203.0.113.98")[0].status_code for _ in range(6)]
    assert statuses == [200] * 4 + [429] * 2  # the fifth failure locks that address
    assert {len(name) for name in AccessAttempt.objects.values_list("username", flat=True)} == {254}
    assert len(StaffEvent.objects.filter(kind=StaffEvent.Kind.LOGIN_FAILED).first().email) == 254
    assert sign_in("ann@paidup.example", PASSWORD, "203.0.113.97")[0].status_code == 302


def test_the_test_clients_login_works_when_given_a_request(ann):
    """Axes needs the request in authenticate(): tests use force_login (tests/fixtures/console.py
    client_for), or Client.login with a request, as here."""
    from django.http import HttpRequest

    client = Client()
    assert client.login(request=HttpRequest(), username=ann.email, password=PASSWORD)
    assert client.session["_auth_user_id"] == str(ann.pk)
    # Not a password sign-in through the console's own page (support/admin_site.py): no admin yet.
    assert client.get("/admin/").status_code == 302
