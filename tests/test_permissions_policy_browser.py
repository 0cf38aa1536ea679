"""Chromium reads the Permissions-Policy header without a word (issue 12 fix): an unrecognised
feature ("bluetooth") was an "Error with Permissions-Policy header" console line on every page."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_chromium_recognises_every_feature_in_the_header(live_server, plan, page):
    said: list[str] = []
    page.on("console", lambda message: said.append(message.text) if "Permissions-Policy" in message.text else None)
    page.goto(f"{live_server.url}/help/charged/")
    page.wait_for_load_state("load")
    assert said == []
