"""The first plan and the first support login on a fresh site: `create_plan`, `create_support_login`."""

import re
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from billing.currencies import PriceError, parse_price
from billing.models import OutboundEmail, Plan
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def run(command: str, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def create_plan(*args) -> str:
    return run("create_plan", *args)


PASSPHRASE = "correct horse battery staple"
PRO = ["pro-year", "--name", "PaidUp Pro, one year", "--price", "249", "--currency", "usd"]


# --- prices ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, currency, minor",
    [
        ("249", "usd", 24900),
        ("249.00", "usd", 24900),
        ("249.5", "eur", 24950),
        (" 19.99 ", "GBP", 1999),
        ("3000", "jpy", 3000),
        ("3000", "JPY", 3000),
        ("1.250", "kwd", 1250),
        ("999999.99", "usd", 99_999_999),
    ],
)
def test_a_price_is_read_in_the_currencys_own_units(text, currency, minor):
    assert parse_price(text, currency) == minor


@pytest.mark.parametrize(
    "text, currency, why",
    [
        ("0", "usd", "more than zero"),
        ("0.00", "usd", "more than zero"),
        ("-5", "usd", "not a price"),
        ("abc", "usd", "not a price"),
        ("", "usd", "not a price"),
        ("1,249.00", "usd", "not a price"),
        ("249,00", "eur", "not a price"),
        ("1e3", "usd", "not a price"),
        ("249.001", "usd", "too many decimals"),
        ("3000.5", "jpy", "no decimals"),
        ("1000000", "usd", "more than Stripe accepts"),
        ("249", "xyz", "not a currency"),
        ("249", "dollars", "not a currency"),
    ],
)
def test_a_price_stripe_could_not_charge_is_refused(text, currency, why):
    with pytest.raises(PriceError, match=why):
        parse_price(text, currency)


# --- create_plan ----------------------------------------------------------------------


def test_a_fresh_site_sells_the_plan_once_it_is_created(client):
    assert "Nothing is for sale" in client.get("/checkout/").content.decode()

    output = create_plan(*PRO, "--days", "365")

    plan = Plan.objects.get()
    assert (plan.slug, plan.amount_cents, plan.currency, plan.duration_days, plan.active) == (
        "pro-year",
        24900,
        "usd",
        365,
        True,
    )
    assert output.strip() == "Plan pro-year created: PaidUp Pro, one year, $249.00 for 365 days (on sale)."
    page = client.get("/checkout/").content.decode()
    assert "Nothing is for sale" not in page and "$249.00" in page


def test_a_zero_decimal_currency_is_stored_as_typed():
    create_plan("pro-year-jp", "--name", "PaidUp Pro (Japan)", "--price", "30000", "--currency", "JPY")
    assert Plan.objects.values_list("amount_cents", "currency").get() == (30000, "jpy")


def test_running_it_again_changes_nothing():
    create_plan(*PRO)
    output = create_plan(*PRO[:4], "249.00", *PRO[5:])
    assert "unchanged" in output
    assert Plan.objects.count() == 1


def test_another_price_for_an_existing_slug_needs_update():
    create_plan(*PRO)
    with pytest.raises(CommandError, match=r"already exists .*--update.*Nothing was changed"):
        create_plan(*PRO[:4], "199", *PRO[5:])
    assert Plan.objects.get().amount_cents == 24900

    output = create_plan(*PRO[:4], "199", *PRO[5:], "--update")
    assert "updated" in output and "$199.00" in output
    assert Plan.objects.get().amount_cents == 19900


BAD_PLANS = {
    "zero price": ["--price", "0"],
    "negative price": ["--price", "-249"],
    "words for a price": ["--price", "lots"],
    "comma separators": ["--price", "1,249"],
    "cents in a zero-decimal currency": ["--price", "249.50", "--currency", "jpy"],
    "unknown currency": ["--currency", "xyz"],
    "a currency name, not a code": ["--currency", "dollar"],
    "blank name": ["--name", "  "],
    "name too long": ["--name", "x" * 101],
    "zero days": ["--days", "0"],
    "negative days": ["--days", "-30"],
    "a century": ["--days", "36500"],
}


@pytest.mark.parametrize("case", BAD_PLANS)
def test_bad_input_is_refused_with_a_reason_and_nothing_changes(case):
    options = dict(zip(PRO[1::2], PRO[2::2], strict=True))
    overrides = BAD_PLANS[case]
    options.update(zip(overrides[::2], overrides[1::2], strict=True))
    args = [PRO[0]] + [item for pair in options.items() for item in pair]
    with pytest.raises(CommandError, match="Nothing was changed"):
        create_plan(*args)
    assert not Plan.objects.exists()


@pytest.mark.parametrize("slug", ["Pro Year", "pro/year", "", "pro.year"])
def test_a_slug_that_is_not_one_is_refused(slug):
    with pytest.raises(CommandError, match="not a slug"):
        create_plan(slug, *PRO[1:])
    assert not Plan.objects.exists()


