"""Sending the outbox: queue on commit, the send task, retries with backoff, the sweep.

A row is created inside the caller's transaction (outbox.emails) and handed to the worker by
`queue_on_commit`, the one place that calls transaction.on_commit for email, so an email exists
if and only if its cause committed. A scheduled sweep (`send_due_emails`) picks up anything whose
hand-off was lost.

Delivery is at least once, never at most once: a send whose outcome we cannot know (the
request went out and no answer came back, or the worker died mid-send) is retried, because a
lost access email is worse than a second copy. Every attempt of a row carries the same
Message-ID, and the same idempotency key for an ESP that honours one (billing.mail_backends),
so a second copy is as rare as the provider allows. An answer that says "never" (the ESP
refused the message itself) is not retried. docs/design.md, "Email attempts", lists the cases.

This module knows rows, not orders: an order's email writes to the order's timeline through
`order.log()` and nothing else (the outbox imports no order rules).
"""

import logging
from datetime import timedelta
from email.utils import parseaddr

import requests
from anymail.exceptions import AnymailInvalidAddress, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, make_msgid
from django.db import transaction
from django.db.models import Case, F, PositiveSmallIntegerField, Q, When
from django.utils import timezone
from django_q.tasks import async_task

# A standalone switch (it imports no model); the crash matrix kills the sender here.
from config.failpoints import failpoint

from .models import OutboundEmail

# One logger for the whole outbox (outbox.emails, billing.email_log use it too): what an operator
# greps for is "outbox".
logger = logging.getLogger("outbox")

# The django-q2 task every hand-off queues. Tasks queued before the outbox app existed carry
# "billing.emails.send_outbound_email", which still forwards here (billing/emails.py).
SEND_TASK = "outbox.sending.send_outbound_email"
# A row left in "sending" this long was interrupted mid-send (worker killed).
STALE_SENDING = timedelta(minutes=10)
# HTTP answers that refuse the message itself (malformed, too big, unprocessable): sending it
# again gets the same answer. 401/403 (our credentials), 408, 409 (Resend: same key in flight)
# and 429 are "not now", so they are retried.
REFUSED_STATUSES = frozenset({400, 413, 422})

# What a failed attempt tells us about delivery (failure_kind()).
REFUSED, NOT_SENT, UNKNOWN = "refused", "not_sent", "unknown"


def support_email() -> str:
    """The address customers reply to: the first of settings.SUPPORT_EMAILS."""
    return settings.SUPPORT_EMAILS[0]


def queue_on_commit(email: OutboundEmail, *, inline: bool = False) -> None:
    """Hand a freshly created row to its sender once the caller's transaction commits.

    The only caller of transaction.on_commit for email: a rolled-back cause leaves no email
    queued (the row rolls back with it), a committed one is sent. Normally the row goes to the
    q cluster (`hand_off`); with `inline=True` (the watchdog: the q cluster may be what died)
    this process sends the due rows of the email's kind itself, right after the commit
    (`send_due_now`). Returns nothing and raises nothing of its own.
    """
    if inline:
        transaction.on_commit(lambda kind=email.kind: send_due_now(kind))
    else:
        transaction.on_commit(lambda pk=email.pk: hand_off(pk))


def hand_off(email_id: int) -> None:
    """Queue the send task for row `email_id`. A broker that refuses is logged, not raised:
    the sweep (`send_due_emails`, every minute) sends the row instead."""
    try:
        async_task(SEND_TASK, email_id, task_name=f"email-{email_id}")
    except Exception:  # the sweep will find it; never fail the request over this
        logger.exception("could not hand email %s to the queue", email_id)


def backoff(attempts: int) -> timedelta:
    """How long to wait after failed attempt number `attempts` (1-based): 30 s doubling, at most 1 hour."""
    return timedelta(seconds=min(30 * 2 ** (attempts - 1), 3600))


def claim(email_id: int) -> bool:
    """Move the row to "sending" if nobody else has; exactly one worker wins.

    The attempt is counted here, before sending, so that a send that kills its worker every
    time still runs out of attempts instead of being retried forever. Taking over a stale
    "sending" row also counts the dead worker's attempt as uncertain: it may have delivered.
    Returns True when this caller won the row.
    """
    now = timezone.now()
    sending = OutboundEmail.Status.SENDING
    claimable = Q(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY]) | Q(
        status=sending, next_attempt_at__lt=now - STALE_SENDING
    )
    return (
        OutboundEmail.objects.filter(claimable, pk=email_id, next_attempt_at__lte=now).update(
            status=sending,
            next_attempt_at=now,
            attempts=F("attempts") + 1,
            uncertain_attempts=Case(
                When(status=sending, then=F("uncertain_attempts") + 1),
                default=F("uncertain_attempts"),
                output_field=PositiveSmallIntegerField(),
            ),
        )
        == 1
    )


def ensure_message_id(email: OutboundEmail) -> str:
    """The row's Message-ID (`<…@sender domain>`), made and committed on its first attempt,
    before any request, so every later attempt sends the same one. Returns it."""
    if not email.message_id:
        domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or None
        OutboundEmail.objects.filter(pk=email.pk, message_id="").update(
            message_id=make_msgid(idstring=f"outbox{email.pk}", domain=domain)
        )
        email.refresh_from_db(fields=["message_id"])
    return email.message_id


