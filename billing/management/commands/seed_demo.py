"""Seed the demo plan, and in DEBUG a support login printed on the console with its second factor."""

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts import factors
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
        """A fresh password and fresh second factors every run: printed, never stored in the
        repository. The admin asks for the password, then a code: from an authenticator app
        that scanned the printed otpauth URI, or one of the printed backup codes."""
        password = secrets.token_urlsafe(12)
        user, created = User.objects.get_or_create(
            email=DEV_SUPPORT_EMAIL, defaults={"is_staff": True, "is_superuser": True}
        )
        user.set_password(password)
        user.save()
        factors.reset_factors(user)
        app = factors.new_app_device(user, confirmed=True)
        codes = factors.new_backup_codes(user)
        self.stdout.write(self.style.SUCCESS(f"Dev support login: {DEV_SUPPORT_EMAIL} / {password}"))
        self.stdout.write(
            "  then a code: one of these backup codes (each works once): " + "  ".join(codes[:5]) + "\n"
            f"  or add this to an authenticator app (key {factors.secret_text(app)}):\n  {app.config_url}\n"
            f"  A passkey instead: sign in at {settings.OTP_WEBAUTHN_ALLOWED_ORIGINS[0]}/admin/ (browsers refuse "
            "passkeys on 127.0.0.1), then 'Your sign-in methods' at the bottom of the front page."
        )
        return created
