from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

from .addresses import NormalizedEmailField, normalize_email


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra) -> "User":
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=self.normalize_email(email), **extra)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra) -> "User":
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra) -> "User":
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)

    @classmethod
    def normalize_email(cls, email: str | None) -> str:
        """The one normal form (accounts.addresses), also for createsuperuser and the admin."""
        return normalize_email(email)

    def get_by_natural_key(self, email: str) -> "User":
        return self.get(email=normalize_email(email))


class User(AbstractBaseUser, PermissionsMixin):
    """A customer (or a staff member). The login is the email; customers have no password."""

    email = NormalizedEmailField(unique=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"

    def __str__(self) -> str:
        return self.email

    @property
    def access_ends_at(self):
        """When this customer's access ends (a datetime), counting the years bought on top of a
        running one (each starts where the one before ends: billing/access.py), or None when no
        access runs now."""
        if self.active_subscription is None:
            return None
        now = timezone.now()
        running = self.subscriptions.filter(ends_at__gt=now, order__state="fulfilled")
        return running.aggregate(latest=models.Max("ends_at"))["latest"]

    @property
    def active_subscription(self):
        now = timezone.now()
        return (
            self.subscriptions.filter(starts_at__lte=now, ends_at__gt=now, order__state="fulfilled")
            .select_related("order__plan")
            .first()
        )
