"""Make the Stripe webhook endpoint exist and point at this site. Safe to run on every start."""

from django.core.management.base import BaseCommand, CommandError

from billing import stripe_setup


class Command(BaseCommand):
    help = (
        "With STRIPE_API_BASE set (localstripe): seed dj-stripe's account, key and endpoint rows and "
        "register the endpoint with localstripe (needed after every localstripe start). Otherwise: "
        "create, or update on later runs, the webhook endpoint in Stripe for SITE_URL and store its "
        "signing secret."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--site-url", help="this site's public address (default: settings.SITE_URL)")

    def handle(self, *args, site_url: str | None = None, **options) -> None:
        try:
            result = stripe_setup.run(site_url)
        except stripe_setup.SetupError as error:
            raise CommandError(f"{error} Nothing was changed.") from error
        self.stdout.write(self.style.SUCCESS(result.describe()))
