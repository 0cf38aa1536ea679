"""Give a person a support login: staff, in the Support group(s), joining by an emailed invite link
(choose a password, enrol a second factor)."""

import getpass
import sys

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from support.staff import StaffError, grant_support_access


class Command(BaseCommand):
    help = (
        "Create (or complete) a support login for EMAIL in the Support group, and email it a "
        "single-use invite link (password, then second factor). Never prints a password. Safe to run again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("email")
        parser.add_argument("--refunds", action="store_true", help='also join "Support: refunds" (money back)')
        parser.add_argument("--superuser", action="store_true", help="every permission (the first operator)")
        parser.add_argument("--no-email", action="store_true", help="do not send the invite link")
        parser.add_argument(
            "--set-password",
            action="store_true",
            help="type a password at a prompt (interactive only; for when email is down)",
        )

    def handle(self, *args, email: str, refunds: bool, superuser: bool, no_email: bool, set_password: bool, **opts):
        if set_password and not sys.stdin.isatty():
            raise CommandError("--set-password needs a terminal to type into. Nothing was changed.")
        try:
            change = grant_support_access(email, refunds=refunds, superuser=superuser, send_link=not no_email)
        except StaffError as error:
            raise CommandError(f"{error} Nothing was changed.") from error
        if set_password:
            self.prompt_password(change.user)
        self.stdout.write(self.style.SUCCESS(change.describe()))

    def prompt_password(self, user) -> None:
        """Ask twice, check Django's validators, store only the hash; never echo or print it."""
        for _ in range(3):
            first = getpass.getpass(f"Password for {user.email}: ")
            if first != getpass.getpass("Again: "):
                self.stderr.write("The two entries differ. Try again.")
                continue
            try:
                validate_password(first, user)
            except ValidationError as error:
                self.stderr.write(" ".join(error.messages))
                continue
            user.set_password(first)
            user.save(update_fields=["password"])
            self.stdout.write("Password set.")
            return
        raise CommandError("No password set (the login itself was created; use the invite link instead).")
