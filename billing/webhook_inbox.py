"""The webhook inbox: store a verified Stripe event and run its receivers in one transaction.

dj-stripe's `WebhookEventTrigger.from_request` does this in 14 statements around the
receivers: it reads the owner account again and its API key, checks the event's signature a
second time, looks the Event up twice (an existence check, then again before its INSERT),
wraps it in nested savepoints, and rewrites the whole trigger row, body included, at the end
(docs/benchmarks.md, "Cheaper webhooks"). `receive()` stores the same rows in 6 statements and
keeps every guarantee dj-stripe gives:

- the trigger row (headers, body, remote IP, endpoint, owner account) is committed before any
  processing, so a delivery that fails is kept, with its exception and traceback, for
  reconciliation to replay (`billing.reconciliation.replay_webhooks`);
- the Event row, the receivers' work and the trigger's "valid, processed, event" commit
  together or not at all: a 2xx means all of it committed (invariant I6);
- one Event per Stripe event id (its unique column): a duplicate delivery, even one racing
  the first, runs no receiver and is answered 2xx with its own trigger row pointing at the
  Event;
- dj-stripe's webhook signals are sent at the same points, with the same arguments but for
  `api_key`, which is None (the lean path resolves no key; nothing in PaidUp listens).

The Event row is built as dj-stripe builds it (`Event._stripe_object_to_record` and
`_attach_objects_hook`), with the owner account the endpoint already carries instead of
looking it up by API key: tests/test_webhook_inbox.py holds the two rows side by side for
each kind of event PaidUp receives (payment, refund, dispute, fraud warning, cancel).
Anything the lean path does not cover (an endpoint with no owner account, a Connect event naming
another account, an endpoint that validates by retrieving the event from Stripe, a
DJSTRIPE_WEBHOOK_EVENT_CALLBACK) goes to dj-stripe's own `from_request`.
"""

from __future__ import annotations

from traceback import format_exc

from django.db import IntegrityError, models, transaction
from django.utils import timezone
from djstripe import signals
from djstripe.enums import WebhookEndpointValidation
from djstripe.models import Event, WebhookEndpoint, WebhookEventTrigger
from djstripe.models.webhooks import get_remote_ip
from djstripe.settings import djstripe_settings

__all__ = ["ENDPOINT_FIELDS", "covers", "event_row", "receive"]

# Event's own fields as dj-stripe's _stripe_object_to_record reads them from Stripe's data: every
# concrete field but the djstripe_* bookkeeping and stripe_data (the whole body), in model order.
_FIELDS = [
    field
    for field in Event._meta.concrete_fields
    if not field.name.startswith("djstripe_") and field.name != "stripe_data"
]


# What the front door (billing.webhooks) and receive() read of the WebhookEndpoint row; the
# owner account is read by its id only (the foreign keys point at Account.id, Stripe's "acct_…").
ENDPOINT_FIELDS = (
    "id",  # the trigger's foreign key points at it
    "djstripe_uuid",
    "secret",
    "djstripe_tolerance",
    "djstripe_validation_method",
    "djstripe_owner_account",
)


def covers(endpoint: WebhookEndpoint, event: dict) -> bool:
    """True when `receive()` stores `event` exactly as dj-stripe would: the endpoint has its owner
    account, validates by signature (already checked by the front door), and the event is not
    a Connect event naming an account (dj-stripe would look that account up, or fetch it from
    Stripe), and no DJSTRIPE_WEBHOOK_EVENT_CALLBACK is set. False sends the delivery to
    dj-stripe's own `from_request`."""
    return (
        endpoint.djstripe_owner_account_id is not None
        and endpoint.djstripe_validation_method == WebhookEndpointValidation.verify_signature
        and not event.get("account")
        # dj-stripe's DJSTRIPE_WEBHOOK_EVENT_CALLBACK replaces its processing; only from_request calls it.
        and not djstripe_settings.WEBHOOK_EVENT_CALLBACK
    )


