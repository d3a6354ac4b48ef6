"""Who is asking: session users (pages) and API tokens (scripts), and share-link tokens.

Tokens are random 256-bit strings; only their SHA-256 is stored, so a database leak gives no
usable token. Bearer requests are CSRF-exempt (no browser sends that header by itself); session
requests keep Django's CSRF check.
"""

from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from captures.access.tokens import new_token, token_hash
from captures.models import ApiToken
from captures.web.common import error


def create_api_token(username: str) -> str:
    """A fresh API token for `username` (raises User.DoesNotExist); returns it, once."""
    user = get_user_model().objects.get(username=username)
    token = new_token()
    ApiToken.objects.create(user=user, token_hash=token_hash(token), prefix=token[:8])
    return token


def bearer_token(request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


def user_for_token(token: str):
    if not token or len(token) > 200:
        return None
    row = (ApiToken.objects.select_related("user")
           .filter(token_hash=token_hash(token), user__is_active=True).first())
    if row is None:
        return None
    ApiToken.objects.filter(pk=row.pk).update(last_used=timezone.now())
    return row.user


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request, reason):
        return reason


def _authenticate(request, required: bool):
    """None when the request may go on, else the error response."""

    token = bearer_token(request)
    if token is not None:
        user = user_for_token(token)
        if user is None:
            return error(401, "invalid API token")
        request.user = user
        return None
    if not request.user.is_authenticated:
        if required:
            return error(401, "authentication required (session or Bearer token)")
        return None
    reason = _CsrfCheck(lambda r: None).process_view(request, None, (), {})
    if reason:
        return error(403, f"CSRF check failed: {reason}")
    return None


def api_view(view=None, *, required: bool = True):
    """JSON API entry: Bearer token or session user (else 401); CSRF only for sessions.

    `required=False` lets anonymous requests through (share links) but still rejects a bad
    token and checks CSRF for a session.
    """
    if view is None:
        return functools.partial(api_view, required=required)

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        problem = _authenticate(request, required)
        return problem or view(request, *args, **kwargs)

    wrapper.csrf_exempt = True  # the wrapper does the check itself, for sessions only
    return wrapper
