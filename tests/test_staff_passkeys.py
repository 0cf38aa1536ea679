"""Staff passkeys through the JSON endpoints and the "Your sign-in methods" page, with a
software authenticator (tests/fixtures/passkeys.py) checked by py_webauthn like a browser's.

What a support person and an attacker would try: enrol, sign in with password + passkey,
replay or tamper with an answer, use another person's passkey, a look-alike site's origin, and
remove or rename what is not theirs or is their last factor."""

import json
import re
from html import unescape
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from accounts.models import User
from config.passkeys import relying_party
from support.staff_session import VERIFIED_AT
from tests.fixtures.console import act_url, change_url, fulfilled_order, staff
from tests.fixtures.passkeys import SoftAuthenticator

pytestmark = pytest.mark.django_db

PASSWORD = "a long support passphrase"
BEGIN_REG = reverse("otp_webauthn:credential-registration-begin")
COMPLETE_REG = reverse("otp_webauthn:credential-registration-complete")
BEGIN_AUTH = reverse("otp_webauthn:credential-authentication-begin")
COMPLETE_AUTH = reverse("otp_webauthn:credential-authentication-complete")
METHODS = reverse("support-sign-in-methods")


def person(email="sue@paidup.example", **fields) -> User:
    return User.objects.create_user(email, PASSWORD, is_staff=True, **fields)


def signed_in(user: User) -> Client:
    """A browser that signed in with the password on the console's sign-in page (no second
    factor yet): it is sent on to "Confirm it's you", or to the enrol page on the first day."""
    client = Client(HTTP_HOST="localhost")
    answer = client.post(reverse("admin:login"), {"username": user.email, "password": PASSWORD})
    assert answer.status_code == 302 and "/admin/login/" not in answer["Location"], answer
    return client


def post_json(client: Client, url: str, data=None):
    return client.post(url, json.dumps(data) if data is not None else "", content_type="application/json")


def enrol(client: Client, authenticator: SoftAuthenticator, name: str = "") -> WebAuthnCredential:
    options = post_json(client, BEGIN_REG).json()
    answer = post_json(client, COMPLETE_REG, authenticator.create(options))
    assert answer.status_code == 200, answer.content
    passkey = WebAuthnCredential.objects.get(pk=answer.json()["id"])
    if name:
        WebAuthnCredential.objects.filter(pk=passkey.pk).update(name=name)
        passkey.refresh_from_db()
    return passkey


def verify(client: Client, authenticator: SoftAuthenticator, *, next_url: str = "", tamper=None):
    options = post_json(client, BEGIN_AUTH).json()
    answer = authenticator.get(options)
    if tamper:
        tamper(answer)
    url = COMPLETE_AUTH + ("?" + urlencode({"next": next_url}) if next_url else "")
    return post_json(client, url, answer)


def verified_device(client: Client):
    return client.session.get(DEVICE_ID_SESSION_KEY)


@pytest.fixture
def sue(db) -> User:
    return person()


@pytest.fixture
def enrolled(sue, authenticator):
    """Sue enrolled a passkey in an earlier session and signed out."""
    client = signed_in(sue)
    passkey = enrol(client, authenticator, name="Work laptop")
    client.logout()
    return passkey


# --- settings -----------------------------------------------------------------------------


def test_it_binds_passkeys_to_the_site_url_host():
    assert relying_party("https://paidup.example") == ("paidup.example", ["https://paidup.example"])
    assert relying_party("https://support.paidup.example:8443/") == (
        "support.paidup.example",
        ["https://support.paidup.example:8443"],
    )
    # Browsers refuse an IP address as a relying party: dev's 127.0.0.1 is localhost.
    assert relying_party("http://127.0.0.1:8000") == ("localhost", ["http://localhost:8000"])
    assert relying_party("http://[::1]:8000") == ("localhost", ["http://localhost:8000"])
    with pytest.raises(ValueError, match="no host"):
        relying_party("paidup.example")


# --- enrol --------------------------------------------------------------------------------


def test_it_enrols_a_passkey_which_verifies_the_session_and_rotates_its_key(sue, authenticator):
    client = signed_in(sue)
    before = client.session.session_key
    options = post_json(client, BEGIN_REG).json()
    assert options["rp"] == {"name": "PaidUp support", "id": "localhost"}
    assert options["user"]["name"] == sue.email

    answer = post_json(client, COMPLETE_REG, authenticator.create(options))

    assert answer.status_code == 200
    passkey = WebAuthnCredential.objects.get(user=sue)
    assert passkey.name.startswith("Passkey added ")
    assert verified_device(client) == passkey.persistent_id
    assert client.session.session_key != before
    entry = LogEntry.objects.get(user=sue, object_id=str(sue.pk))  # on her account, for the other person
    assert entry.change_message == f"Added a passkey (“{passkey.name}”)."
    assert client.session[VERIFIED_AT]


