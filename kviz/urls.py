from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from captures.access.throttle import ThrottledLoginView

urlpatterns = [
    # Browsers ask for it at the root whatever the page links.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.ico"), permanent=True)),
    # The admin signs in through the same throttled form.
    path("admin/login/", RedirectView.as_view(url="/login/?next=/admin/")),
    path("admin/", admin.site.urls),
    path("login/", ThrottledLoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("captures.web.urls")),
]

handler400 = "captures.web.errors.bad_request"
handler403 = "captures.web.errors.forbidden"
handler404 = "captures.web.errors.not_found"
handler500 = "captures.web.errors.server_error"
