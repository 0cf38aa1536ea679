"""Lift an admin sign-in lock-out (django-axes) for an email address or a client address."""

from django.core.management.base import BaseCommand, CommandError

from support import staff_events
from support.login_throttle import UnlockError, unlock
from support.models import StaffEvent


class Command(BaseCommand):
    help = (
        "Forget the failed admin sign-ins of EMAIL or of an IP ADDRESS, which lifts its lock-out now. "
        "Written to the staff events (the console's 'Staff sign-ins and security')."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("target", metavar="EMAIL|ADDRESS", help="ann@example.com, or 203.0.113.7")

    def handle(self, *args, target: str, **options) -> None:
        try:
            done = unlock(target)
        except UnlockError as error:
            raise CommandError(f"{error} Nothing was changed.") from error
        if not done.removed:
            self.stdout.write(f"No failed sign-ins recorded for the {done.kind} {done.target}: nothing to unlock.")
            return
        staff_events.record(
            StaffEvent.Kind.UNLOCKED,
            email=done.target if done.kind == "email" else "",
            address=done.target if done.kind == "address" else "",
            actor="manage.py",
            detail=f"unlock_login {done.target}: {done.removed} failed-attempt record(s) removed.",
        )
        self.stdout.write(self.style.SUCCESS(f"Unlocked the {done.kind} {done.target}: it may sign in again now."))
