"""The WSGI application (gunicorn config.wsgi). Refuses to load on the errors the system checks
report, deployment checks included (billing.checks.refuse_unsafe_start), and builds the URL
resolver's reverse map before the first request (see below)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from billing.checks import refuse_unsafe_start  # noqa: E402  (needs the apps loaded above)

refuse_unsafe_start("wsgi")

# Django builds the reverse map of every URL pattern (the admin's included) on the first
# reverse() in a process: 0.3-0.7 s of CPU, which the first request after a restart would pay,
# typically a webhook of a backlog (the access email's sign-in link). Built here, it is paid
# when gunicorn starts the worker (docs/benchmarks.md, "Cheaper webhooks").
from django.urls import get_resolver  # noqa: E402

get_resolver().reverse_dict  # noqa: B018  (the property builds the map)
