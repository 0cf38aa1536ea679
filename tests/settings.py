"""Test settings: the real settings, with the q cluster in sync mode.

django-q2 reads Q_CLUSTER once at import, so sync mode must be a settings value, not an
override in a test.
"""

from config.settings import *  # noqa: F403
from config.settings import Q_CLUSTER

Q_CLUSTER = {**Q_CLUSTER, "sync": True}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SHOW_DEV_EMAILS = True
STRIPE_SECRET_KEY = STRIPE_TEST_SECRET_KEY = "sk_test_" + "paidupTests0123456789abcd"  # noqa: F405
STRIPE_PUBLISHABLE_KEY = "pk_test_paidupTests0123456789abcd"
STRIPE_MAX_NETWORK_RETRIES = 0
