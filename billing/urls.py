from django.urls import path

from . import views

app_name = "billing"
urlpatterns = [
    path("checkout/", views.checkout_view, name="checkout"),
    path("orders/<str:reference>/", views.order_status, name="order"),
]
