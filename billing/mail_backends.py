"""Email backends: anymail's, plus what anymail has no option for.

Set EMAIL_BACKEND to one of these instead of anymail's own for the same ESP. Each reads
`message.anymail_idempotency_key`, which the outbox sets on every attempt of a row
(outbox.sending; OutboundEmail.idempotency_key).
"""

from anymail.backends.resend import EmailBackend as AnymailResendBackend


class ResendEmailBackend(AnymailResendBackend):
    """anymail's Resend backend, plus Resend's `Idempotency-Key` request header.

    Resend remembers a key for 24 hours and answers a repeated request with the first answer
    instead of sending again (https://resend.com/docs/dashboard/emails/idempotency-keys). The
    outbox's retries of one row all fall inside that window (backoff() is capped at an hour
    and EMAIL_MAX_ATTEMPTS defaults to 6), so a retry after a timeout cannot send a second copy.
    """

    def build_message_payload(self, message, defaults):
        """anymail's payload for `message`, with the `Idempotency-Key` header set to
        `message.anymail_idempotency_key` when the outbox gave one."""
        payload = super().build_message_payload(message, defaults)
        if key := getattr(message, "anymail_idempotency_key", ""):
            payload.headers["Idempotency-Key"] = key
        return payload
