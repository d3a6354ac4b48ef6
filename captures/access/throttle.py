"""Sign-in throttling: a password cannot be guessed faster than a few tries per window.

Failures are counted in the shared cache per account (the username as typed, case-folded) and
per client address, each over a fixed window that starts at its first failure. Past either
limit, every attempt is refused, the right password included, until that window ends: telling
a right password apart from a wrong one would let the guessing go on. A success clears the
account's count, not the address's (one address may try many accounts).
"""

from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"login-failures:{kind}:{digest}"


def client_address(request) -> str:
    """The address that sent the request; behind kviz's own proxy, the one it saw."""
    if settings.KVIZ_BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        # The proxy appends what it saw last; anything before it came from the client.
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def _counters(request, username: str) -> list[tuple[str, int]]:
    return [(_key("account", username.casefold()), settings.KVIZ_LOGIN_FAILURES_PER_ACCOUNT),
            (_key("address", client_address(request)), settings.KVIZ_LOGIN_FAILURES_PER_ADDRESS)]


def seconds_blocked(request, username: str) -> int:
    """0 when `username` may try to sign in from this address now, else seconds to wait."""
    now = time.time()
    wait = 0.0
    for key, limit in _counters(request, username):
        count, started = cache.get(key, (0, now))
        if count >= limit:
            wait = max(wait, started + settings.KVIZ_LOGIN_WINDOW_SECONDS - now)
    return math.ceil(wait) if wait > 0 else 0


def record_failure(request, username: str) -> None:
    now = time.time()
    window = settings.KVIZ_LOGIN_WINDOW_SECONDS
    for key, _limit in _counters(request, username):
        count, started = cache.get(key, (0, now))
        if now - started >= window:
            count, started = 0, now
        # Not atomic: parallel guesses may each count once less, never more than the window.
        cache.set(key, (count + 1, started), timeout=max(1, math.ceil(started + window - now)))


def record_success(request, username: str) -> None:
    cache.delete(_counters(request, username)[0][0])


class ThrottledLoginView(auth_views.LoginView):
    """Django's sign-in form, refusing attempts past the limits with 429."""

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")[:150]
        wait = seconds_blocked(request, username)
        if wait:
            form = self.get_form_class()(request, initial={"username": username})
            response = self.render_to_response(self.get_context_data(
                form=form, throttled_minutes=max(1, math.ceil(wait / 60))), status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        record_failure(self.request, self.request.POST.get("username", "")[:150])
        return super().form_invalid(form)

    def form_valid(self, form):
        record_success(self.request, form.get_user().get_username())
        return super().form_valid(form)
