"""The same verdict as /healthz, as an exit code (0 healthy, 1 not), for cron and monitors."""

import json

from django.core.management.base import BaseCommand

from billing import health


class Command(BaseCommand):
    help = "Check reconciliation's heartbeat and stuck orders; exit 1 when unhealthy."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the full report as JSON.")

    def handle(self, *args, **options) -> None:
        data = health.report()
        health.watch(data)
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            verdict = "healthy" if data["healthy"] else "UNHEALTHY: " + "; ".join(data["problems"])
            self.stdout.write(verdict)
        if not data["healthy"]:
            raise SystemExit(1)
