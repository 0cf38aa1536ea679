"""Seed the demo plan, and in DEBUG a support login printed on the console."""

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.models import User
from billing.models import Plan

DEMO_PLAN = {"name": "PaidUp Pro, one year", "amount_cents": 24900, "currency": "usd", "duration_days": 365}
DEV_SUPPORT_EMAIL = "support@paidup.example"


class Command(BaseCommand):
    help = "Create the demo plan ($249, 365 days) and, with DEBUG on, a dev support login."

    def handle(self, *args, **options) -> None:
        self.seed_plan()
        if settings.DEBUG:
            self.seed_support_login()

    def seed_plan(self) -> bool:
        plan, created = Plan.objects.get_or_create(slug="pro-year", defaults=DEMO_PLAN)
        self.stdout.write(f"{'Created' if created else 'Kept'} plan: {plan}")
        return created

    def seed_support_login(self) -> bool:
        """A fresh password every run: it is printed, never stored in the repository."""
        password = secrets.token_urlsafe(12)
        user, created = User.objects.get_or_create(
            email=DEV_SUPPORT_EMAIL, defaults={"is_staff": True, "is_superuser": True}
        )
        user.set_password(password)
        user.save()
        self.stdout.write(self.style.SUCCESS(f"Dev support login: {DEV_SUPPORT_EMAIL} / {password}"))
        return created
