"""Run reconciliation once and print one summary line; exit 1 on errors."""

from django.core.management.base import BaseCommand, CommandError

from billing import reconciliation


class Command(BaseCommand):
    help = "Find paid-but-unfulfilled and unknown payments and finish them (runs every minute in the q cluster)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List what would be done; change nothing.")

    def handle(self, *args, dry_run: bool = False, **options) -> None:
        record = reconciliation.run(dry_run=dry_run)
        if record is None:
            self.stdout.write("another reconciliation run is in progress; nothing done")
            return
        if dry_run:
            for action in record.counts.get("actions", []):
                self.stdout.write(f"would {action}")
        self.stdout.write(summary(record))
        if not record.ok:
            self.stderr.write(record.errors)
            raise CommandError("reconciliation finished with errors (see above)")


def summary(record) -> str:
    c = record.counts
    return (
        f"{'dry run: ' if record.dry_run else ''}checked={c.get('checked', 0)} recovered={c.get('recovered', 0)} "
        f"retroactive={c.get('retroactive', 0)} failed={c.get('failed', 0)} alerts={c.get('alerts', 0)} "
        f"replayed={c.get('replayed', 0)} refunds={c.get('refunds', 0)} "
        f"stripe_requests={c.get('stripe_requests', 0)} duration_ms={c.get('duration_ms', 0)} "
        f"errors={len(record.errors.splitlines()) if record.errors else 0}"
    )