def test_a_password_alone_cannot_add_a_passkey_to_an_account_that_has_a_factor(enrolled, authenticator):
    """Someone with the stolen password must not enrol their own authenticator."""
    client = signed_in(enrolled.user)
    answer = post_json(client, BEGIN_REG)
    assert answer.status_code == 403 and answer.json()["code"] == "user_not_verified"
    assert WebAuthnCredential.objects.count() == 1


@pytest.mark.parametrize("who", ["customer", "staff by sign-in link", "nobody"])
def test_only_staff_signed_in_with_a_password_begin_a_ceremony(who, authenticator):
    client = Client(HTTP_HOST="localhost")
    if who == "customer":
        client.force_login(User.objects.create_user("ann@example.com", PASSWORD))
    if who == "staff by sign-in link":  # a session without the console's password sign-in
        client.force_login(person())
    for url in (BEGIN_REG, COMPLETE_REG, BEGIN_AUTH, COMPLETE_AUTH):
        answer = post_json(client, url)
        assert answer.status_code == 403, url
    assert WebAuthnCredential.objects.count() == 0
    assert verified_device(client) is None


def test_a_registration_from_a_look_alike_site_is_refused(sue, authenticator, settings):
    fake = SoftAuthenticator(origin="https://paidup-support.example", rp_id="paidup-support.example")
    settings.OTP_WEBAUTHN_RP_ID, settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = relying_party("http://localhost")
    client = signed_in(sue)
    options = post_json(client, BEGIN_REG).json()
    answer = post_json(client, COMPLETE_REG, fake.create(options))
    assert answer.status_code == 422
    assert WebAuthnCredential.objects.count() == 0 and verified_device(client) is None


# --- verify -------------------------------------------------------------------------------


def test_password_then_passkey_verifies_the_session(enrolled, authenticator):
    client = signed_in(enrolled.user)
    assert verified_device(client) is None
    before = client.session.session_key

    answer = verify(client, authenticator, next_url="/admin/billing/order/")

    assert answer.status_code == 200
    assert answer.json()["redirect_url"] == "/admin/billing/order/"
    assert verified_device(client) == enrolled.persistent_id
    assert client.session.session_key != before
    assert client.session[VERIFIED_AT]  # a fresh verification, as a large refund asks for
    enrolled.refresh_from_db()
    assert enrolled.last_used_at is not None
    # The staff events say the person got in, with the passkey (not just "password accepted").
    from support.models import StaffEvent

    event = StaffEvent.objects.filter(kind=StaffEvent.Kind.FACTOR_VERIFIED).latest("pk")  # enrolling was one too
    assert (event.user, event.actor, event.detail) == (
        enrolled.user,
        enrolled.user.email,
        f"WebAuthn credential “{enrolled.name}”",
    )


def test_a_next_on_another_host_is_ignored(enrolled, authenticator):
    answer = verify(signed_in(enrolled.user), authenticator, next_url="https://evil.example/admin/")
    assert answer.status_code == 200 and answer.json()["redirect_url"] == reverse("admin:index")


def test_a_passkey_is_never_a_first_factor(enrolled, authenticator):
    """No password, no session: the passkey alone signs nobody in (passwordless is off)."""
    client = Client(HTTP_HOST="localhost")
    assert post_json(client, BEGIN_AUTH).status_code == 403
    assert "_auth_user_id" not in client.session


def _flip_signature(answer):
    signature = bytearray(answer["response"]["signature"].encode())
    signature[-3] = ord("A") if signature[-3] != ord("A") else ord("B")
    answer["response"]["signature"] = signature.decode()


def _other_challenge(answer):
    from tests.fixtures.passkeys import b64url, unb64url

    data = json.loads(unb64url(answer["response"]["clientDataJSON"]))
    data["challenge"] = b64url(b"a challenge the server never gave")
    answer["response"]["clientDataJSON"] = b64url(json.dumps(data).encode())


def _other_origin(answer):
    from tests.fixtures.passkeys import b64url, unb64url

    data = json.loads(unb64url(answer["response"]["clientDataJSON"]))
    data["origin"] = "https://paidup-support.example"
    answer["response"]["clientDataJSON"] = b64url(json.dumps(data).encode())


