"""Which pages may open kviz's WebSockets: kviz's own origin, exactly (scheme, host and port).

A browser sends every WebSocket handshake with the user's cookies, whatever page opened it, so
the Origin header is the only thing that tells kviz's own pages from another site's, or from
another service on another port of the same host. Allowed: the origin the request itself was
addressed to (its Host header, once Django's ALLOWED_HOSTS accepts it, with the scheme the
client used: behind kviz's own TLS proxy, its X-Forwarded-Proto), and CSRF_TRUSTED_ORIGINS.
A handshake without Origin or Host is refused: browsers always send both.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


def allowed_origins(scope) -> set[tuple[str, str, int]]:
    headers = {name.lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    allowed = {key for key in map(_origin_key, settings.CSRF_TRUSTED_ORIGINS) if key}
    host = headers.get(b"host", "")
    domain, _port = split_domain_port(host)
    if domain and validate_host(domain, settings.ALLOWED_HOSTS):
        secure = scope.get("scheme") == "wss" or (
            settings.KVIZ_BEHIND_PROXY and headers.get(b"x-forwarded-proto", "") == "https")
        own = _origin_key(f"{'https' if secure else 'http'}://{host}")
        if own:
            allowed.add(own)
    return allowed


def origin_allowed(scope) -> bool:
    origins = [value.decode("latin-1") for name, value in scope.get("headers", [])
               if name.lower() == b"origin"]
    if len(origins) != 1:
        return False
    key = _origin_key(origins[0])
    return key is not None and key in allowed_origins(scope)


class SameOriginValidator:
    """ASGI middleware: a WebSocket from any other origin is refused (403) before routing."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
