"""The ASGI application. Refuses to load on the errors the system checks report, deployment
checks included (billing.checks.refuse_unsafe_start)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()

from billing.checks import refuse_unsafe_start  # noqa: E402  (needs the apps loaded above)

refuse_unsafe_start("asgi")