def test_a_duration_that_is_not_a_number_is_refused():
    with pytest.raises(CommandError, match="invalid int value"):
        create_plan(*PRO, "--days", "a year")
    assert not Plan.objects.exists()


def test_price_currency_and_name_are_required():
    with pytest.raises(CommandError, match="--name, --price, --currency"):
        create_plan("pro-year")


# --- create_support_login -------------------------------------------------------------


@pytest.fixture
def send_now(django_capture_on_commit_callbacks):
    """Run what the command leaves for after its commit (the q cluster runs in sync mode in tests)."""

    def send(*args) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            return run("create_support_login", *args)

    return send


def invite_path(message) -> str:
    return re.search(r"https?://[^/\s]+(/admin/welcome/[^\s]+/)", message.body).group(1)


def test_the_first_support_login_joins_by_emailed_invite_and_enrols_before_the_console(send_now, mailoutbox):
    output = send_now("  Ada@PaidUp.example ")

    user = User.objects.get()
    assert user.email == "ada@paidup.example"
    assert user.is_staff and not user.is_superuser and not user.has_usable_password()
    assert list(user.groups.values_list("name", flat=True)) == ["Support"]
    assert user.has_perm("billing.fulfil_order") and not user.has_perm("billing.refund_order")
    [message] = mailoutbox
    assert message.to == ["ada@paidup.example"]
    path = invite_path(message)
    assert path not in output  # the link is a credential: it goes to the person, not the terminal
    assert "Created support login ada@paidup.example" in output and "invite link is on its way" in output

    browser = Client()
    assert browser.get(path).status_code == 200  # a mail scanner's GET uses nothing up
    response = browser.post(path, {"new_password1": PASSPHRASE, "new_password2": PASSPHRASE})
    assert response.status_code == 302 and response["Location"] == "/admin/enrol/"
    assert browser.get("/admin/").status_code == 302  # no factor yet: nothing of the console
    browser.get("/admin/enrol/")
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    code = f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"
    assert browser.post("/admin/enrol/", {"code": code}).status_code == 200  # the backup codes page
    assert browser.get("/admin/").status_code == 200
    again = {"new_password1": "another pass phrase", "new_password2": "another pass phrase"}
    assert Client().post(path, again).status_code == 400  # single use


def test_running_it_again_adds_nothing_twice_and_sends_a_fresh_invite(send_now, mailoutbox):
    send_now("ada@paidup.example")
    output = send_now("ADA@paidup.example")
    user = User.objects.get()
    assert user.groups.count() == 1
    assert output.startswith("Kept support login ada@paidup.example.")
    assert len(mailoutbox) == 2


def test_refunds_and_superuser_are_opt_in(send_now):
    send_now("ada@paidup.example")
    output = send_now("ada@paidup.example", "--refunds", "--superuser", "--no-email")
    user = User.objects.get()
    assert sorted(user.groups.values_list("name", flat=True)) == ["Support", "Support: refunds"]
    assert user.is_superuser and user.has_perm("billing.refund_order")
    assert "joined 'Support: refunds'" in output and "superuser" in output


def test_a_customer_can_be_made_support_without_losing_anything(send_now):
    customer = UserFactory(email="bob@example.com")
    send_now("bob@example.com", "--no-email")
    customer.refresh_from_db()
    assert customer.is_staff and User.objects.count() == 1


@pytest.mark.parametrize("email", ["not-an-email", "ada@", "@paidup.example", "ada paidup.example", ""])
def test_a_malformed_email_is_refused_and_nothing_is_created(send_now, email):
    with pytest.raises(CommandError, match="is not an email address.*Nothing was changed"):
        send_now(email)
    assert not User.objects.exists() and not OutboundEmail.objects.exists()


def test_a_deactivated_account_is_not_reopened_behind_anyones_back(send_now):
    UserFactory(email="gone@paidup.example", is_active=False)
    with pytest.raises(CommandError, match="deactivated"):
        send_now("gone@paidup.example")
    assert not User.objects.get().is_staff


def test_it_says_to_migrate_when_the_groups_are_missing(send_now):
    Group.objects.filter(name="Support").delete()
    with pytest.raises(CommandError, match="run `manage.py migrate` first"):
        send_now("ada@paidup.example")
    assert not User.objects.exists()


def test_a_password_is_only_ever_typed_at_a_terminal(send_now, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(CommandError, match="needs a terminal"):
        send_now("ada@paidup.example", "--set-password")
    assert not User.objects.exists()


def test_a_typed_password_is_checked_stored_hashed_and_never_printed(send_now, monkeypatch):
    answers = iter(["short", "short", "correct horse battery", "correct horse battery"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    err = StringIO()
    monkeypatch.setattr("sys.stderr", err)

    output = send_now("ada@paidup.example", "--set-password", "--no-email")

    user = User.objects.get()
    assert user.check_password("correct horse battery")
    assert "correct horse" not in output and "short" not in output
    assert "Password set." in output
