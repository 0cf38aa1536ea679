"""One spelling per email address at every way in, identical on SQLite and PostgreSQL.

The example is non-ASCII and in another case on purpose: SQLite's UPPER/LOWER (and so
`iexact`) fold ASCII only, so `jon@BÜCHER.example` never met `jon@bücher.example` there.
"""

import importlib
import unicodedata

import pytest
from django.apps import apps
from django.contrib.admin.sites import site
from django.core.management import call_command
from django.db import connection

from accounts.addresses import normalize_email
from accounts.models import User
from billing import reconciliation
from billing.fulfilment import fulfil
from billing.models import Order, OutboundEmail, Subscription
from support.action_forms import AttachForm
from support.models import SupportCase
from tests.factories import OrderFactory, UserFactory, payment_intent
from tests.fixtures.services import CARD

pytestmark = pytest.mark.django_db

TYPED = "Jon@BÜCHER.example"
NORMAL = "jon@bücher.example"
# The same address as another keyboard may send it: u + combining diaeresis.
DECOMPOSED = unicodedata.normalize("NFD", "JON@Bücher.Example")


def test_the_normal_form():
    assert normalize_email(f"  {TYPED} ") == NORMAL
    assert normalize_email(DECOMPOSED) == NORMAL
    assert normalize_email("Straße@Example.com") == "straße@example.com"  # not casefold(): ß is not ss
    assert normalize_email("jon@ﬁsh.example") == "jon@fish.example"  # NFKC, as IDNA and Django's User.clean()
    assert normalize_email(None) == normalize_email("") == ""


def test_the_database_holds_and_finds_only_the_normal_form():
    user = UserFactory(email=TYPED)
    user.refresh_from_db()
    assert user.email == NORMAL
    assert User.objects.get(email=DECOMPOSED) == user
    assert User.objects.get_by_natural_key("JON@BÜCHER.EXAMPLE") == user
    order = OrderFactory(email=TYPED)
    assert Order.objects.filter(email=NORMAL).get() == order
    assert Order.objects.filter(email__in=[DECOMPOSED]).get() == order


def test_checkout_stores_the_normal_form(client, plan, fake_stripe, django_capture_on_commit_callbacks):
    client.get("/checkout/")
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/checkout/", {"email": f" {TYPED} ", "payment_method": CARD})
    order = Order.objects.get()
    assert order.email == NORMAL and order.subscription.user.email == NORMAL


@pytest.mark.parametrize("email", ["", "jon@", "not an email", "jon@bü cher.example"])
def test_checkout_refuses_a_bad_address_and_stores_nothing(client, plan, fake_stripe, email):
    client.get("/checkout/")
    response = client.post("/checkout/", {"email": email, "payment_method": CARD})
    assert response.status_code == 400 and not Order.objects.exists() and not fake_stripe.created


def test_sign_in_finds_the_account_typed_in_another_case(client, mailoutbox, django_capture_on_commit_callbacks):
    UserFactory(email=NORMAL)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/account/sign-in/", {"email": TYPED})
    assert response.status_code == 200
    assert OutboundEmail.objects.get(kind="signin").to == NORMAL
    assert [m.to for m in mailoutbox] == [[NORMAL]]


@pytest.mark.parametrize("email", ["", "jon@", "jon"])
def test_sign_in_refuses_a_bad_address_and_sends_nothing(client, email):
    UserFactory(email=NORMAL)
    response = client.post("/account/sign-in/", {"email": email})
    assert response.status_code == 200 and response.context["form"].errors
    assert not OutboundEmail.objects.exists()


def test_charged_page_finds_the_paid_order_typed_in_another_case(
    client, fake_stripe, mailoutbox, django_capture_on_commit_callbacks
):
    order = OrderFactory(email=NORMAL)
    pi = fake_stripe.pay_elsewhere(email=NORMAL, metadata={"order_id": str(order.id), "email": NORMAL})
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id, stripe_payment_status="succeeded")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/help/charged/", {"email": TYPED}, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200
    order.refresh_from_db()
    assert order.state == "fulfilled"
    assert [m.to for m in mailoutbox] == [[NORMAL]] and not SupportCase.objects.exists()


def test_charged_page_reopens_the_same_case_in_another_case(client, fake_stripe, django_capture_on_commit_callbacks):
    for typed in (TYPED, DECOMPOSED):
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/help/charged/", {"email": typed}, REMOTE_ADDR="203.0.113.9")
    case = SupportCase.objects.get()
    assert case.email == NORMAL and "Asked again" in case.diagnosis


