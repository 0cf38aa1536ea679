"""The Content-Security-Policy header (django-csp, config/settings.py) and its report endpoint
(config/csp_report.py). The browser side (no violation on any page) is tests/test_csp_browser.py."""

import json
import logging
import re

import pytest
from django.test import Client

from config import csp_report
from tests.fixtures.console import client_for, staff

pytestmark = pytest.mark.django_db

NONCE = re.compile(r"'nonce-([A-Za-z0-9+/=]+)'")


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


def test_the_checkout_page_has_the_policy_and_its_scripts_carry_the_responses_nonce(plan):
    page = Client().get("/checkout/")
    policy = directives(page)
    [nonce] = NONCE.findall(page["Content-Security-Policy"])
    assert f"'nonce-{nonce}'" in policy["script-src"]
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"] and policy["form-action"] == ["'self'"]
    assert policy["default-src"] == ["'self'"] and policy["report-uri"] == ["/csp-report/"]
    scripts = re.findall(r"<script([^>]*)>", page.content.decode())
    assert len(scripts) == 2  # Stripe.js and the page's own script
    assert all(f'nonce="{nonce}"' in attributes and "src=" in attributes for attributes in scripts)


def test_each_response_gets_its_own_nonce(plan):
    nonces = {NONCE.findall(Client().get("/checkout/")["Content-Security-Policy"])[0] for _ in range(3)}
    assert len(nonces) == 3


def test_stripe_is_allowed_only_where_stripe_js_needs_it(plan, settings):
    policy = directives(Client().get("/checkout/"))
    stripe = {"https://js.stripe.com", "https://*.js.stripe.com"}
    assert stripe <= set(policy["script-src"]) and stripe <= set(policy["frame-src"])
    assert "https://hooks.stripe.com" in policy["frame-src"]  # 3-D Secure
    assert "https://api.stripe.com" in policy["connect-src"]
    assert not any("stripe" in source for source in policy.get("img-src", []) + policy["style-src"])
    # Tests point STRIPE_API_BASE at localstripe (its fake Stripe.js) only when it runs; never a wildcard.
    assert "*" not in policy["script-src"] and "https:" not in policy["script-src"]


def test_the_fake_stripe_origin_is_allowed_in_dev_and_only_there(tmp_path):
    from tests.test_settings_env import load_settings

    dev = load_settings(tmp_path, {"DEBUG": "1", "STRIPE_API_BASE": "http://127.0.0.1:8420"})
    assert "http://127.0.0.1:8420" in dev["CONTENT_SECURITY_POLICY"]
    production = load_settings(tmp_path, {})
    assert "127.0.0.1" not in production["CONTENT_SECURITY_POLICY"]


def test_the_support_console_has_the_policy_too(plan):
    page = client_for(staff("ana@paidup.example", "Support")).get("/admin/")
    assert page.status_code == 200
    assert directives(page)["frame-ancestors"] == ["'none'"]
    assert "<script>" not in page.content.decode()  # no inline script without a nonce


def test_no_template_has_an_inline_script_or_event_handler():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for template in [*root.glob("templates/**/*.html"), *root.glob("*/templates/**/*.html")]:
        if "emails" in template.parts:  # emails are not pages: mail clients run no script
            continue
        text = template.read_text()
        for match in re.finditer(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+=\"", text):
            if "nonce=" not in match.group(0) and 'type="application/json"' not in match.group(0):  # data, not code
                found.append(f"{template.relative_to(root)}: {match.group(0)}")
    assert found == []


# --- the report endpoint -----------------------------------------------------------------

REPORT = {
    "csp-report": {
        "document-uri": "https://paidup.example/orders/PU-ABC123/?k=1700000000:SiGnAtUrEsIgNaTuRe",
        "referrer": "https://mail.example/inbox?token=abc",
        "violated-directive": "script-src-elem",
        "effective-directive": "script-src-elem",
        "original-policy": "default-src 'self'; script-src 'self' 'nonce-abc'",
        "blocked-uri": "https://evil.example/x.js?session=123",
        "source-file": "https://paidup.example/account/sign-in/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789/",
        "line-number": 7,
        "script-sample": "steal(document.cookie)",
        "disposition": "enforce",
        "status-code": 200,
    }
}


@pytest.fixture
def reports(caplog):
    csp_report.budget.__init__(csp_report.REPORTS_PER_MINUTE)
    caplog.set_level(logging.WARNING, logger="csp.violation")
    return caplog


