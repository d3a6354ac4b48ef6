"""What a request gets when something fails outside any view's own handling: an API client
always the documented JSON error (docs/api.md), never an HTML page; a person, Django's pages.

Django calls these for an exception no view caught (in a view, a middleware, or the session
and user lookups before the view), and for URLs nothing matches. A database that cannot be
reached is a 503 that says so: the request may succeed in a moment, and nothing was changed.
A disk with no room left (an upload's temporary file, before any view ran) is a 507.
"""

from __future__ import annotations

import errno
import sys

from django.db import DatabaseError, InterfaceError, OperationalError
from django.views import defaults

from captures.web.common import error

UNREACHABLE = (OperationalError, InterfaceError)


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def server_error(request, template_name=defaults.ERROR_500_TEMPLATE_NAME):
    failure = sys.exc_info()[1]  # Django calls this inside its except block
    if isinstance(failure, UNREACHABLE):
        answer = error(503, "the database cannot be reached; try again in a moment")
        answer["Retry-After"] = "5"
        return answer if _is_api(request) else _page(request, answer)
    if isinstance(failure, OSError) and failure.errno in (errno.ENOSPC, errno.EDQUOT):
        answer = error(507, "disk full: the server has no room left; nothing was kept, try "
                            "again later")
        return answer if _is_api(request) else _page(request, answer)
    if _is_api(request):
        what = "the database refused the request" if isinstance(failure, DatabaseError) else (
            "the server failed to answer; the failure is logged")
        return error(500, what)
    return defaults.server_error(request, template_name)


def _page(request, answer):
    response = defaults.server_error(request)
    response.status_code = answer.status_code
    if answer.has_header("Retry-After"):
        response["Retry-After"] = answer["Retry-After"]
    return response


def not_found(request, exception, template_name=defaults.ERROR_404_TEMPLATE_NAME):
    if _is_api(request):
        return error(404, "no such API endpoint (see docs/api.md)")
    return defaults.page_not_found(request, exception, template_name)


def bad_request(request, exception, template_name=defaults.ERROR_400_TEMPLATE_NAME):
    if _is_api(request):
        return error(400, "bad request")
    return defaults.bad_request(request, exception, template_name)


def forbidden(request, exception, template_name=defaults.ERROR_403_TEMPLATE_NAME):
    if _is_api(request):
        return error(403, str(exception) or "forbidden")
    return defaults.permission_denied(request, exception, template_name)
