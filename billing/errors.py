"""Error pages that never go blank and never need the database.

The 500 page reads only the signed reference cookie: when the customer was in a checkout,
it says that the payment may have gone through, that nothing is lost, and what happens next.
"""

import logging

from django.conf import settings
from django.http import HttpResponseForbidden, HttpResponseNotFound, HttpResponseServerError
from django.template import loader
from django.urls import reverse

from . import refcookie

logger = logging.getLogger(__name__)

FALLBACK_500 = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Something went wrong</title></head>
<body style="font-family:sans-serif;max-width:36rem;margin:3rem auto;line-height:1.5">
<h1>Something went wrong on our side</h1>
<p>If you were paying: your payment may have gone through, and nothing is lost. We check every
payment automatically within two minutes and email you your access link.</p>
<p>Write to <a href="mailto:{support}">{support}</a> and a person will help you.</p></body></html>"""


def _context(request) -> dict:
    try:
        reference = refcookie.read(request)
    except Exception:
        reference = None
    return {"reference": reference, "support_email": settings.SUPPORT_EMAILS[0], "site_url": settings.SITE_URL}


def server_error(request, *args, **kwargs):
    try:
        html = loader.get_template("500.html").render(_context(request))
    except Exception:
        logger.exception("the 500 page itself failed; serving the plain fallback")
        html = FALLBACK_500.format(support=settings.SUPPORT_EMAILS[0])
    return HttpResponseServerError(html)


def page_not_found(request, exception=None):
    try:
        html = loader.get_template("404.html").render(_context(request), request)
    except Exception:
        logger.exception("the 404 page failed")
        html = "<h1>Page not found</h1>"
    return HttpResponseNotFound(html)


CONSOLE_MESSAGE = (
    "This page expired (open too long, or you signed in or out in another tab), so nothing was done. "
    "Go back to the console, reload the page and try again."
)


def csrf_failure(request, reason: str = ""):
    """A refused form, usually because the browser blocks cookies. Nothing was charged: the
    request was stopped before any payment. In the support console (/admin/) there is no payment
    to speak of: the page says it expired and offers the way back to the console."""
    console = request.path.startswith(reverse("admin:index"))
    message = (
        CONSOLE_MESSAGE
        if console
        else (
            "Your browser did not send the security cookie this page needs, so we stopped before any payment. "
            "You have not been charged. Please allow cookies for this site, reload the page and try again."
        )
    )
    if "application/json" in request.headers.get("Accept", ""):
        from django.http import JsonResponse

        return JsonResponse({"error": message}, status=403)
    try:
        html = loader.get_template("403_csrf.html").render(
            {**_context(request), "message": message, "console": console}, request
        )
    except Exception:
        logger.exception("the CSRF failure page failed")
        html = f"<p>{message}</p>"
    return HttpResponseForbidden(html)
