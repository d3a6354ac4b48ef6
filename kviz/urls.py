from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from captures.access.throttle import ThrottledLoginView

urlpatterns = [
    # The admin signs in through the same throttled form.
    path("admin/login/", RedirectView.as_view(url="/login/?next=/admin/")),
    path("admin/", admin.site.urls),
    path("login/", ThrottledLoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("captures.web.urls")),
]
