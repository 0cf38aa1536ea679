"""What PaidUp sells: creating and changing a Plan, refusing what Stripe or a customer could not use.

`manage.py create_plan` calls `define_plan()`; tests call it directly. An order copies its
plan's amount and currency when it is opened (billing/checkout.py), so changing a plan's price
never changes what an existing order was charged.
"""

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from .currencies import PriceError, clean_currency, parse_price
from .models import Plan
from .models.orders import format_money

MAX_DAYS = 10 * 366


class PlanError(ValueError):
    """Input the operator must fix; the message says what. Nothing was changed."""


@dataclass
class PlanChange:
    plan: Plan
    action: str  # "created", "updated", "unchanged"

    def describe(self) -> str:
        """One sentence for the operator: the plan's slug, what happened, its name, price,
        length in days and whether it is on sale."""
        p = self.plan
        state = "on sale" if p.active else "not on sale"
        return (
            f"Plan {p.slug} {self.action}: {p.name}, {format_money(p.amount_cents, p.currency)} "
            f"for {p.duration_days} days ({state})."
        )


def plan_fields(name: str, price: str, currency: str, days: int) -> dict:
    """The Plan fields for this input. Raises PlanError on a blank or over-long name, a price
    PaidUp cannot charge (see currencies.parse_price), an unknown currency, or a duration outside
    1-3660 days."""
    name = (name or "").strip()
    if not name or len(name) > Plan._meta.get_field("name").max_length:
        raise PlanError("The plan needs a name of 1 to 100 characters (customers see it at checkout).")
    try:
        currency = clean_currency(currency)
        amount = parse_price(price, currency)
    except PriceError as error:
        raise PlanError(str(error)) from error
    if not 1 <= days <= MAX_DAYS:
        raise PlanError(f"The duration must be 1 to {MAX_DAYS} days, not {days}.")
    return {"name": name, "amount_cents": amount, "currency": currency, "duration_days": days, "active": True}


@transaction.atomic
def define_plan(
    slug: str, *, name: str, price: str, currency: str, days: int = 365, update: bool = False
) -> PlanChange:
    """Create the plan `slug`, or confirm it exists as asked (idempotent).

    `price` is the amount as typed in `currency` ("249.00"), stored in minor units. A plan with
    this slug and other values is refused unless `update` is true: a price change is a decision,
    not a side effect of running a script twice. Raises PlanError; nothing is changed then.
    """
    try:
        validate_slug(slug)
    except ValidationError as error:
        raise PlanError(f"{slug!r} is not a slug: use lowercase letters, digits, - and _ (e.g. pro-year).") from error
    fields = plan_fields(name, price, currency, days)
    plan = Plan.objects.select_for_update().filter(slug=slug).first()
    if plan is None:
        return PlanChange(Plan.objects.create(slug=slug, **fields), "created")
    if all(getattr(plan, key) == value for key, value in fields.items()):
        return PlanChange(plan, "unchanged")
    if not update:
        raise PlanError(
            f"A plan with slug {slug!r} already exists ({PlanChange(plan, 'is').describe()[len('Plan ') :]}) "
            "Pass --update to change it, or choose another slug."
        )
    for key, value in fields.items():
        setattr(plan, key, value)
    plan.save()
    return PlanChange(plan, "updated")
