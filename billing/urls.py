from django.urls import path

from . import order_views, views

app_name = "billing"
urlpatterns = [
    path("checkout/", views.checkout_view, name="checkout"),
    path("checkout/another/", views.checkout_another, name="checkout_another"),
    path("checkout/email-suggestion/", views.email_suggestion, name="email_suggestion"),
    path("orders/<str:reference>/", order_views.order_status, name="order"),
    path("orders/<str:reference>/email/", order_views.correct_email, name="correct_email"),
]