def post(body, content_type="application/csp-report", client=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return (client or Client(enforce_csrf_checks=True)).post("/csp-report/", data, content_type=content_type)


def test_a_report_is_logged_as_one_warning_line_without_links_or_samples(reports):
    answer = post(REPORT)
    assert answer.status_code == 204
    [record] = reports.records
    assert record.levelname == "WARNING" and record.name == "csp.violation"
    line = record.getMessage()
    assert line == (
        "CSP violation: directive=script-src-elem blocked=https://evil.example/x.js "
        "page=https://paidup.example/orders/PU-ABC123/ source=https://paidup.example/account/sign-in/…/:7 "
        "disposition=enforce"
    )
    for secret in ("SiGnAtUrE", "AbCdEfGhIj", "session=123", "document.cookie", "token=abc", "nonce-abc"):
        assert secret not in line


def test_a_reporting_api_report_is_logged_too(reports):
    body = [
        {
            "type": "csp-violation",
            "body": {
                "effectiveDirective": "frame-src",
                "blockedURL": "https://x.example/",
                "documentURL": "https://paidup.example/checkout/",
            },
        }
    ]
    assert post(body, content_type="application/reports+json").status_code == 204
    assert "directive=frame-src blocked=https://x.example/ page=https://paidup.example/checkout/" in reports.text


@pytest.mark.parametrize(
    "body", [b"not json", b"{}", b'{"csp-report": "x"}', b"[1, 2]", b"\xff\xfe", b"[" * 4000 + b"]" * 4000]
)
def test_a_malformed_report_is_refused_and_nothing_is_logged(reports, body):
    assert post(body).status_code == 400
    assert reports.records == []


def test_an_oversized_report_is_refused_before_it_is_read(reports, settings):
    body = {"csp-report": {**REPORT["csp-report"], "script-sample": "x" * settings.CSP_REPORT_MAX_BYTES}}
    assert post(body).status_code == 413
    assert reports.records == []


def test_only_post_is_answered(reports):
    assert Client().get("/csp-report/").status_code == 405
    assert reports.records == []


def test_a_flood_of_reports_is_bounded_and_counted(reports):
    for _ in range(csp_report.REPORTS_PER_MINUTE + 5):
        assert post(REPORT).status_code == 204
    assert len(reports.records) == csp_report.REPORTS_PER_MINUTE
    csp_report.budget.window -= 1  # the next minute
    post(REPORT)
    assert (
        reports.records[-1]
        .getMessage()
        .endswith(f"(and 5 more not logged, over {csp_report.REPORTS_PER_MINUTE} a minute)")
    )


def test_long_fields_are_cut_short(reports):
    body = {"csp-report": {**REPORT["csp-report"], "effective-directive": "d" * 5000}}
    post(body)
    assert len(reports.records[0].getMessage()) < 1200


@pytest.mark.parametrize("breaker", ["\n", "\r\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1b[31m"])
def test_a_report_cannot_forge_a_second_log_line(reports, breaker):
    forged = f"x{breaker}CRITICAL django: database is gone"
    body = {
        "csp-report": {
            "effective-directive": forged,
            "blocked-uri": f"https://evil.example/{forged}",
            "document-uri": forged,
            "source-file": f"https://paidup.example{breaker}/a",
            "line-number": forged,
            "disposition": forged,
        }
    }
    assert post(body).status_code == 204
    line = reports.records[0].getMessage()
    assert len(line.splitlines()) == 1 and line.isprintable()
    assert line.count("CRITICAL") == 4  # each forged field (but the long path segment) is there, escaped


def test_escaped_fields_stay_short(reports):
    body = {"csp-report": {**REPORT["csp-report"], "effective-directive": "\n" * 500, "document-uri": "\u2028" * 500}}
    assert post(body).status_code == 204
    line = reports.records[0].getMessage()
    assert line.isprintable() and len(line) < 1200


def test_an_empty_post_is_a_bad_request_not_too_large(reports):
    assert Client().post("/csp-report/", b"", content_type="application/csp-report").status_code == 400
    assert reports.records == []


def test_an_unparseable_address_is_logged_as_a_question_mark_not_an_error(reports):
    body = {"csp-report": {**REPORT["csp-report"], "blocked-uri": "https://[evil.example/secret"}}
    assert post(body).status_code == 204
    assert "blocked=? " in reports.records[0].getMessage()
