from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from annotation.views import accounts, health, home

urlpatterns = [
    path("", home.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", accounts.PasswordChangeView.as_view(), name="password_change"),
    path("admin/", admin.site.urls),
    path("api/", include("annotation.api.urls", namespace="api")),
    path("", include("annotation.urls")),
]
