from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from billing import views as billing_views
from billing.health_views import healthz

urlpatterns = [
    path("", billing_views.home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("", include("billing.urls")),
    path("account/", include("accounts.urls")),
    path("help/", include("support.urls")),
    path("admin/", admin.site.urls),
    path("stripe/", include("billing.webhook_urls")),
]
if settings.SHOW_DEV_EMAILS:
    urlpatterns.append(path("dev/emails/", include("billing.dev_urls")))

handler404 = "billing.errors.page_not_found"
handler500 = "billing.errors.server_error"