def event_row(data: dict, owner_id: str) -> Event:
    """An unsaved Event for `data` (a Stripe event as parsed from its JSON body) owned by the
    djstripe Account whose Stripe id is `owner_id` ("acct_…"): the fields dj-stripe's
    `Event._stripe_object_to_record` and `_attach_objects_hook` give it (text fields that Stripe
    sends as null stored as "", the request id and idempotency key taken from `request`),
    without their queries. Raises ValueError when `data` is not an event, as dj-stripe does."""
    if not Event.is_valid_object(data):
        raise ValueError(f"Trying to fit {data.get('object', '')!r} into 'Event'. Aborting.")
    values = {"stripe_data": data, "djstripe_owner_account_id": owner_id}
    for field in _FIELDS:
        value = field.stripe_to_db(data) if hasattr(field, "stripe_to_db") else data.get(field.name)
        if value is None and isinstance(field, (models.CharField, models.TextField)):
            value = ""
        values[field.name] = value
    row = Event(**values)
    row._attach_objects_hook(Event, data)
    return row


def receive(request, endpoint: WebhookEndpoint, body: str, data: dict) -> WebhookEventTrigger:
    """Store one delivery whose signature the front door verified, and process it.

    `body` is the request body as text, `data` its parsed JSON (a Stripe event; `covers()` must
    be true for it). Returns the trigger, saved valid and processed, once the Event and its
    receivers committed (or, for a duplicate, once it points at the Event already recorded).
    Raises what a receiver raises, after the trigger is saved with the exception and traceback
    (valid, not processed: reconciliation replays it); the caller answers 500 and Stripe
    retries (invariant I6).
    """
    owner_id = endpoint.djstripe_owner_account_id
    trigger = WebhookEventTrigger.objects.create(
        headers=dict(request.headers),
        body=body,
        remote_ip=get_remote_ip(request),
        stripe_trigger_account_id=owner_id,
        webhook_endpoint=endpoint,
    )
    event_id = data["id"]
    try:
        try:
            _process(trigger, data, owner_id)
        except IntegrityError:
            # A concurrent delivery of the same event committed its Event first: everything
            # this one did is rolled back, and it is a duplicate (dj-stripe's Event.process
            # answers the same way). Any other IntegrityError is a failure like any other.
            if not Event.objects.filter(id=event_id).exists():
                raise
            _mark_processed(trigger, event_id)
            signals.webhook_post_process.send(sender=WebhookEventTrigger, instance=trigger, api_key=None)
    except Exception as error:
        trigger.valid = True
        trigger.processed = False
        trigger.exception = str(error)[: WebhookEventTrigger._meta.get_field("exception").max_length]
        trigger.traceback = format_exc()
        signals.webhook_processing_error.send(
            sender=WebhookEventTrigger,
            instance=trigger,
            api_key=None,
            exception=error,
            data=getattr(error, "http_body", ""),
        )
        trigger.save(update_fields=["valid", "processed", "exception", "traceback", "updated"])
        raise
    return trigger


def _process(trigger: WebhookEventTrigger, data: dict, owner_id: str) -> None:
    """Inside one transaction: record the Event unless it is recorded, run its receivers, and
    mark the trigger valid and processed. Raises what the receivers or the database raise."""
    with transaction.atomic():
        signals.webhook_pre_validate.send(sender=WebhookEventTrigger, instance=trigger)
        trigger.valid = True
        signals.webhook_post_validate.send(sender=WebhookEventTrigger, instance=trigger, valid=True)
        signals.webhook_pre_process.send(sender=WebhookEventTrigger, instance=trigger)
        if not Event.objects.filter(id=data["id"]).exists():
            event = event_row(data, owner_id)
            event.save(force_insert=True)
            event.invoke_webhook_handlers()
        _mark_processed(trigger, data["id"])
        signals.webhook_post_process.send(sender=WebhookEventTrigger, instance=trigger, api_key=None)


def _mark_processed(trigger: WebhookEventTrigger, event_id: str) -> None:
    """One UPDATE of the trigger's status columns (its body is not written again)."""
    trigger.valid, trigger.processed, trigger.event_id = True, True, event_id
    trigger.exception, trigger.traceback, trigger.updated = "", "", timezone.now()
    WebhookEventTrigger.objects.filter(pk=trigger.pk).update(
        valid=True, processed=True, event_id=event_id, exception="", traceback="", updated=trigger.updated
    )
