"""A bounced access email, end to end without a browser: the alert, the queue row, the
diagnosis, and the order page that lets the paying browser correct the address once, which
moves the access and sends a fresh sign-in link. Anyone else learns and changes nothing."""

import html

import pytest
from django.urls import reverse

from accounts.models import User
from billing import email_change
from billing.models import Alert, Order, OrderEvent, OutboundEmail
from support import queue
from support.diagnosis import diagnose
from tests.factories import UserFactory
from tests.fixtures.console import staff
from tests.fixtures.services import give_cookie
from tests.fixtures.tracking import event_for, fulfilled_with_sent_email, post_tracking

pytestmark = pytest.mark.django_db


@pytest.fixture
def bounced(client, tracking, django_capture_on_commit_callbacks):
    """A fulfilled order whose confirmation to a mistyped address bounced (through the webhook)."""
    order, email = fulfilled_with_sent_email(django_capture_on_commit_callbacks, email="jane@gmial.com")
    assert post_tracking(client, event_for(email)).json()["outcome"] == "recorded"
    order.refresh_from_db()
    return order


def correct(client, order, email, **kwargs):
    return client.post(reverse("billing:correct_email", args=[order.reference]), {"email": email}, **kwargs)


def test_support_sees_the_bounce_in_the_queue_and_the_diagnosis(bounced):
    row = next(r for r in queue.build(staff("rita@paidup.example", "Support")).rows if r.key == "bounced")
    assert row.title == "Access email bounced" and row.count == 1
    assert bounced.reference in row.items[0].title

    diagnosis = diagnose(bounced)
    assert diagnosis.code == "access_email_bounced"
    assert "jane@gmial.com could not be reached" in diagnosis.sentence and "550 5.1.1" in diagnosis.sentence


def test_the_paying_browser_is_told_and_offered_the_correction(client, bounced):
    give_cookie(client, bounced.reference)
    page = html.unescape(client.get(reverse("billing:order", args=[bounced.reference])).content.decode())
    assert "We couldn't reach jane@gmial.com." in page
    assert reverse("billing:correct_email", args=[bounced.reference]) in page


def test_a_stranger_sees_no_bounce_and_no_form(client, bounced):
    page = client.get(reverse("billing:order", args=[bounced.reference])).content.decode()
    assert "couldn't reach" not in page and "correct_email" not in page and "/email/" not in page


def test_the_correction_moves_the_access_and_sends_a_fresh_link(client, bounced, django_capture_on_commit_callbacks):
    give_cookie(client, bounced.reference)
    with django_capture_on_commit_callbacks(execute=True):
        response = correct(client, bounced, " Jane@Gmail.com ")

    assert response.status_code == 302 and response["Location"].endswith("?corrected=1")
    bounced.refresh_from_db()
    assert bounced.email == "jane@gmail.com" and bounced.customer_email_corrected_at is not None
    assert bounced.subscription.user.email == "jane@gmail.com"
    link = OutboundEmail.objects.get(kind="signin")
    assert link.to == "jane@gmail.com" and link.status == "sent"
    changed = bounced.events.get(kind="email:changed")
    assert (
        changed.actor == "customer"
        and changed.data["from"] == "jane@gmial.com"
        and changed.data["to"] == "jane@gmail.com"
    )
    assert not Alert.objects.filter(reason=Alert.Reason.ACCESS_BOUNCED, resolved_at__isnull=True).exists()
    assert diagnose(bounced).code != "access_email_bounced"
    page = html.unescape(client.get(response["Location"]).content.decode())
    assert "We've sent a new sign-in link to <strong>jane@gmail.com</strong>" in page and "couldn't reach" not in page


def test_the_customer_can_correct_only_once(client, bounced, django_capture_on_commit_callbacks):
    give_cookie(client, bounced.reference)
    with django_capture_on_commit_callbacks(execute=True):
        correct(client, bounced, "jane@gmail.com")
    # the corrected address bounces too
    link = OutboundEmail.objects.get(kind="signin")
    post_tracking(client, event_for(link))
    bounced.refresh_from_db()
    assert diagnose(bounced).code == "access_email_bounced"  # support still sees it

    response = correct(client, bounced, "jane@example.com")

    assert response.status_code == 400
    assert "already corrected once" in response.content.decode()
    bounced.refresh_from_db()
    assert bounced.email == "jane@gmail.com" and OutboundEmail.objects.filter(kind="signin").count() == 1


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("not-an-address", "doesn't look like an email address"),
        ("", "Please enter the email address"),
        ("a" * 250 + "@x.com", "doesn't look like an email address"),
        ("JANE@gmial.com", "already this order's email"),
    ],
)
def test_bad_corrections_change_nothing(client, bounced, typed, says):
    give_cookie(client, bounced.reference)
    before = (OrderEvent.objects.count(), OutboundEmail.objects.count(), User.objects.count())
    response = correct(client, bounced, typed)
    assert response.status_code == 400 and says in html.unescape(response.content.decode())
    bounced.refresh_from_db()
    assert bounced.email == "jane@gmial.com" and bounced.customer_email_corrected_at is None
    assert (OrderEvent.objects.count(), OutboundEmail.objects.count(), User.objects.count()) == before


