"""PaidUp's URLconf with dj-stripe's own webhook view at the same path (stripe/webhook/<uuid>/)."""

from django.urls import include, path

from config import urls as paidup

urlpatterns = [p for p in paidup.urlpatterns if str(p.pattern) != "stripe/"] + [
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
]
handler404 = paidup.handler404
handler500 = paidup.handler500
