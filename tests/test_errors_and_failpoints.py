"""Failpoints (deliberate crashes) and the pages a customer sees when something crashes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.template import TemplateDoesNotExist
from django.test import Client

from billing import errors
from billing.models import Order
from config.failpoints import FailpointError, failpoint, parse
from tests.fixtures.services import CARD, cookie_reference

ROOT = Path(__file__).resolve().parent.parent


def test_parse_reads_the_failpoints_variable():
    assert parse("after_charge=exit, email_send=raise") == {"after_charge": "exit", "email_send": "raise"}
    assert parse(" fulfil_before_commit ,") == {"fulfil_before_commit": "raise"}
    assert parse(" after_order_commit = exit ") == {"after_order_commit": "exit"}
    assert parse("") == {} and parse(" , ,") == {}


def test_a_failpoint_raises_only_where_it_is_named(settings):
    settings.FAILPOINTS = "after_charge=raise"
    with pytest.raises(FailpointError, match="after_charge"):
        failpoint("after_charge")
    failpoint("email_send")
    settings.FAILPOINTS = ""
    failpoint("after_charge")


def test_an_exit_failpoint_kills_the_process_without_cleanup():
    script = (
        "import atexit, django; django.setup()\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "from config.failpoints import failpoint\n"
        "failpoint('email_send')\n"
        "print('before', flush=True)\n"
        "failpoint('after_charge')\n"
        "print('survived')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "FAILPOINTS": "after_charge=exit"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 13, done.stderr
    assert done.stdout == "before\n"


@pytest.fixture
def crash_after_charge(settings, plan, fake_stripe):
    """The blank-page story: Stripe took the money, then the request died before answering."""
    settings.DEBUG = False
    settings.FAILPOINTS = "before_response=raise"
    return Client(raise_request_exception=False)


def test_the_500_page_tells_a_paying_customer_what_is_known(crash_after_charge, settings):
    browser = crash_after_charge
    browser.get("/checkout/")
    reference = cookie_reference(browser)
    response = browser.post("/checkout/", {"email": "ada@example.com", "payment_method": CARD})
    page = response.content.decode()
    assert response.status_code == 500
    assert "may have gone through" in page and "Please don't pay again" in page
    assert reference in page and f"/orders/{reference}/" in page
    assert settings.SUPPORT_EMAILS[0] in page
    assert "Traceback" not in page and "FailpointError" not in page
    assert Order.objects.get(reference=reference).state == "fulfilled"  # and indeed it did


def test_the_500_page_still_helps_without_the_reference_cookie(crash_after_charge, settings):
    signed_reference = Client().get("/checkout/").context["signed_reference"]  # cookies blocked
    response = crash_after_charge.post(
        "/checkout/", {"email": "ada@example.com", "payment_method": CARD, "checkout_ref": signed_reference}
    )
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in page and "nothing is lost" in page
    assert settings.SUPPORT_EMAILS[0] in page
    assert "Traceback" not in page and "FailpointError" not in page


def test_the_500_page_renders_even_when_templates_fail(crash_after_charge, settings, monkeypatch):
    get_template = errors.loader.get_template

    def broken(name, *args, **kwargs):  # e.g. a bad deploy that lost the error template
        if name == "500.html":
            raise TemplateDoesNotExist(name)
        return get_template(name, *args, **kwargs)

    crash_after_charge.get("/checkout/")
    monkeypatch.setattr(errors.loader, "get_template", broken)
    response = crash_after_charge.post("/checkout/", {"email": "ada@example.com", "payment_method": CARD})
    page = response.content.decode()
    assert response.status_code == 500
    assert "may have gone through" in page and "nothing is lost" in page
    assert settings.SUPPORT_EMAILS[0] in page
    assert Order.objects.get().state == "fulfilled"


@pytest.mark.django_db
def test_the_404_page_points_a_customer_in_a_checkout_to_their_order(client, plan):
    client.get("/checkout/")
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert f"/orders/{cookie_reference(client)}/" in response.content.decode()
