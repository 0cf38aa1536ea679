"""Dev and drills: play the email provider's tracking webhook for an email PaidUp sent.

Posts to SITE_URL/anymail/postmark/tracking/, over HTTP and with the basic auth from
ANYMAIL["WEBHOOK_SECRET"], the body Postmark posts for a bounce, a rejection, a delivery, a spam
complaint or a deferral (https://postmarkapp.com/developer/webhooks/webhooks-overview) of the
newest email sent to --to (or of --email-id). With `make run` (the console backend gives every
email a message id) and ANYMAIL={"WEBHOOK_SECRET": "dev:dev"} in .env, this shows a bounced
access email end to end: the alert, the queue row, and the order page's correction.

    python manage.py email_event bounce --to jane@gmial.com

Prints the site's answer; exit status 1 when the site did not record it. Never in production.
"""

import json
from datetime import UTC, datetime

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from billing.models import OutboundEmail

# what → (Postmark RecordType, Type, the field holding the time)
EVENTS = {
    "bounce": ("Bounce", "HardBounce", "BouncedAt"),
    "reject": ("Bounce", "BadEmailAddress", "BouncedAt"),
    "defer": ("Bounce", "Transient", "BouncedAt"),
    "complain": ("SpamComplaint", "SpamComplaint", "BouncedAt"),
    "deliver": ("Delivery", "", "DeliveredAt"),
}


def postmark_body(email: OutboundEmail, what: str) -> dict:
    """Postmark's webhook body for `what` (a key of EVENTS) about the sent `email`."""
    record, kind, time_field = EVENTS[what]
    metadata = {"outbound_email_id": str(email.pk)}
    if email.order_id:
        metadata["order_reference"] = email.order.reference
    body = {
        "RecordType": record,
        "MessageID": email.provider_message_id,
        "Metadata": metadata,
        "Tag": email.kind,
        time_field: datetime.now(UTC).isoformat(),
        "Recipient" if record == "Delivery" else "Email": email.to,
    }
    if kind:
        body.update(Type=kind, Description=f"{kind} (played by manage.py email_event)", Details="smtp;550 5.1.1 (dev)")
    return body


class Command(BaseCommand):
    help = "Dev/drills: post a Postmark tracking event (bounce, reject, defer, complain, deliver) for a sent email."

    def add_arguments(self, parser) -> None:
        parser.add_argument("what", choices=sorted(EVENTS))
        parser.add_argument("--to", default="", help="the newest sent email to this address")
        parser.add_argument("--email-id", type=int, help="this outbox row instead")

    def handle(self, *args, what: str, to: str, email_id: int | None, **options) -> None:
        emails = OutboundEmail.objects.exclude(provider_message_id="").select_related("order")
        email = emails.filter(pk=email_id).first() if email_id else emails.filter(to=to).order_by("-created_at").first()
        if email is None:
            raise CommandError("No sent email with a provider message id matches; send one first (or check --to).")
        secret = (settings.ANYMAIL or {}).get("WEBHOOK_SECRET") or ""
        secret = secret[0] if isinstance(secret, list) else secret
        if ":" not in secret:
            raise CommandError('Set ANYMAIL={"WEBHOOK_SECRET": "user:password"} first (see .env.example).')
        user, password = secret.split(":", 1)
        url = settings.SITE_URL + reverse("email_tracking")
        try:
            answer = requests.post(url, json=postmark_body(email, what), auth=(user, password), timeout=10)
        except requests.RequestException as error:
            raise CommandError(f"Could not reach {url}: {error}") from error
        self.stdout.write(f"{answer.status_code} {json.dumps(answer.json()) if answer.content else ''}")
        if answer.status_code != 200 or answer.json().get("outcome") != "recorded":
            raise CommandError(f"{url} did not record it.")