@pytest.mark.parametrize("tamper", [_flip_signature, _other_challenge, _other_origin])
def test_a_tampered_assertion_is_refused_and_changes_nothing(enrolled, authenticator, tamper):
    client = signed_in(enrolled.user)
    answer = verify(client, authenticator, tamper=tamper)
    assert answer.status_code == 422
    assert verified_device(client) is None
    enrolled.refresh_from_db()
    assert enrolled.sign_count == 1 and enrolled.last_used_at is None  # as enrolment left it


def test_a_replayed_assertion_is_refused(enrolled, authenticator):
    client = signed_in(enrolled.user)
    options = post_json(client, BEGIN_AUTH).json()
    answer = authenticator.get(options)
    assert post_json(client, COMPLETE_AUTH, answer).status_code == 200
    client.logout()

    client = signed_in(enrolled.user)
    post_json(client, BEGIN_AUTH)  # a fresh challenge; the old answer signed the old one
    replay = post_json(client, COMPLETE_AUTH, answer)
    assert replay.status_code == 422 and verified_device(client) is None


def test_another_persons_passkey_does_not_verify_my_session(enrolled, authenticator):
    """Max holds his own passkey and Sue's password: his signature does not count for Sue."""
    max_ = person("max@paidup.example")
    max_authenticator = SoftAuthenticator()
    enrol(signed_in(max_), max_authenticator)

    client = signed_in(enrolled.user)
    options = post_json(client, BEGIN_AUTH).json()
    answer = post_json(client, COMPLETE_AUTH, max_authenticator.get(options, next(iter(max_authenticator.keys))))
    assert answer.status_code == 403 and answer.json()["code"] == "credential_user_mismatch"
    assert verified_device(client) is None


def test_an_unknown_credential_is_refused(enrolled, authenticator):
    stranger = SoftAuthenticator()
    stranger.create({"challenge": "eA"})  # a key the server never saw
    client = signed_in(enrolled.user)
    options = post_json(client, BEGIN_AUTH).json()
    answer = post_json(client, COMPLETE_AUTH, stranger.get(options, next(iter(stranger.keys))))
    assert answer.status_code == 404 and verified_device(client) is None


@pytest.mark.parametrize("body", ["not json", "[]", '{"id": "x"}'])
def test_malformed_answers_are_refused(enrolled, authenticator, body):
    client = signed_in(enrolled.user)
    post_json(client, BEGIN_AUTH)
    answer = client.post(COMPLETE_AUTH, body, content_type="application/json")
    assert answer.status_code in (400, 422) and "detail" in answer.json()
    assert verified_device(client) is None


def test_completing_without_beginning_is_refused(enrolled, authenticator):
    client = signed_in(enrolled.user)
    answer = post_json(client, COMPLETE_AUTH, authenticator.get({"challenge": "eA"}))
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_state"


# --- "Your sign-in methods": name and remove ------------------------------------------------


def verified_client(passkey: WebAuthnCredential, authenticator: SoftAuthenticator) -> Client:
    client = signed_in(passkey.user)
    assert verify(client, authenticator).status_code == 200
    return client


def test_the_page_lists_my_passkeys_and_offers_to_add_one(enrolled, authenticator):
    page = verified_client(enrolled, authenticator).get(METHODS)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Work laptop" in html and 'id="passkey-register-button"' in html
    assert 'id="otp_webauthn_config"' in html
    # The only factor: no Remove button, and the reason instead.
    assert "Remove “Work laptop”" not in html and "Your only way to confirm it's you" in html
    # No inline script: every <script> loads a file or is the JSON configuration (not run).
    tags = re.findall(r"<script[^>]*>", html)
    assert tags and all(" src=" in tag or 'type="application/json"' in tag for tag in tags), tags


