"""Every status a PaymentIntent can report, and what PaidUp does about it: one table.

`Order.stripe_payment_status` holds the last status we know. Besides Stripe's seven
(https://docs.stripe.com/payments/paymentintents/lifecycle) it holds three words of our own:

- ``""``: no PaymentIntent yet, or the last attempt failed before Stripe created one.
- ``"creating"``: an attempt's idempotency keys are committed and its create request was sent,
  but its answer never reached our database (the process died). Creating a PaymentIntent moves
  no money, so nothing was charged.
- ``"confirming"``: a confirm request was sent and its answer never reached our database (the
  process died, or Stripe did not answer). Money may have moved: ask Stripe before saying
  anything.
- ``"declined"``: the card was refused (a card error); the PaymentIntent is back to
  ``requires_payment_method``.

Each row says whether money moved (`charged`: True, False, or None for "not known yet"),
which story the order page tells (`view`), and the one next step a new submit of the checkout
may take (`next_step`). `billing.checkout.pay()`, the order page, the checkout page and
reconciliation all read this table, so a status means the same thing everywhere.
"""

from dataclasses import dataclass

# What a new submit of the checkout may do next.
PAY = "pay"  # start a new attempt: new keys, a new PaymentIntent (nothing was charged)
CONFIRM = "confirm"  # confirm the same PaymentIntent again under a fresh confirm key (nothing was charged)
AUTHENTICATE = "authenticate"  # hand the same PaymentIntent's 3-D Secure check back to the browser
WAIT = "wait"  # money is moving or may have moved: show the order page, never charge again
ASK = "ask"  # we do not know: retrieve the PaymentIntent from Stripe, then act on its status
FULFIL = "fulfil"  # the money is ours: fulfil the order


@dataclass(frozen=True)
class Status:
    charged: bool | None
    view: str
    next_step: str
    # The order page keeps asking Stripe while the answer can still change by itself.
    polls: bool


STATUSES: dict[str, Status] = {
    "": Status(charged=False, view="awaiting_payment", next_step=PAY, polls=False),
    "creating": Status(charged=False, view="awaiting_payment", next_step=PAY, polls=False),
    "declined": Status(charged=False, view="declined", next_step=PAY, polls=False),
    "requires_payment_method": Status(charged=False, view="declined", next_step=PAY, polls=False),
    # Created, or a confirm failed without charging (429 lock_timeout, a 500, a lost
    # connection, and Stripe then said it is still unconfirmed). Stripe refuses to confirm a
    # PaymentIntent that already succeeded, so confirming again cannot charge twice.
    "requires_confirmation": Status(charged=False, view="not_charged_retry", next_step=CONFIRM, polls=False),
    "confirming": Status(charged=None, view="confirming", next_step=ASK, polls=True),
    "requires_action": Status(charged=False, view="needs_authentication", next_step=AUTHENTICATE, polls=True),
    # Some payment methods stay here for days; the money is on its way.
    "processing": Status(charged=None, view="processing", next_step=WAIT, polls=True),
    # Authorised, not captured. PaidUp never asks for manual capture, so a person must look:
    # reconciliation raises an alert. The customer's money is held, not taken.
    "requires_capture": Status(charged=None, view="processing", next_step=WAIT, polls=True),
    "canceled": Status(charged=False, view="not_charged", next_step=PAY, polls=False),
    "succeeded": Status(charged=True, view="setting_up", next_step=FULFIL, polls=True),
}

# A status we have never heard of (a new Stripe version): treat it as "we do not know".
UNKNOWN = STATUSES["confirming"]


def status(value: str) -> Status:
    """The row for a stored or reported status (str); an unknown word gets the 'ask Stripe' row."""
    return STATUSES.get(value or "", UNKNOWN)


def nothing_charged(value: str) -> bool:
    """True when the status says for certain that no money moved and none can move without a
    request of ours (so the details may change and paying again is safe). Not for
    `requires_action`: the customer's bank check can finish, and charge, without us."""
    row = status(value)
    return row.charged is False and row.next_step != AUTHENTICATE