def failure_kind(error: BaseException) -> str:
    """What a failed send says about delivery: REFUSED, NOT_SENT or UNKNOWN.

    REFUSED: the ESP answered that it will never take this message (REFUSED_STATUSES, every
    recipient rejected) or anymail could not even address it. NOT_SENT: the ESP answered "not
    now" (another 4xx), or the connection was never made (requests' ConnectTimeout). UNKNOWN:
    anything else, above all a request that went out and got no answer (anymail raises its
    AnymailRequestsAPIError mixed with requests' ReadTimeout or ConnectionError) and 5xx
    answers (a gateway can time out after the ESP accepted). Unknown means "may be delivered".
    """
    if isinstance(error, AnymailRecipientsRefused | AnymailInvalidAddress):
        return REFUSED
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        if status in REFUSED_STATUSES:
            return REFUSED
        return UNKNOWN if status >= 500 else NOT_SENT
    if isinstance(error, requests.ConnectTimeout):
        return NOT_SENT
    return UNKNOWN


def send_outbound_email(email_id: int) -> str:
    """The q task: claim row `email_id` and send it once. Returns what happened, shown in the q
    admin: "sent", "will retry", "failed" or "not claimable (…)". A failed send is recorded on
    the row (and the order's timeline), never raised."""
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
    # The same on every attempt: a mail client shows one message for two copies with one
    # Message-ID, and an ESP with idempotency keys sends the second request nowhere.
    message.extra_headers["Message-ID"] = ensure_message_id(email)
    message.anymail_idempotency_key = email.idempotency_key
    try:
        failpoint("email_send")
        message.send()
    except Exception as error:
        return _attempt_failed(email, error)
    status = getattr(message, "anymail_status", None)
    email.provider_message_id = str(status.message_id or "") if status else ""
    email.status = OutboundEmail.Status.SENT
    email.sent_at = timezone.now()
    email.last_error = ""
    email.save(update_fields=["status", "attempts", "provider_message_id", "sent_at", "last_error"])
    if email.order_id:
        note = (
            f" An earlier attempt may also have reached them ({email.uncertain_attempts} without an answer); "
            f"every attempt carried Message-ID {email.message_id}, so most mail apps show one."
            if email.uncertain_attempts
            else ""
        )
        email.order.log(
            "email:sent",
            f"{email.get_kind_display()} email sent to {email.to}.{note}",
            actor="system:email",
            data={"message_id": email.message_id, "uncertain_attempts": email.uncertain_attempts},
        )
    return "sent"


def _attempt_failed(email: OutboundEmail, error: Exception) -> str:
    """Record a failed attempt: refused → failed now; otherwise retry after backoff() until
    EMAIL_MAX_ATTEMPTS. An unknown outcome is counted in `uncertain_attempts`."""
    kind = failure_kind(error)
    refused = kind == REFUSED
    failed = refused or email.attempts >= settings.EMAIL_MAX_ATTEMPTS
    email.status = OutboundEmail.Status.FAILED if failed else OutboundEmail.Status.RETRY
    email.uncertain_attempts += kind == UNKNOWN
    email.last_error = f"{type(error).__name__}: {error}"[:2000]
    email.next_attempt_at = timezone.now() + backoff(email.attempts)
    email.save(update_fields=["status", "attempts", "uncertain_attempts", "last_error", "next_attempt_at"])
    if email.order_id:
        message = f"Sending the {email.kind} email failed (attempt {email.attempts}): {email.last_error}"
        if refused:
            message += " The email provider refused this message, so it is not retried: check the address."
        elif kind == UNKNOWN and not failed:
            message += (
                " The provider may have delivered it anyway; the retry carries the same Message-ID, "
                "so at worst the customer gets two identical copies."
            )
        email.order.log(
            "email:failed" if failed else "email:retry",
            message,
            actor="system:email",
            data={"outcome": kind, "message_id": email.message_id},
        )
    logger.warning(
        "%s%s email attempt %s failed (%s, %s): %s",
        f"order {email.order.reference}: " if email.order_id else "",
        email.kind,
        email.attempts,
        kind,
        "gave up" if failed else "will retry",
        email.last_error,
    )
    return "failed" if failed else "will retry"


def _give_up(email: OutboundEmail, error: str) -> str:
    email.status = OutboundEmail.Status.FAILED
    email.last_error = error
    email.save(update_fields=["status", "last_error"])
    if email.order_id:
        email.order.log("email:failed", f"Gave up on the {email.kind} email: {error}.", actor="system:email")
    return "failed"


def send_due_emails() -> int:
    """The scheduled sweep (every minute): send up to 200 queued, retrying or stale "sending"
    emails whose time has come. Returns how many went out."""
    now = timezone.now()
    due = OutboundEmail.objects.filter(
        Q(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY], next_attempt_at__lte=now)
        | Q(status=OutboundEmail.Status.SENDING, next_attempt_at__lt=now - STALE_SENDING)
    ).values_list("pk", flat=True)[:200]
    return sum(send_outbound_email(pk) == "sent" for pk in due)


def send_due_now(kind: str, *, limit: int = 20) -> int:
    """Send, in this process and now, the due outbox emails of one `kind`; returns how many went out.

    For the watchdog (`OutboundEmail.Kind.WATCHDOG`): its alerts must reach support when the q
    cluster, which normally sends every email, is what died, so the health check sends them
    itself, synchronously, through the configured (anymail) backend. Each row is claimed by the
    same conditional UPDATE as the q task (`claim()` inside `send_outbound_email`), so concurrent
    probes, the q task and the sweep never send one row twice, and the row stays the one record
    of the email. A failed send is recorded on the row and retried with the usual backoff by the
    next call (or by the q cluster once it is back); nothing is raised. `limit` bounds the work a
    single /healthz request may do.
    """
    now = timezone.now()
    due = OutboundEmail.objects.filter(
        kind=kind,
        status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY],
        next_attempt_at__lte=now,
    ).values_list("pk", flat=True)[:limit]
    return sum(send_outbound_email(pk) == "sent" for pk in list(due))