def test_on_an_ip_address_the_page_sends_me_to_localhost(enrolled, authenticator, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    client = verified_client(enrolled, authenticator)
    page = client.get(METHODS, HTTP_HOST="127.0.0.1")
    assert 'Passkeys work only at <a href="http://localhost/admin/sign-in-methods/">' in page.content.decode()
    assert 'id="passkey-register-button"' not in page.content.decode()


def test_i_name_my_passkey(enrolled, authenticator):
    client = verified_client(enrolled, authenticator)
    answer = client.post(
        reverse("support-passkey-rename"), {"passkey": enrolled.pk, "name": "  Phone \n ", "next": "/admin/"}
    )
    assert answer.status_code == 302 and answer["Location"] == "/admin/"
    enrolled.refresh_from_db()
    assert enrolled.name == "Phone"


@pytest.mark.parametrize(
    ("name", "words"),
    [("", "Type a name for this passkey"), ("   ", "Type a name"), ("x" * 65, "too long: 64 characters at most")],
)
def test_a_bad_name_is_refused_and_changes_nothing(enrolled, authenticator, name, words):
    client = verified_client(enrolled, authenticator)
    answer = client.post(reverse("support-passkey-rename"), {"passkey": enrolled.pk, "name": name}, follow=True)
    assert words in answer.content.decode()
    enrolled.refresh_from_db()
    assert enrolled.name == "Work laptop"


@pytest.mark.parametrize("action", ["support-passkey-rename", "support-passkey-remove"])
def test_another_persons_passkey_or_a_made_up_id_gets_the_same_refusal(enrolled, authenticator, action):
    max_ = person("max@paidup.example")
    max_passkey = enrol(signed_in(max_), SoftAuthenticator(), name="Max's laptop")
    TOTPDevice.objects.create(user=max_, name="Max's phone", confirmed=True)
    client = verified_client(enrolled, authenticator)
    TOTPDevice.objects.create(user=enrolled.user, name="Sue's phone", confirmed=True)  # not her last factor

    pages = [
        client.post(reverse(action), {"passkey": value, "name": "Mine now"}, follow=True).content.decode()
        for value in (max_passkey.pk, 999999, "1 OR 1=1", "")
    ]

    assert all("That passkey is not one of yours." in page for page in pages)
    assert "Max" not in "".join(pages)
    max_passkey.refresh_from_db()
    assert max_passkey.name == "Max's laptop"
    assert WebAuthnCredential.objects.count() == 2


def test_my_last_factor_stays(enrolled, authenticator):
    client = verified_client(enrolled, authenticator)
    answer = client.post(reverse("support-passkey-remove"), {"passkey": enrolled.pk}, follow=True)
    assert "“Work laptop” is your only way to confirm it's you, so it stays." in unescape(answer.content.decode())
    assert WebAuthnCredential.objects.filter(pk=enrolled.pk).exists()
    assert not LogEntry.objects.filter(change_message__startswith="Removed").exists()


def test_i_remove_a_passkey_when_another_factor_remains(enrolled, authenticator):
    TOTPDevice.objects.create(user=enrolled.user, name="Phone app", confirmed=True)
    client = verified_client(enrolled, authenticator)
    answer = client.post(reverse("support-passkey-remove"), {"passkey": enrolled.pk}, follow=True)
    assert "“Work laptop” is removed" in answer.content.decode()
    assert not WebAuthnCredential.objects.exists()
    entry = LogEntry.objects.get(change_message__startswith="Removed")
    assert entry.user == enrolled.user and entry.object_id == str(enrolled.user.pk)
    assert entry.change_message == "Removed a passkey (“Work laptop”)."


def test_the_page_and_its_forms_are_refused_to_a_customer(enrolled):
    customer = User.objects.create_user("ann@example.com", PASSWORD)
    client = Client(HTTP_HOST="localhost")
    client.force_login(customer)
    assert client.get(METHODS).status_code == 302  # to the console's sign-in
    answer = client.post(reverse("support-passkey-remove"), {"passkey": enrolled.pk})
    assert answer.status_code == 302 and "/admin/login/" in answer["Location"]
    assert WebAuthnCredential.objects.filter(pk=enrolled.pk).exists()


# --- the enrol and verify pages -----------------------------------------------------------


def test_first_day_a_passkey_then_the_backup_codes(sue, authenticator):
    client = signed_in(sue)
    enrol_page = client.get(reverse("admin:staff_enrol")).content.decode()
    assert 'id="passkey-register-button"' in enrol_page and "(recommended)" in enrol_page

    passkey = enrol(client, authenticator)
    codes = client.post(
        reverse("support-passkey-added"), {"passkey": passkey.pk, "name": "Work laptop", "next": "/admin/"}
    )

    assert codes.status_code == 200 and "Here are ten backup codes" in codes.content.decode()
    assert len(codes.context["codes"]) == 10 and codes.context["go"] == "/admin/"
    passkey.refresh_from_db()
    assert passkey.name == "Work laptop"
    assert client.get(reverse("admin:index")).status_code == 200  # the console is open


def test_a_second_passkey_goes_back_with_its_name(enrolled, authenticator):
    client = verified_client(enrolled, authenticator)
    client.post(reverse("admin:staff_backup_codes"))
    phone = SoftAuthenticator()
    second = enrol(client, phone)
    answer = client.post(reverse("support-passkey-added"), {"passkey": second.pk, "name": "", "next": METHODS})
    assert answer.status_code == 302 and answer["Location"] == METHODS
    second.refresh_from_db()
    assert second.name.startswith("Passkey added ")  # blank: the default name stays
    page = unescape(client.get(METHODS).content.decode())
    assert f"Your passkey “{second.name}” is ready" in page and "Remove “Work laptop”" in page
    assert "Backup codes: 10 left" in page


def test_the_verify_page_offers_a_passkey_only_to_a_person_who_has_one(enrolled, authenticator):
    TOTPDevice.objects.create(user=person("max@paidup.example"), name="Authenticator app", confirmed=True)
    with_passkey = signed_in(enrolled.user).get(reverse("admin:staff_verify")).content.decode()
    without = signed_in(User.objects.get(email="max@paidup.example")).get(reverse("admin:staff_verify"))
    assert 'id="passkey-verification-button"' in with_passkey and "Use a passkey" in with_passkey
    assert "passkey-verification-button" not in without.content.decode()


def test_a_password_alone_reaches_neither_the_page_nor_its_forms(enrolled, authenticator):
    client = signed_in(enrolled.user)
    TOTPDevice.objects.create(user=enrolled.user, name="Phone app", confirmed=True)
    page = client.get(METHODS)
    assert page.status_code == 302 and page["Location"].startswith(reverse("admin:login"))
    for action in ("support-passkey-remove", "support-passkey-rename", "support-passkey-added"):
        answer = client.post(reverse(action), {"passkey": enrolled.pk, "name": "Stolen"})
        assert answer.status_code == 302 and answer["Location"].startswith(reverse("admin:login"))
    enrolled.refresh_from_db()
    assert enrolled.name == "Work laptop"


# --- a passkey is the fresh verification a large refund asks for ----------------------------------


def test_a_full_price_refund_is_confirmed_with_the_passkey(authenticator, stripe_api, time_machine):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    ben = staff("ben@paidup.example", "Support", "Support: refunds")
    ben.set_password(PASSWORD)
    ben.save()
    enrol(signed_in(ben), authenticator)
    order = fulfilled_order(stripe_api)
    browser = signed_in(ben)
    assert verify(browser, authenticator).status_code == 200
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)  # verified 10 minutes ago: not fresh

    typed = {"amount": "249.00", "reason": "Asked for it back", "token": "7d1c2f0e-0000-4000-8000-000000000001"}
    asked = browser.post(act_url(order, "refund"), {**typed, "confirmed": "yes"})
    assert asked.status_code == 302 and asked.url.startswith(reverse("admin:staff_verify"))
    page = unescape(browser.get(asked.url).content.decode())
    assert "A refund this large needs a fresh code" in page and 'id="passkey-verification-button"' in page
    back = act_url(order, "refund") + "?resume=1"
    assert f'id="pu-passkey-next" value="{back}"' in page

    answer = verify(browser, authenticator, next_url=back)
    assert answer.status_code == 200 and answer.json()["redirect_url"] == back
    question = unescape(browser.get(back).content.decode())
    assert 'id="pu-question"' in question and "Asked for it back" in question
    done = browser.post(act_url(order, "refund"), {**typed, "confirmed": "yes"})

    assert done.status_code == 302 and done.url == change_url(order)
    order.refresh_from_db()
    assert order.refunded_cents == 24900 and len(stripe_api.refunds) == 1


