"""The email provider's tracking webhook (Postmark's format through anymail): each stored email
learns whether it was delivered, bounced, rejected, complained about or deferred, and an access
email that could not reach its address raises an alert. Every bad request changes nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Alert, OrderEvent, OutboundEmail
from tests.fixtures.tracking import event_for, fulfilled_with_sent_email, iso, post_tracking

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(tracking, django_capture_on_commit_callbacks):
    return fulfilled_with_sent_email(django_capture_on_commit_callbacks)


def snapshot(email: OutboundEmail) -> tuple:
    email.refresh_from_db()
    return (email.delivery, email.delivery_at, email.delivery_detail, Alert.objects.count(), OrderEvent.objects.count())


@pytest.mark.parametrize(
    ("record", "kind", "stored"),
    [
        ("Delivery", "", "delivered"),
        ("Bounce", "HardBounce", "bounced"),
        ("Bounce", "BadEmailAddress", "rejected"),
        ("SpamComplaint", "SpamComplaint", "complained"),
        ("Bounce", "Transient", "deferred"),
    ],
)
def test_it_records_each_delivery_outcome_on_the_email_with_its_time(client, sent, record, kind, stored):
    order, email = sent
    at = timezone.now().replace(microsecond=0) - timedelta(minutes=3)
    time_field = "DeliveredAt" if record == "Delivery" else "BouncedAt"

    response = post_tracking(client, event_for(email, record, kind, **{time_field: iso(at)}))

    assert response.status_code == 200 and response.json()["outcome"] == "recorded"
    email.refresh_from_db()
    assert email.delivery == stored and email.delivery_at == at
    assert order.events.filter(kind=f"email:{stored}", actor="esp:tracking").exists()


def test_a_bounced_confirmation_raises_one_alert_for_support(client, sent, mailoutbox):
    order, email = sent

    post_tracking(client, event_for(email))
    post_tracking(client, event_for(email))  # Postmark retries: still one alert

    alert = Alert.objects.get(reason=Alert.Reason.ACCESS_BOUNCED)
    assert alert.order == order and email.to in alert.message and "550 5.1.1" in alert.message
    assert OutboundEmail.objects.filter(kind="alert").count() == 1


def test_a_delivered_or_deferred_email_raises_no_alert(client, sent):
    _order, email = sent
    post_tracking(client, event_for(email, "Bounce", "Transient"))
    post_tracking(client, event_for(email, "Delivery"))
    assert not Alert.objects.exists()


def test_older_news_and_a_late_deferral_do_not_overwrite_what_we_know(client, sent):
    _order, email = sent
    now = timezone.now().replace(microsecond=0)
    post_tracking(client, event_for(email, "Bounce", "HardBounce", BouncedAt=iso(now)))

    older = post_tracking(client, event_for(email, "Delivery", DeliveredAt=iso(now - timedelta(minutes=5))))
    deferral = post_tracking(client, event_for(email, "Bounce", "Transient", BouncedAt=iso(now + timedelta(minutes=1))))

    assert older.json()["outcome"] == deferral.json()["outcome"] == "stale"
    email.refresh_from_db()
    assert email.delivery == "bounced" and email.delivery_at == now


def test_opens_and_clicks_are_answered_and_ignored(client, sent):
    _order, email = sent
    before = snapshot(email)
    response = post_tracking(client, event_for(email, "Open", "", Recipient=email.to, ReceivedAt=iso()))
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert snapshot(email) == before


# --- bad input: a clear answer, nothing changed, nothing leaked ---------------------------


@pytest.mark.parametrize("secret", [None, "postmark:wrong", "someone:tr4cking-s3cret"])
def test_missing_or_wrong_credentials_are_refused(client, sent, secret):
    _order, email = sent
    before = snapshot(email)
    response = post_tracking(client, event_for(email), secret=secret)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Basic")
    assert response.json() == {"outcome": "refused", "detail": "missing or wrong credentials"}
    assert snapshot(email) == before


def test_with_no_secret_configured_the_endpoint_is_off_not_open(client, sent, settings):
    _order, email = sent
    settings.ANYMAIL = {}
    before = snapshot(email)
    response = post_tracking(client, event_for(email))
    assert response.status_code == 403 and "not configured" in response.json()["detail"]
    assert snapshot(email) == before


@pytest.mark.parametrize("body", ["{not json", b"\xff\xfe", "[]", '"Bounce"', "null"])
def test_malformed_bodies_are_refused(client, sent, body):
    _order, email = sent
    before = snapshot(email)
    response = post_tracking(client, body)
    assert response.status_code == 400 and response.json()["outcome"] == "refused"
    assert snapshot(email) == before


def test_an_oversized_body_is_refused_before_it_is_read(client, sent, settings):
    _order, email = sent
    settings.WEBHOOK_MAX_BODY_BYTES = 2000
    before = snapshot(email)
    response = post_tracking(client, event_for(email, Details="x" * 3000))
    assert response.status_code == 413 and response.json()["detail"] == "body too large"
    assert snapshot(email) == before


def test_an_unknown_message_id_is_answered_and_changes_nothing(client, sent):
    _order, email = sent
    before = snapshot(email)
    body = event_for(email, MessageID="pm-nobody-knows", Metadata={})
    response = post_tracking(client, body)
    assert response.status_code == 200 and response.json()["outcome"] == "unknown"
    assert snapshot(email) == before


def test_an_event_with_no_message_id_is_answered_and_changes_nothing(client, sent):
    _order, email = sent
    before = snapshot(email)
    response = post_tracking(client, {"RecordType": "Bounce", "Type": 5, "Email": email.to})
    assert response.status_code == 200 and response.json()["outcome"] == "unknown"
    assert snapshot(email) == before


def test_an_event_before_the_send_was_stored_asks_the_esp_to_come_back(client, sent):
    _order, email = sent
    OutboundEmail.objects.filter(pk=email.pk).update(provider_message_id="")
    body = event_for(email, MessageID="pm-not-stored-yet")
    response = post_tracking(client, body)
    assert response.status_code == 409 and response.json()["outcome"] == "not_yet"


def test_an_event_naming_another_order_changes_nothing(client, sent, django_capture_on_commit_callbacks):
    order, email = sent
    other, other_email = fulfilled_with_sent_email(django_capture_on_commit_callbacks)
    before, other_before = snapshot(email), snapshot(other_email)

    # email's message id, but the other order's reference and row in the metadata
    body = event_for(email, Metadata={"order_reference": other.reference, "outbound_email_id": str(other_email.pk)})
    response = post_tracking(client, body)

    assert response.status_code == 400 and response.json()["outcome"] == "mismatch"
    assert snapshot(email) == before and snapshot(other_email) == other_before
    assert other.reference not in response.content.decode() and other.email not in response.content.decode()


def test_an_event_for_another_recipient_changes_nothing(client, sent):
    _order, email = sent
    before = snapshot(email)
    response = post_tracking(client, event_for(email, Email="someone.else@example.com"))
    assert response.status_code == 400 and response.json()["outcome"] == "mismatch"
    assert snapshot(email) == before


def test_get_is_not_allowed(client, sent):
    assert client.get("/anymail/postmark/tracking/").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_the_dev_command_plays_a_bounce_through_the_live_site(live_server, tracking, settings, capsys):
    """`manage.py email_event` posts over HTTP as Postmark would (transactional: the live server
    must see the email)."""
    from django.core.management import call_command

    from billing.models import Order
    from tests.factories import OrderFactory

    settings.SITE_URL = live_server.url
    order = OrderFactory(email="dev@gmial.com")
    Order.objects.filter(pk=order.pk).update(state="fulfilled")
    email = OutboundEmail.objects.create(
        order=order,
        kind="confirmation",
        to=order.email,
        subject="s",
        body_text="t",
        body_html="h",
        status="sent",
        provider_message_id="pm-dev-1",
    )
    call_command("email_event", "bounce", "--to", "dev@gmial.com")
    assert '"outcome": "recorded"' in capsys.readouterr().out
    email.refresh_from_db()
    assert email.delivery == "bounced"
