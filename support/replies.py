"""Reply templates for support, filled from the order, and the list of things never to say.

Each reply is written for a worried person who just paid: it names what they already know,
says what happens next, gives the reference, and offers a human and a refund. None of them
asks for proof of payment, asks anyone to pay again, blames the customer or their bank, or
promises a time we cannot keep. The admin shows them beside the order with a copy button.
"""

from dataclasses import dataclass

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from billing.models import Order
from billing.models.orders import format_money

# Shown beside the templates. Short on purpose: a stressed person reads five lines, not fifty.
NEVER = [
    "Never ask for proof of payment, a receipt or a screenshot of their bank statement. "
    "Ask for the statement line (date, amount, name shown) in words, at most.",
    "Never ask them to pay again, or to \u201ctry the checkout once more\u201d.",
    "Never blame them, their card or their bank. If it went wrong, it went wrong on our side.",
    "Never promise a time you can't keep (\u201cwithin the hour\u201d). Say what you are doing now.",
    "Never share another customer's email, order or payment details, even to explain a mix-up.",
    "Never refund, fulfil or extend without the order in front of you: act from the console, "
    "so the timeline records it.",
]


@dataclass(frozen=True)
class Reply:
    key: str
    title: str
    when: str  # when to use it, for the support person
    subject: str
    body: str

    @property
    def text(self) -> str:
        """What the copy button copies: the subject line, then the body."""
        return f"Subject: {self.subject}\n\n{self.body}"


def _day(value) -> str:
    return date_format(timezone.localtime(value), "j F Y") if value else ""


def signin_page_url() -> str:
    return settings.SITE_URL + reverse("accounts:signin")


def replies_for(order: Order) -> list[Reply]:
    """The four replies, filled from this order. Cheap: no query beyond the subscription."""
    plan = order.plan.name
    ref = order.reference
    charged = order.price
    paid_on = _day(order.paid_at or order.created_at)
    subscription = getattr(order, "subscription", None)
    until = _day(subscription.ends_at) if subscription else ""
    signin = signin_page_url()
    email = order.email or "the email address you paid with"
    refunded = format_money(order.refunded_cents, order.currency)
    support = settings.SUPPORT_EMAILS[0]
    sign_off = (
        "\n\nIf anything is still not right, just reply to this email: a person reads every message.\n\nPaidUp support"
    )

    acknowledge = Reply(
        "acknowledge",
        "Acknowledge",
        "First answer, while you look into it.",
        f"Your PaidUp order {ref}: we're on it",
        f"Hello,\n\n"
        f"Thank you for writing, and I'm sorry for the worry. I can see your order {ref} for {plan} "
        f"({charged}) from {paid_on}.\n\n"
        f"I'm looking into it now and I'll write again as soon as your access is sorted. You don't need "
        f"to do anything in the meantime, and you won't be charged again.\n\n"
        f"If you'd rather have your money back instead, say so and I'll refund you in full."
        f"{sign_off}",
    )
    resolved = Reply(
        "resolved",
        "Resolved",
        "Access is working now (fulfilled, or the access email resent).",
        f"Your PaidUp access is ready ({ref})",
        f"Hello,\n\n"
        f"Your access to {plan} is ready"
        + (f" and runs until {until}" if until else "")
        + f". You were charged {charged} once, on {paid_on}.\n\n"
        f"We've just emailed a sign-in link to {email}. If it has expired by the time you read this, "
        f"you can ask for a fresh one at any time here:\n{signin}\n\n"
        f"Order reference: {ref}\n\n"
        f"I'm sorry this took a message to sort out. If the delay caused you trouble, or you'd rather "
        f"have your money back, reply and I'll refund you in full."
        f"{sign_off}",
    )
    refunded_reply = Reply(
        "refunded",
        "Refunded",
        "After a refund (full or partial).",
        f"Your PaidUp refund ({ref})",
        f"Hello,\n\n"
        f"We've refunded {refunded} of your {charged} payment for {plan} (order {ref}) to the card "
        f"you paid with. Stripe has sent it to your bank; banks usually show a refund within 5 to 10 "
        f"business days, and it appears as a separate line, not as a change to the original one.\n\n"
        f"You don't need to do anything else."
        f"{sign_off}",
    )
    cant_find = Reply(
        "cant_find",
        "We can't find the payment yet",
        "Nothing in the console matches what they describe.",
        "Your PaidUp payment: one detail to help us find it",
        f"Hello,\n\n"
        f"Thank you for writing, and I'm sorry for the worry. I haven't found your payment yet under "
        f"{email}, and I'd like to.\n\n"
        f"Could you tell me how the charge appears on your bank or card statement: the date, the amount, "
        f"and the name shown next to it? The last four digits of the card help too. Typing them into a "
        f"reply is enough: please don't send a screenshot or any document.\n\n"
        f"Please don't pay again in the meantime. If a payment was taken, we'll either set up your access "
        f"or refund it in full, whichever you prefer."
        f"\n\nIf it's easier, you can also write to {support}.\n\nPaidUp support",
    )
    return [acknowledge, resolved, refunded_reply, cant_find]