def test_a_failed_passkey_leaves_the_large_refund_undone(authenticator, stripe_api, time_machine):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    ben = staff("ben@paidup.example", "Support", "Support: refunds")
    ben.set_password(PASSWORD)
    ben.save()
    enrol(signed_in(ben), authenticator)
    order = fulfilled_order(stripe_api)
    browser = signed_in(ben)
    verify(browser, authenticator)
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)
    typed = {"amount": "249.00", "reason": "Asked", "token": "7d1c2f0e-0000-4000-8000-000000000002", "confirmed": "yes"}
    browser.post(act_url(order, "refund"), typed)

    assert verify(browser, authenticator, tamper=_flip_signature).status_code == 422
    again = browser.post(act_url(order, "refund"), typed)

    assert again.status_code == 302 and again.url.startswith(reverse("admin:staff_verify"))
    order.refresh_from_db()
    assert order.refunded_cents == 0 and stripe_api.refunds == []


def test_the_json_endpoints_need_the_csrf_token(enrolled, authenticator):
    client = signed_in(enrolled.user)
    client.handler.enforce_csrf_checks = True
    for url in (BEGIN_REG, COMPLETE_REG, BEGIN_AUTH, COMPLETE_AUTH):
        assert post_json(client, url).status_code == 403, url
    assert verified_device(client) is None