def test_charged_page_still_searches_stripe_as_typed(client, fake_stripe, plan, django_capture_on_commit_callbacks):
    """Stripe's customer email filter is case-sensitive: a Payment Link customer saved as typed."""
    pi = fake_stripe.pay_elsewhere(email=TYPED)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/help/charged/", {"email": TYPED}, REMOTE_ADDR="203.0.113.9")
    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert order.email == NORMAL and order.state == "fulfilled"


def test_fulfilment_gives_access_to_the_existing_account(plan, django_capture_on_commit_callbacks):
    user = UserFactory(email=DECOMPOSED)
    order = OrderFactory(email=TYPED)
    fulfil(order, via="webhook", payment_intent=payment_intent(order))
    assert Subscription.objects.get(order=order).user == user and User.objects.count() == 1


def test_reconciliation_adopts_a_stripe_customer_email_in_the_normal_form(
    plan, fake_stripe, django_capture_on_commit_callbacks
):
    user = UserFactory(email=NORMAL)
    pi = fake_stripe.pay_elsewhere(email=TYPED)
    with django_capture_on_commit_callbacks(execute=True):
        reconciliation.run()
    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert order.email == NORMAL and order.subscription.user == user


def test_support_search_finds_the_order_typed_in_another_case(plan):
    order = OrderFactory(email=NORMAL)
    OrderFactory(email="someone@else.example")
    admin = site._registry[Order]
    found, _ = admin.get_search_results(None, Order.objects.all(), TYPED)
    assert list(found) == [order]


def test_admin_free_text_search_finds_a_part_typed_in_another_case(plan):
    user, order = UserFactory(email=NORMAL), OrderFactory(email=NORMAL)
    UserFactory(email="someone@else.example")
    found, _ = site._registry[User].get_search_results(None, User.objects.all(), "BÜCHER")
    assert list(found) == [user]
    found, _ = site._registry[Order].get_search_results(None, Order.objects.all(), "BÜCHER")
    assert list(found) == [order]


def test_support_attach_form_normalises_the_address():
    form = AttachForm({"stripe_id": "pi_123", "email": TYPED})
    assert form.is_valid() and form.cleaned_data["email"] == NORMAL
    assert not AttachForm({"stripe_id": "pi_123", "email": "jon@"}).is_valid()


def test_the_user_admin_refuses_a_second_account_in_another_case():
    UserFactory(email=NORMAL)
    admin_ = site._registry[User]
    form_class = admin_.get_form(None, obj=None, fields=["email", "password1", "password2"])
    form = form_class({"email": TYPED, "password1": "x-Long-enough-9", "password2": "x-Long-enough-9"})
    assert not form.is_valid() and "email" in form.errors
    assert User.objects.count() == 1


def test_createsuperuser_stores_the_normal_form():
    call_command("createsuperuser", "--email", TYPED, "--noinput", verbosity=0)
    assert User.objects.get().email == NORMAL


def test_the_migration_normalises_users_and_leaves_collisions_for_a_person(capsys):
    """Rows written before this change, put there with raw SQL (the field would normalise them)."""
    kept = UserFactory(email="ana@example.com")
    variant = UserFactory(email="other@example.com")
    lone = UserFactory(email="lone@example.com")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_user SET email = %s WHERE id = %s", ["Ana@Example.com", variant.pk])
        cursor.execute("UPDATE accounts_user SET email = %s WHERE id = %s", [TYPED, lone.pk])
    migration = importlib.import_module("accounts.migrations.0002_normalized_email")
    migration.normalize_users(apps, None)
    emails = dict(User.objects.values_list("pk", "email"))
    assert emails[kept.pk] == "ana@example.com"
    assert emails[variant.pk] == "Ana@Example.com"  # two accounts for one person: merged by hand
    assert emails[lone.pk] == NORMAL
    assert f"user {variant.pk} ('Ana@Example.com') left as it is" in capsys.readouterr().out


def test_the_migration_normalises_orders_and_cases():
    order = OrderFactory(email="x@example.com")
    case = SupportCase.objects.create(email="y@example.com")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_order SET email = %s WHERE id = %s", [TYPED, order.pk.hex])
        cursor.execute("UPDATE support_supportcase SET email = %s WHERE id = %s", [DECOMPOSED, case.pk])
    importlib.import_module("billing.migrations.0010_normalized_email").normalize_orders(apps, None)
    importlib.import_module("support.migrations.0006_case_email_normal_form").normalize_cases(apps, None)
    assert list(Order.objects.values_list("email", flat=True)) == [NORMAL]
    assert list(SupportCase.objects.values_list("email", flat=True)) == [NORMAL]
