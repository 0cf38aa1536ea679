"""Check invariants I1–I7 (and the outbox) against the database and Stripe; exit 1 on any violation."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import stripe
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from support import invariants

# Exit codes: 0 clean, 1 violations (or Stripe not read whole), 2 the check could not run.
USAGE = 2


def parse_since(value: str) -> datetime:
    """`--since`: a number of seconds back from now ("3600"), or an ISO 8601 time
    ("2026-11-30T20:00:00Z"; without a zone it is UTC). Raises CommandError (exit 2) for
    anything else, a negative number, or a time in the future."""
    value = (value or "").strip()
    try:
        seconds = float(value)
    except ValueError:
        moment = parse_datetime(value.replace(" ", "T")) if value else None
        if moment is None:
            raise CommandError(
                f"--since {value!r} is neither seconds ago (e.g. 3600) nor an ISO time (e.g. 2026-11-30T20:00:00Z).",
                returncode=USAGE,
            ) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    else:
        if not 0 <= seconds < 10 * 365 * 86400:
            raise CommandError(f"--since {value!r}: seconds ago must be between 0 and ten years.", returncode=USAGE)
        moment = timezone.now() - timedelta(seconds=seconds)
    if moment > timezone.now():
        raise CommandError(f"--since {value!r} is in the future.", returncode=USAGE)
    return moment


def read_acknowledged(path: str) -> list[str]:
    """`--acknowledged FILE`: Stripe event ids (evt_…) answered 2xx, one per line (blank lines
    and # comments ignored). Raises CommandError (exit 2) when the file cannot be read or a line
    is not an event id."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"--acknowledged {path}: cannot read it ({error}).", returncode=USAGE) from error
    ids = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if bad := [i for i in ids if not i.startswith("evt_") or len(i) > 255 or " " in i]:
        raise CommandError(f"--acknowledged {path}: not an event id: {bad[0]!r}.", returncode=USAGE)
    return ids


def positive_int(name: str, value: int) -> int:
    if value < 0:
        raise CommandError(f"--{name} must be 0 or more, not {value}.", returncode=USAGE)
    return value


class Command(BaseCommand):
    help = (
        "Read the database and Stripe and count violations of invariants I1–I7 and of the outbox "
        "(docs/design.md, 'The invariant checker'). Prints the report; exit 0 clean, 1 on any "
        "violation or when Stripe could not be read whole, 2 when the check could not run."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", help="only what was created since: seconds ago (3600) or an ISO time")
        parser.add_argument(
            "--grace",
            type=int,
            help="seconds a payment or an email may still be in progress (default: reconciliation grace + 2 runs)",
        )
        parser.add_argument("--budget", type=int, default=500, help="at most this many Stripe requests (default 500)")
        parser.add_argument("--acknowledged", help="file of event ids answered 2xx (one per line), checked for I6")

    def handle(self, *args, since=None, grace=None, budget=500, acknowledged=None, **options):
        moment = parse_since(since) if since is not None else None
        grace = positive_int("grace", grace) if grace is not None else None
        if budget < 1:
            raise CommandError(f"--budget must be at least 1, not {budget}.", returncode=USAGE)
        acked = read_acknowledged(acknowledged) if acknowledged else []
        try:
            report = invariants.read_and_check(moment, grace, budget=budget, acknowledged=acked)
        except stripe.StripeError as error:
            raise CommandError(f"Could not read Stripe: {error}. Nothing checked.", returncode=USAGE) from error
        for line in report.lines():
            self.stdout.write(line)
        if not report.ok:
            raise CommandError(report.lines()[0], returncode=1)
