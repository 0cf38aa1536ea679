"""The console's "Change email": its own permission, a confirmation step that shows the old and
new address (and says when the new one already has an account), then the change, with both
addresses in the timeline and in the admin log. Bad input changes nothing."""

import html
import importlib

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group

from accounts.models import User
from billing.models import Order, OrderEvent, OutboundEmail
from tests.factories import OrderFactory, UserFactory
from tests.fixtures.console import act_url, change_url, client_for, fulfilled_order, staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(stripe_api):
    return fulfilled_order(stripe_api, email="jane@gmial.com")


@pytest.fixture
def rita(db):
    return client_for(staff("rita@paidup.example", "Support", perms=("billing.change_order_email",)))


def page(response) -> str:
    return html.unescape(response.content.decode())


def unchanged(order: Order) -> tuple:
    order.refresh_from_db()
    return (order.email, order.subscription.user.email, OrderEvent.objects.count(), OutboundEmail.objects.count())


def test_the_support_group_may_change_emails():
    """What migration support 0011 does, run again on the models as they stood then (a
    transactional test elsewhere may have flushed its rows; the global app registry must not be
    used: the migration switches each app's models_module off after creating permissions)."""
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    state = MigrationLoader(connection).project_state(("support", "0011_change_email_permission"))
    importlib.import_module("support.migrations.0011_change_email_permission").grant(state.apps, None)
    assert Group.objects.get(name="Support").permissions.filter(codename="change_order_email").exists()


def test_without_the_permission_there_is_no_button_and_no_way_in(order):
    viewer = client_for(staff("val@paidup.example", perms=("billing.view_order",)))
    assert act_url(order, "email") not in viewer.get(change_url(order)).content.decode()
    before = unchanged(order)
    assert viewer.get(act_url(order, "email")).status_code == 403
    assert viewer.post(act_url(order, "email"), {"new_email": "x@example.com"}).status_code == 403
    assert unchanged(order) == before


def test_the_first_post_shows_old_and_new_and_changes_nothing(order, rita):
    before = unchanged(order)
    response = rita.post(act_url(order, "email"), {"new_email": "Jane@Gmail.com"})
    assert response.status_code == 200
    text = page(response)
    assert 'id="pu-old-email">jane@gmial.com<' in text and 'id="pu-new-email">jane@gmail.com<' in text
    assert "has no account yet" in text and "Yes, change email" in text
    assert 'name="confirmed_email" value="jane@gmail.com"' in text
    assert unchanged(order) == before


def test_confirming_changes_it_with_both_addresses_in_the_timeline_and_the_admin_log(order, rita):
    response = rita.post(act_url(order, "email"), {"new_email": "jane@gmail.com", "confirmed_email": "jane@gmail.com"})

    assert response.status_code == 302
    order.refresh_from_db()
    assert order.email == "jane@gmail.com" and order.subscription.user.email == "jane@gmail.com"
    event = order.events.get(kind="email:changed")
    assert event.actor == "support:rita@paidup.example"
    assert "from jane@gmial.com to jane@gmail.com" in event.message
    log = LogEntry.objects.get(object_id=str(order.pk))
    assert "jane@gmial.com" in log.change_message and "jane@gmail.com" in log.change_message
    assert OutboundEmail.objects.filter(kind="signin", to="jane@gmail.com").count() == 1


def test_an_address_edited_after_the_confirmation_is_shown_again(order, rita):
    before = unchanged(order)
    response = rita.post(act_url(order, "email"), {"new_email": "jane@yahoo.com", "confirmed_email": "jane@gmail.com"})
    assert response.status_code == 200 and 'id="pu-new-email">jane@yahoo.com<' in page(response)
    assert unchanged(order) == before


def test_another_customers_address_is_allowed_and_the_confirmation_says_it_joins_their_account(order, rita, stripe_api):
    other = fulfilled_order(stripe_api, email="jane@gmail.com")
    response = rita.post(act_url(order, "email"), {"new_email": "jane@gmail.com"})
    text = page(response)
    assert "jane@gmail.com already has an account" in text
    assert f"with access until {other.subscription.ends_at:%-d %b %Y}" in text

    rita.post(act_url(order, "email"), {"new_email": "jane@gmail.com", "confirmed_email": "jane@gmail.com"})
    order.refresh_from_db()
    assert order.subscription.user == other.subscription.user
    assert User.objects.filter(email="jane@gmail.com").count() == 1
    assert order.events.get(kind="email:changed").data["joined_existing"] is True


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("not an address", "That is not an email address"),
        ("", "This field is required"),
        ("JANE@gmial.com", "already this order's email"),
        ("boss@paidup.example", "staff or closed account"),
    ],
)
def test_bad_addresses_are_refused_and_change_nothing(order, rita, typed, says):
    UserFactory(email="boss@paidup.example", is_staff=True)
    before = unchanged(order)
    for confirmed in ("", typed):
        response = rita.post(act_url(order, "email"), {"new_email": typed, "confirmed_email": confirmed})
        assert response.status_code == 400 and says in page(response)
    assert unchanged(order) == before
    assert not LogEntry.objects.filter(object_id=str(order.pk)).exists()


def test_an_order_with_no_access_cannot_have_its_access_moved(plan, rita):
    pending = OrderFactory(email="p@example.com", plan=plan)
    response = rita.post(act_url(pending, "email"), {"new_email": "q@example.com", "confirmed_email": "q@example.com"})
    assert response.status_code == 400 and "no access to move" in page(response)
    pending.refresh_from_db()
    assert pending.email == "p@example.com"


def test_a_paid_order_not_yet_fulfilled_only_changes_its_address(stripe_api, rita):
    from tests.fixtures.console import paid_order

    order = paid_order(stripe_api, email="sam@gmial.com")
    response = rita.post(act_url(order, "email"), {"new_email": "sam@gmail.com", "confirmed_email": "sam@gmail.com"})
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.email == "sam@gmail.com" and order.state == "paid"
    assert not User.objects.filter(email="sam@gmail.com").exists()  # fulfilment makes the account
    assert not OutboundEmail.objects.filter(kind="signin").exists()
    assert "fulfilling it sends the access email there" in LogEntry.objects.get(object_id=str(order.pk)).change_message
