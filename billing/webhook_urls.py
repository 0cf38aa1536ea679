from django.urls import path

from .webhooks import stripe_webhook

# Same path as dj-stripe's own view (stripe/webhook/<uuid>/), behind PaidUp's guard.
urlpatterns = [path("webhook/<uuid:uuid>/", stripe_webhook, name="stripe_webhook")]
