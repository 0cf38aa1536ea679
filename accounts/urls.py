from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("", views.account, name="account"),
    path("sign-in/", views.signin, name="signin"),
    path("sign-in/<str:token>/", views.signin_link, name="signin_link"),
    path("sign-out/", views.signout, name="signout"),
]
