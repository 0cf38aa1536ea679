"""The rate limiter's rows moved from support to the core without a loss (billing/migrations/0018
and support/migrations/0012): the table and its counts stay, the content type follows the model."""

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from billing.models import RateLimit
from tests.fixtures.migrations import MIGRATION_TEST_TIMEOUT, latest

pytestmark = pytest.mark.timeout(MIGRATION_TEST_TIMEOUT)

BEFORE = [("support", "0009_alert_moves_to_core"), ("billing", "0015_outboundemail_moves_to_outbox")]


def test_it_keeps_every_count_across_the_move(migrator):
    migrate = migrator
    expires = timezone.now() + timedelta(minutes=30)
    old_apps = migrate(BEFORE)
    old_apps.get_model("support", "RateLimit").objects.create(key="ip:abc:1", hits=4, expires_at=expires)

    migrate(latest())

    assert list(RateLimit.objects.values_list("key", "hits")) == [("ip:abc:1", 4)]
    assert ContentType.objects.filter(app_label="billing", model="ratelimit").exists()
    assert not ContentType.objects.filter(app_label="support", model="ratelimit").exists()

    back_apps = migrate(BEFORE)
    assert back_apps.get_model("support", "RateLimit").objects.get().hits == 4
    assert ContentType.objects.filter(app_label="support", model="ratelimit").exists()

    migrate(latest())  # leave the database as every other test expects it
    assert RateLimit.objects.get().hits == 4
