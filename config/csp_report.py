"""The Content-Security-Policy report endpoint: what a browser refused, one WARNING line each.

Browsers post a violation of the policy (config/settings.py, CONTENT_SECURITY_POLICY's report-uri)
here, as `application/csp-report` (`{"csp-report": {...}}`) or, from the Reporting API, as
`application/reports+json` (a list of `{"type": "csp-violation", "body": {...}}`). The operator
reads them in the web server's log (`journalctl -u paidup-web | grep csp.violation`).

Anyone can post here, so the endpoint trusts nothing it is sent:
- no CSRF token (a browser sends none with a report), no session, no database write;
- bodies above CSP_REPORT_MAX_BYTES are refused (413) before parsing; empty or malformed ones (no
  Content-Length, not JSON, not a report, nested thousands deep) get 400;
- a page address keeps its origin and path only: the query string (the order page's signed `?k=`
  link), the fragment and any long path segment (a sign-in link's token) are dropped, so a log
  line never holds a working link; script samples are never logged;
- every field logged is cut to FIELD_MAX characters, and control characters (CR, LF, tab, ...)
  and Unicode line/paragraph separators are written as escapes (`\\n`, `\\u2028`), so one
  report is always one log line and cannot forge another ("... CRITICAL ..."); one process logs
  at most REPORTS_PER_MINUTE reports a minute (a broken page in every visitor's browser, or a
  flood, cannot fill the disk); the rest are counted and the count is logged with the next line that gets through.
"""

import json
import logging
import threading
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

logger = logging.getLogger("csp.violation")

REPORTS_PER_MINUTE = 30
FIELD_MAX = 200
LONG_SEGMENT = 24  # a path segment this long is a token, not a name (references are 9 characters)


class _Budget:
    """At most `per_minute` reports logged per minute in this process; counts the ones dropped."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.lock = threading.Lock()
        self.window = 0
        self.used = 0
        self.dropped = 0

    def take(self) -> int | None:
        """None when this minute's budget is spent; otherwise how many were dropped before (reset)."""
        with self.lock:
            minute = int(time.monotonic() // 60)
            if minute != self.window:
                self.window, self.used = minute, 0
            if self.used >= self.per_minute:
                self.dropped += 1
                return None
            self.used += 1
            dropped, self.dropped = self.dropped, 0
            return dropped


budget = _Budget(REPORTS_PER_MINUTE)


def clean(value: object) -> str:
    """`value` as text for one log line: at most FIELD_MAX characters, every unprintable one
    (control characters, U+2028/U+2029 line separators, format characters) as its escape."""
    text = str(value)[:FIELD_MAX]
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)[:FIELD_MAX]


def safe_url(value: object) -> str:
    """A reported address as origin + path, without query, fragment or token-like segments.

    Keywords browsers report instead of an address ("inline", "eval", "data") are kept as they are.
    The result is clean() (one line, FIELD_MAX characters at most); an unparseable one is "?".
    """
    text = str(value or "")[:2048]
    try:
        parts = urlsplit(text)
    except ValueError:  # "https://[x": not an address (logged as "?", its path may hold a token)
        return "?"
    if not parts.scheme or not parts.netloc:
        return clean(text.split("?")[0].split("#")[0])
    path = "/".join("…" if len(segment) >= LONG_SEGMENT else segment for segment in parts.path.split("/"))
    return clean(f"{parts.scheme}://{parts.netloc}{path}")


def violations(body: bytes) -> list[dict]:
    """The violations in a report body (either format), each as the browser's field dict.

    Raises ValueError when the body is not JSON or has neither shape.
    """
    data = json.loads(body)
    if isinstance(data, dict) and isinstance(data.get("csp-report"), dict):
        return [data["csp-report"]]
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return [
            item["body"] for item in data if item.get("type") == "csp-violation" and isinstance(item.get("body"), dict)
        ]
    raise ValueError("not a CSP report")


def describe(report: dict) -> str:
    """One line: which directive refused what, on which page (no query strings, no samples).

    Every field is clean(): a report cannot add a line break or a second line to the log.
    """

    def field(*names: str) -> str:
        for name in names:
            if report.get(name) not in (None, ""):
                return clean(report[name])
        return "-"

    return (
        f"directive={field('effective-directive', 'effectiveDirective', 'violated-directive')} "
        f"blocked={safe_url(report.get('blocked-uri', report.get('blockedURL')))} "
        f"page={safe_url(report.get('document-uri', report.get('documentURL')))} "
        f"source={safe_url(report.get('source-file', report.get('sourceFile')))}:"
        f"{field('line-number', 'lineNumber')} disposition={field('disposition')}"
    )


@csrf_exempt
@require_POST
def csp_report(request: HttpRequest) -> HttpResponse:
    """Log the violations a browser reports; 204 when read, 400 when empty or malformed, 413 when too big."""
    length = request.headers.get("Content-Length", "")
    if not length.isdigit():  # an empty POST (no length) or a nonsense one
        return HttpResponse(status=400)
    if int(length) > settings.CSP_REPORT_MAX_BYTES:
        return HttpResponse(status=413)
    try:
        reports = violations(request.read(settings.CSP_REPORT_MAX_BYTES + 1)[: settings.CSP_REPORT_MAX_BYTES])
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError included), or nested too deep
        return HttpResponse(status=400)
    for report in reports[:5]:
        dropped = budget.take()
        if dropped is None:
            break
        suffix = f" (and {dropped} more not logged, over {REPORTS_PER_MINUTE} a minute)" if dropped else ""
        logger.warning("CSP violation: %s%s", describe(report), suffix)
    return HttpResponse(status=204)
