"""The WSGI application (gunicorn config.wsgi). Refuses to load on the errors the system checks
report, deployment checks included (billing.checks.refuse_unsafe_start)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from billing.checks import refuse_unsafe_start  # noqa: E402  (needs the apps loaded above)

refuse_unsafe_start("wsgi")