def test_without_the_cookie_the_correction_is_refused_and_leaks_nothing(client, bounced):
    before = OrderEvent.objects.count()
    response = correct(client, bounced, "attacker@example.com")
    assert response.status_code == 403
    page = response.content.decode()
    assert "jane@gmial.com" not in page and bounced.reference not in page and bounced.price not in page
    bounced.refresh_from_db()
    assert bounced.email == "jane@gmial.com" and OrderEvent.objects.count() == before


def test_another_orders_cookie_does_not_open_this_one(client, bounced, django_capture_on_commit_callbacks):
    mine, _ = fulfilled_with_sent_email(django_capture_on_commit_callbacks)
    give_cookie(client, mine.reference)
    assert correct(client, bounced, "attacker@example.com").status_code == 403
    bounced.refresh_from_db()
    assert bounced.email == "jane@gmial.com"


def test_an_order_whose_email_did_not_bounce_cannot_be_corrected_by_the_customer(
    client, tracking, django_capture_on_commit_callbacks
):
    order, email = fulfilled_with_sent_email(django_capture_on_commit_callbacks)
    post_tracking(client, event_for(email, "Delivery"))
    give_cookie(client, order.reference)
    response = correct(client, order, "someone.else@example.com")
    assert response.status_code == 400 and "nothing to correct" in response.content.decode()
    order.refresh_from_db()
    assert order.email == email.to


def test_without_the_cookie_real_and_made_up_references_get_the_same_answer(client, bounced):
    """The form must not tell which orders exist: no cookie, the same 403 and page for all."""
    answers = [
        client.post(f"/orders/{reference}/email/", {"email": "a@b.co"})
        for reference in (bounced.reference, "PU-ZZZZZZ", "nonsense")
    ]
    assert [a.status_code for a in answers] == [403, 403, 403]
    assert len({a.content for a in answers}) == 1
    assert client.get("/orders/PU-ZZZZZZ/email/").status_code == 405


def test_a_cookie_for_a_reference_with_no_order_is_404(client):
    give_cookie(client, "PU-ZZZZZZ")
    assert client.post("/orders/PU-ZZZZZZ/email/", {"email": "a@b.co"}).status_code == 404


def test_the_customers_form_does_not_say_whose_address_it_refuses(client, bounced):
    UserFactory(email="boss@paidup.example", is_staff=True)
    give_cookie(client, bounced.reference)
    response = correct(client, bounced, "boss@paidup.example")
    page = html.unescape(response.content.decode())
    assert response.status_code == 400 and "We can't send your access to that address" in page
    assert "staff" not in page
    bounced.refresh_from_db()
    assert bounced.email == "jane@gmial.com" and bounced.customer_email_corrected_at is None


def test_the_bounced_page_does_not_promise_a_link_at_the_refused_address(client, bounced):
    give_cookie(client, bounced.reference)
    page = html.unescape(client.get(f"/orders/{bounced.reference}/").content.decode())
    assert "is on its way to" not in page and "it goes to the same address" not in page


def test_joining_an_existing_account_keeps_its_other_access(bounced):
    existing = UserFactory(email="jane@gmail.com")
    change = email_change.change_email(bounced, "jane@gmail.com", actor="support:rita")
    assert change.joined_existing and User.objects.filter(email="jane@gmail.com").count() == 1
    assert bounced.subscription.__class__.objects.get(order=bounced).user == existing
    old = User.objects.get(email="jane@gmial.com")
    assert not old.subscriptions.exists()


@pytest.mark.parametrize("kind", ["staff", "inactive"])
def test_access_never_moves_into_a_staff_or_closed_account(bounced, kind):
    UserFactory(email="boss@paidup.example", is_staff=kind == "staff", is_active=kind != "inactive")
    with pytest.raises(email_change.EmailChangeRefused, match="staff or closed"):
        email_change.change_email(bounced, "boss@paidup.example", actor="support:rita")
    assert Order.objects.get(pk=bounced.pk).email == "jane@gmial.com"


def test_the_console_order_page_shows_the_bounce_and_suggests_change_email(bounced):
    from tests.fixtures.console import act_url, change_url, client_for

    rita = client_for(staff("rita@paidup.example", "Support"))
    text = html.unescape(rita.get(change_url(bounced)).content.decode())
    assert 'class="pu-delivery pu-delivery-bounced"' in text and "550 5.1.1" in text
    assert "jane@gmial.com could not be reached" in text
    assert act_url(bounced, "email") in text
