"""The Content-Security-Policy header on every answer (settings.KVIZ_CONTENT_SECURITY_POLICY).

The pages load their scripts and styles as files and never inline them, so the policy can
forbid inline script outright: text that came from a packet (a DNS name, an HTTP target) can
never run, even where a template or a renderer forgot to escape it.
"""

from __future__ import annotations

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", settings.KVIZ_CONTENT_SECURITY_POLICY)
        return response
