"""A bounce arriving through the tracking webhook at the same moment as the correction that
resends the access email (PostgreSQL, real threads: tests/test_races.py).

Both lock the order row before they look at its address (billing/delivery.py,
billing/email_change.py), so whichever wins, the end is the same: the order has the corrected
address and a fresh sign-in link to it, the bounce is recorded on the email it was about, and no
"Access email bounced" alert is left open for an order that is no longer unreachable."""

import time

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from accounts.models import User
from accounts.signin import send_signin_link
from billing import delivery
from billing.delivery import unreachable_access_email
from billing.models import Alert, OutboundEmail
from tests.fixtures.services import give_cookie
from tests.fixtures.tracking import event_for, fulfilled_with_sent_email, post_tracking
from tests.test_races import race, run_together

ROUNDS = 4
LAG = 0.2  # between the webhook finding the order and locking it: the window a correction could use


@pytest.fixture
def slow_lookup(monkeypatch):
    """Widen the race: the webhook finds the email's order, then waits before it locks it."""
    find = delivery.order_of

    def order_of(email):
        order = find(email)
        time.sleep(LAG)
        return order

    monkeypatch.setattr(delivery, "order_of", order_of)


@race
def test_a_bounce_and_the_customers_correction_at_once_leave_no_stale_alert(
    plan, tracking, slow_lookup, django_capture_on_commit_callbacks
):
    for n in range(ROUNDS):
        old, new = f"jane{n}@gmial.com", f"jane{n}@gmail.com"
        order, confirmation = fulfilled_with_sent_email(django_capture_on_commit_callbacks, email=old, plan=plan)
        with transaction.atomic():  # the customer also asked the sign-in page for a link, to the same typo
            send_signin_link(User.objects.get(email=old))
        link = OutboundEmail.objects.get(kind="signin", to=old)
        assert link.provider_message_id
        assert post_tracking(Client(), event_for(confirmation)).json()["outcome"] == "recorded"
        browser = Client()
        give_cookie(browser, order.reference)

        body, url = event_for(link), reverse("billing:correct_email", args=[order.reference])
        webhook, correction = run_together(
            lambda body=body: post_tracking(Client(), body),
            lambda b=browser, url=url, e=new: b.post(url, {"email": e}),
        )

        assert webhook.status_code == 200 and webhook.json()["outcome"] == "recorded"
        assert correction.status_code == 302
        order.refresh_from_db()
        assert order.email == new and order.subscription.user.email == new
        link.refresh_from_db()
        assert link.delivery == "bounced"
        assert not Alert.objects.filter(order=order, reason=Alert.Reason.ACCESS_BOUNCED, resolved_at__isnull=True)
        assert OutboundEmail.objects.filter(kind="signin", to=new).count() == 1
        assert unreachable_access_email(order) is None


@race
def test_the_same_bounce_delivered_twice_at_once_raises_one_alert(plan, tracking, django_capture_on_commit_callbacks):
    order, confirmation = fulfilled_with_sent_email(django_capture_on_commit_callbacks, plan=plan)
    body = event_for(confirmation)

    answers = run_together(*[lambda: post_tracking(Client(), body) for _ in range(3)])

    assert sorted(a.json()["outcome"] for a in answers)[0] == "recorded"
    assert Alert.objects.filter(order=order, reason=Alert.Reason.ACCESS_BOUNCED).count() == 1
    assert OutboundEmail.objects.filter(kind="alert").count() == 1
