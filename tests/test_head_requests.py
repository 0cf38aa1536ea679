"""HEAD is answered wherever GET is (issue 12 fix): uptime monitors ask with HEAD, and
docs/deploy.md's checklist uses `curl -sI`. Django's test client strips a HEAD answer's body."""

import pytest

from tests.test_metrics import TOKEN

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/healthz", "/checkout/", "/help/charged/", "/checkout/email-suggestion/?domain=x"])
def test_head_gets_what_get_gets_without_a_body(client, plan, path):
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code != 405
    assert head["Content-Type"] == get["Content-Type"] and head.content == b""


def test_head_on_the_support_console_verify_page_is_not_refused(client):
    assert client.head("/admin/confirm/").status_code != 405


def test_head_on_metrics_with_the_token(client, settings):
    settings.METRICS_TOKEN = TOKEN
    assert client.head("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
