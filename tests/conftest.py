import pytest

from tests.factories import PlanFactory

# Fixture modules, one per concern, so parallel work does not collide in this file.
pytest_plugins = [
    "tests.fixtures.gateway",
    "tests.fixtures.localstripe",
    "tests.fixtures.services",
    "tests.fixtures.browser",
    "tests.fixtures.checkout_page",
    "tests.fixtures.crash",
    "tests.fixtures.console",
    "tests.fixtures.tracking",
    "tests.fixtures.passkeys",
    "tests.fixtures.migrations",
]


@pytest.fixture(autouse=True)
def anymail_test_backend(settings):
    """Django's test setup forces locmem; the anymail test backend parses what the ESP would get."""
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"


@pytest.fixture
def plan(db):
    return PlanFactory()
