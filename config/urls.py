from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from billing import views as billing_views
from billing.email_webhooks import TrackingWebhook
from billing.health_views import healthz, livez
from config.csp_report import csp_report
from config.metrics import metrics_view
from support.passkey_views import console_urls as sign_in_method_urls

urlpatterns = [
    path("", billing_views.home, name="home"),
    path("healthz", healthz, name="healthz"),
    # Liveness for the load balancer (no database): docs/deploy.md, 14.
    path("livez", livez, name="livez"),
    path(settings.CSP_REPORT_PATH.strip("/") + "/", csp_report, name="csp_report"),
    # Prometheus; bearer token METRICS_TOKEN (docs/deploy.md, "Metrics").
    path("metrics", metrics_view, name="metrics"),
    path("", include("billing.urls")),
    path("account/", include("accounts.urls")),
    path("help/", include("support.urls")),
    # Staff passkeys: the person's sign-in methods page (inside the console's guard) and the
    # WebAuthn JSON endpoints (outside it: they are how a person confirms it's them).
    path("admin/sign-in-methods/", include(sign_in_method_urls())),
    path("staff/passkeys/", include("support.passkey_urls")),
    path("admin/", admin.site.urls),
    path("stripe/", include("billing.webhook_urls")),
    # The email provider's delivery/bounce webhook (Postmark's format; docs/deploy.md).
    path("anymail/postmark/tracking/", TrackingWebhook.as_view(), name="email_tracking"),
]
if settings.SHOW_DEV_EMAILS:
    from billing.errors import page_not_found, server_error

    urlpatterns.append(path("dev/emails/", include("billing.dev_urls")))
    # The customer's 404 and 500 pages as production serves them (DEBUG shows Django's own instead).
    urlpatterns.append(path("dev/errors/404/", page_not_found, name="dev-404"))
    urlpatterns.append(path("dev/errors/500/", server_error, name="dev-500"))

handler404 = "billing.errors.page_not_found"
handler500 = "billing.errors.server_error"
