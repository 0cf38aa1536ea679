"""Template helpers for the console: the landing page's queue, and ages."""

from django import template

from support import queue as console_queue

register = template.Library()


@register.simple_tag(takes_context=True)
def support_queue(context):
    """The queue for the admin index; empty for a user who cannot see orders."""
    user = context["request"].user
    if not user.has_perm("billing.view_order"):
        return None
    return console_queue.build(user)


@register.filter
def age(value) -> str:
    return console_queue.age(value)


@register.filter
def confirm_label(label: str) -> str:
    """The confirmation button's words for an action's label: "Refund" → "Yes, refund",
    "I'm on it" → "Yes, I'm on it". Only the first letter is lowered, never the word "I" or a
    name later on (Django's `lower` made "Yes, i'm on it")."""
    first = label.split(" ", 1)[0]
    if first == "I" or first.startswith("I'") or first.startswith("I’") or not label:
        return f"Yes, {label}"
    return f"Yes, {label[0].lower()}{label[1:]}"
