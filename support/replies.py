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
    """The customer's sign-in page as an absolute URL (SITE_URL + accounts:signin), for replies."""
    return settings.SITE_URL + reverse("accounts:signin")


# size: the reply texts themselves, filled from the order; words, not logic.
def replies_for(order: Order) -> list[Reply]:
    """The replies, filled from this order. Cheap: no query beyond the subscription and, when
    the order has refunded money, its refunds."""
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
    disputed = Reply(
        "dispute",
        "About a dispute",
        "The customer asks about a dispute (chargeback) on this order. PaidUp never writes first about a "
        "dispute: answer only when they ask, and never argue the case with them.",
        f"Your PaidUp order {ref} and your bank",
        f"Hello,\n\n"
        f"Thank you for writing. Your bank told us it has questioned the {charged} payment for {plan} "
        f"(order {ref}) on your behalf. The money is with your bank while it looks into it, so you are not "
        f"out of pocket twice.\n\n"
        f"From here the decision is your bank's: we send them the facts of the order (when it was bought, "
        f"with which email address, and when the access email went out), and they decide, usually within a "
        f"few weeks. If the payment was not yours, tell your bank; you don't need to prove anything to us.\n\n"
        f"If you did mean to buy and the dispute was a mistake, you can tell your bank you withdraw it; if you'd "
        f"simply rather have your money back, tell me and I'll make sure you get it in full, one way or the "
        f"other."
        f"{sign_off}",
    )
    return [acknowledge, resolved, refunded_reply, cant_find, disputed, *refund_replies(order, sign_off)]


def refund_replies(order: Order, sign_off: str) -> list[Reply]:
    """ "Where is my refund?" (every refund, its date and the card), and "Your refund didn't go
    through" (a refund Stripe reported failed or cancelled), when the order has refunds."""
    refunds = list(order.refunds.all()) if order.refunded_cents or order.state == Order.State.REFUNDED else []
    if not refunds:
        return []
    ref, card = (
        order.reference,
        f"your card ending in {order.card_last4}" if order.card_last4 else "the card you paid with",
    )
    sent = [r for r in refunds if r.counts]
    lines = "\n".join(f"- {r.price} on {_day(r.created_at)} (Stripe reference {r.stripe_refund_id})" for r in sent)
    replies = []
    if sent:
        replies.append(
            Reply(
                "where_is_refund",
                "Where is my refund?",
                "They were refunded and don't see it on their statement yet.",
                f"Your PaidUp refund: where it is ({ref})",
                f"Hello,\n\n"
                f"Thank you for asking, and I understand waiting for money is not fun. We sent these refunds "
                f"for order {ref} to {card}:\n{lines}\n\n"
                f"From our side they are done: Stripe passed them to your bank. Banks usually show a refund "
                f"within 5 to 10 business days of the date above, as a separate line on your statement, "
                f"not as a change to the original payment. Some banks show it only once it settles, so it "
                f"may not appear as \u201cpending\u201d first.\n\n"
                f"If it still isn't there after 10 business days, reply to this email: I'll ask Stripe for the "
                f"refund's trace number (the ARN), which your bank can use to find it."
                f"{sign_off}",
            )
        )
    failed = [r for r in refunds if not r.counts]
    if failed:
        failed_lines = "\n".join(f"- {r.price}, sent on {_day(r.created_at)}" for r in failed)
        replies.append(
            Reply(
                "refund_failed",
                "Your refund didn't go through",
                "Stripe reported a refund failed or was cancelled (there is an alert): write today.",
                f"Your PaidUp refund didn't reach you: we'll pay it another way ({ref})",
                f"Hello,\n\n"
                f"I'm sorry: we told you a refund was on its way for order {ref}, and it didn't reach you. "
                f"Your bank sent it back to us, usually because the card has since been closed or replaced:\n"
                f"{failed_lines}\n\n"
                f"The money is with us, not lost. Reply with how you'd like it back (a new card we can "
                f"refund to, or a bank transfer) and I'll send it the same day."
                f"{sign_off}",
            )
        )
    return replies
