"""Emails through an outbox: render once, store, send by a django-q2 task, retry with backoff.

One function per email. The row is created inside the caller's transaction and handed to
the worker with transaction.on_commit, so an email exists if and only if its cause committed.
A scheduled sweep (`send_due_emails`) picks up anything whose hand-off was lost.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone
from django_q.tasks import async_task

from .failpoints import failpoint
from .models import Order, OutboundEmail
from .models.orders import format_money

logger = logging.getLogger(__name__)

SEND_TASK = "billing.emails.send_outbound_email"
# A row left in "sending" this long was interrupted mid-send (worker killed).
STALE_SENDING = timedelta(minutes=10)


def support_email() -> str:
    return settings.SUPPORT_EMAILS[0]


def render_email(template: str, context: dict) -> tuple[str, str, str]:
    context = {"support_email": support_email(), "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"emails/{template}_subject.txt", context).strip()
    text = render_to_string(f"emails/{template}.txt", context)
    html = render_to_string(f"emails/{template}.html", context)
    return " ".join(subject.split()), text, html


def queue_order_email(order: Order, kind: str, *, user=None) -> OutboundEmail | None:
    """Queue one of the order's emails. A second email of the same kind is refused by the
    database, and a second access email (confirmation or recovery) too; both return None."""
    from accounts.signin import signin_url

    context = {"order": order, "plan": order.plan, "refunded": format_money(order.refunded_cents, order.currency)}
    if user is not None:
        context["signin_url"] = signin_url(user)
        context["subscription"] = getattr(order, "subscription", None)
    subject, text, html = render_email(kind, context)
    try:
        with transaction.atomic():
            email = OutboundEmail.objects.create(
                order=order, kind=kind, to=order.email, subject=subject, body_text=text, body_html=html
            )
    except IntegrityError:
        logger.info("order %s already has its %s email; not queuing another", order.reference, kind)
        return None
    order.log("email:queued", f"{email.get_kind_display()} email queued to {order.email}.", actor="system")
    transaction.on_commit(lambda: hand_off(email.pk))
    return email


def send_signin_link(user) -> OutboundEmail:
    from accounts.signin import signin_url

    subject, text, html = render_email("signin", {"user": user, "signin_url": signin_url(user)})
    email = OutboundEmail.objects.create(
        kind=OutboundEmail.Kind.SIGNIN, to=user.email, subject=subject, body_text=text, body_html=html
    )
    transaction.on_commit(lambda: hand_off(email.pk))
    return email


def hand_off(email_id: int) -> None:
    try:
        async_task(SEND_TASK, email_id, task_name=f"email-{email_id}")
    except Exception:  # the sweep will find it; never fail the request over this
        logger.exception("could not hand email %s to the queue", email_id)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2 ** (attempts - 1), 3600))


def claim(email_id: int) -> bool:
    """Move the row to "sending" if nobody else has; exactly one worker wins.

    The attempt is counted here, before sending, so that a send that kills its worker every
    time still runs out of attempts instead of being retried forever.
    """
    now = timezone.now()
    claimable = Q(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY]) | Q(
        status=OutboundEmail.Status.SENDING, next_attempt_at__lt=now - STALE_SENDING
    )
    return (
        OutboundEmail.objects.filter(claimable, pk=email_id, next_attempt_at__lte=now).update(
            status=OutboundEmail.Status.SENDING, next_attempt_at=now, attempts=F("attempts") + 1
        )
        == 1
    )


def send_outbound_email(email_id: int) -> str:
    """The q task. Returns what happened (shown in the q admin)."""
    if not claim(email_id):
        return "not claimable (already sent, being sent, or not due)"
    email = OutboundEmail.objects.select_related("order").get(pk=email_id)
    if email.attempts > settings.EMAIL_MAX_ATTEMPTS:  # earlier attempts died mid-send
        return _give_up(email, "the worker died while sending, every attempt")
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=email.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email.to],
        reply_to=[support_email()],
    )
    message.attach_alternative(email.body_html, "text/html")
    message.tags = [email.kind]
    message.metadata = {"outbound_email_id": str(email.pk)}
    if email.order_id:
        message.metadata["order_reference"] = email.order.reference
    try:
        failpoint("email_send")
        message.send()
    except Exception as error:
        failed = email.attempts >= settings.EMAIL_MAX_ATTEMPTS
        email.status = OutboundEmail.Status.FAILED if failed else OutboundEmail.Status.RETRY
        email.last_error = f"{type(error).__name__}: {error}"[:2000]
        email.next_attempt_at = timezone.now() + backoff(email.attempts)
        email.save(update_fields=["status", "attempts", "last_error", "next_attempt_at"])
        if email.order_id:
            email.order.log(
                "email:failed" if failed else "email:retry",
                f"Sending the {email.kind} email failed (attempt {email.attempts}): {email.last_error}",
                actor="system:email",
            )
        logger.warning("email %s attempt %s failed: %s", email.pk, email.attempts, email.last_error)
        return "failed" if failed else "will retry"
    status = getattr(message, "anymail_status", None)
    email.provider_message_id = str(status.message_id or "") if status else ""
    email.status = OutboundEmail.Status.SENT
    email.sent_at = timezone.now()
    email.last_error = ""
    email.save(update_fields=["status", "attempts", "provider_message_id", "sent_at", "last_error"])
    if email.order_id:
        email.order.log("email:sent", f"{email.get_kind_display()} email sent to {email.to}.", actor="system:email")
    return "sent"


def _give_up(email: OutboundEmail, error: str) -> str:
    email.status = OutboundEmail.Status.FAILED
    email.last_error = error
    email.save(update_fields=["status", "last_error"])
    if email.order_id:
        email.order.log("email:failed", f"Gave up on the {email.kind} email: {error}.", actor="system:email")
    return "failed"


def send_due_emails() -> int:
    """The scheduled sweep: send queued and retrying emails whose time has come."""
    now = timezone.now()
    due = OutboundEmail.objects.filter(
        Q(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY], next_attempt_at__lte=now)
        | Q(status=OutboundEmail.Status.SENDING, next_attempt_at__lt=now - STALE_SENDING)
    ).values_list("pk", flat=True)[:200]
    return sum(send_outbound_email(pk) == "sent" for pk in due)
