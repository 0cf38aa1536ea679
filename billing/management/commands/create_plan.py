"""Create (or, with --update, change) a plan customers can buy. Safe to run again."""

from django.core.management.base import BaseCommand, CommandError

from billing.plans import PlanError, define_plan


class Command(BaseCommand):
    help = (
        "Create the plan SLUG, priced in the currency as typed (249 or 249.00 USD -> 24900 cents; "
        "3000 JPY -> 3000). Running it again with the same values changes nothing; other values "
        "are refused unless --update is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="short id in URLs and forms, e.g. pro-year")
        parser.add_argument("--name", required=True, help='what customers see, e.g. "PaidUp Pro, one year"')
        parser.add_argument("--price", required=True, help="amount in the currency, e.g. 249.00")
        parser.add_argument("--currency", required=True, help="ISO code Stripe charges in, e.g. usd")
        parser.add_argument("--days", type=int, default=365, help="how long access lasts (default 365)")
        parser.add_argument("--update", action="store_true", help="change an existing plan with this slug")

    def handle(self, *args, slug: str, name: str, price: str, currency: str, days: int, update: bool, **options):
        try:
            change = define_plan(slug, name=name, price=price, currency=currency, days=days, update=update)
        except PlanError as error:
            raise CommandError(f"{error} Nothing was changed.") from error
        self.stdout.write(self.style.SUCCESS(change.describe()))
