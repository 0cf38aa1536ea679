"""Reset a support person's second factors (a lost phone): `manage.py reset_factors EMAIL`."""

from django.core.management.base import BaseCommand, CommandError

from support.staff import StaffError, reset_factors


class Command(BaseCommand):
    help = (
        "Delete EMAIL's second factors (authenticator apps, backup codes, passkeys) and end their "
        "sessions; their next password sign-in enrols again. Written to the admin log with --by."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("email")
        parser.add_argument(
            "--by",
            required=True,
            help="your own staff email: the admin log names who reset the factors",
        )

    def handle(self, *args, email: str, by: str, **options) -> None:
        try:
            done = reset_factors(email, by=by)
        except StaffError as error:
            raise CommandError(f"{error} Nothing was changed.") from error
        self.stdout.write(self.style.SUCCESS(done))
