"""Logging that an operator can read and may share: one line per event, no personal data, no secrets.

Used by LOGGING in config/settings.py. Our own log lines name orders by their reference, never by
the customer's email; the formatter below is the safety net for text we do not write ourselves
(an email provider's error, a traceback, a third-party library's message).
"""

import logging
import re

# An email address (anything@host.tld), a Stripe secret or restricted key, a webhook signing secret.
SECRETS = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]+"
    r"|\bwhsec_[0-9A-Za-z]+"
)


def redact(text: str) -> str:
    """`text` with every email address, Stripe secret key and webhook secret replaced by a marker."""
    return SECRETS.sub(_marker, text)


def _marker(match: re.Match) -> str:
    found = match.group(0)
    if "@" in found:
        return "<email>"
    return found.split("_", 2)[0] + "_<redacted>"  # sk_<redacted>, rk_<redacted>, whsec_<redacted>


class RedactingFormatter(logging.Formatter):
    """A logging.Formatter whose output (message, traceback and all) goes through `redact()`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def not_healthz_503(record: logging.LogRecord) -> bool:
    """Filter for `django.request`: drop its ERROR line for each 503 of /healthz.

    An unhealthy /healthz answers 503 to every probe (a monitor every 30 s, the health timer every
    minute); Django would log each at ERROR. The health check logs what matters once: the alert it
    raises (WARNING) and the recovery (INFO). Other 5xx responses are still logged.
    """
    request = getattr(record, "request", None)
    return not (getattr(record, "status_code", None) == 503 and getattr(request, "path", "") == "/healthz")


def not_csp_report_refusal(record: logging.LogRecord) -> bool:
    """Filter for `django.request`: drop its WARNING line for each refused CSP report (400, 405, 413).

    Anyone can post to /csp-report/; a flood of junk must not write a line each (config/csp_report.py
    bounds what it logs itself). Other 4xx responses are still logged.
    """
    request = getattr(record, "request", None)
    status = getattr(record, "status_code", None) or 0
    return not (400 <= status < 500 and getattr(request, "path", "") == "/csp-report/")


def q_lifecycle_only(record: logging.LogRecord) -> bool:
    """Filter for django-q2's logger: its warnings and errors, and at INFO only the cluster's own
    lifecycle ("Q Cluster … starting.", "… running.", "… stopping.", "… has stopped."), not its
    lines per process and per task ("processing", "Processed", "ready for work", …)."""
    return record.levelno >= logging.WARNING or record.getMessage().startswith("Q Cluster ")
