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
