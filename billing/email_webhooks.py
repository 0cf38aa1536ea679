"""The email provider's tracking webhook: Postmark's format, read by anymail, guarded here.

PaidUp's one tracking ESP is Postmark (anymail's `PostmarkTrackingWebhookView`): its delivery,
bounce and spam-complaint webhooks post one JSON event each, authenticated the way anymail
documents for Postmark, HTTP basic auth with ANYMAIL["WEBHOOK_SECRET"] ("user:password", set in
the URL you give Postmark: docs/deploy.md). anymail normalises the event into an
`AnymailTrackingEvent` and sends it on `anymail.signals.tracking`; billing.delivery records it.

The front door adds what anymail leaves to the site (anymail answers a malformed body with a
500, which the ESP retries for days, and accepts anything when no secret is set):
- no WEBHOOK_SECRET configured → 403, nothing read (the endpoint is off, not open);
- a body over WEBHOOK_MAX_BODY_BYTES → 413; missing or wrong basic auth → 401;
- a body that is not one JSON object, or that anymail cannot read → 400;
- then one JSON answer per request, `{"outcome": …, "detail": …}`: 200 for what was recorded or
  rightly ignored (unknown message id, an event type we do not track, older news), 409 when the
  email is still being sent (try later), 400 when the event contradicts the email it names
  (another order, another recipient). Only "recorded" changed anything.
"""

import json
import logging

from anymail.exceptions import AnymailConfigurationError, AnymailWebhookValidationFailure
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django.conf import settings
from django.http import JsonResponse

from . import delivery

logger = logging.getLogger(__name__)

STATUS = {delivery.NOT_YET: 409, delivery.MISMATCH: 400}


def _answer(status: int, outcome: str, detail: str) -> JsonResponse:
    response = JsonResponse({"outcome": outcome, "detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="PaidUp email tracking"'
    return response


class TrackingWebhook(PostmarkTrackingWebhookView):
    """POST /anymail/postmark/tracking/ (module docstring for every answer)."""

    warn_if_no_basic_auth = False  # refused below instead of warned about

    def post(self, request, *args, **kwargs):
        """Refuse before parsing (403 unconfigured, 400 bad length, 413 too large, 401 bad basic
        auth, 400 not a Postmark event), then hand each event to the tracking signal and answer
        the first receiver's Outcome as JSON with its STATUS code. Raises nothing: every refusal
        is an answer (the ValueError raised inside is caught)."""
        if not self.basic_auth:
            return _answer(403, "refused", "email tracking is not configured (ANYMAIL WEBHOOK_SECRET)")
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            return _answer(400, "refused", "bad Content-Length")
        if length > settings.WEBHOOK_MAX_BODY_BYTES:
            return _answer(413, "refused", "body too large")
        try:
            self.run_validators(request)
        except AnymailWebhookValidationFailure:
            logger.warning("email tracking webhook refused: missing or wrong basic auth")
            return _answer(401, "refused", "missing or wrong credentials")
        body = request.body
        if len(body) > settings.WEBHOOK_MAX_BODY_BYTES:
            return _answer(413, "refused", "body too large")
        try:
            if not isinstance(json.loads(body.decode("utf-8")), dict):
                raise ValueError("not a JSON object")
            events = self.parse_events(request)
        except (ValueError, TypeError, KeyError, AttributeError, AnymailConfigurationError) as error:
            return _answer(400, "refused", f"not a Postmark tracking event ({type(error).__name__})")
        outcomes = [
            outcome
            for event in events
            for _receiver, outcome in self.signal.send(sender=type(self), event=event, esp_name=self.esp_name)
            if isinstance(outcome, delivery.Outcome)
        ]
        outcome = outcomes[0] if outcomes else delivery.Outcome(delivery.IGNORED, "nothing listens")
        return _answer(STATUS.get(outcome.code, 200), outcome.code, outcome.detail)
