"""What every JSON endpoint and page of the web edge shares: the error answer, which capture a
request may see, which share link a token names, and reading a JSON body."""

from __future__ import annotations

import functools
import json

from django.http import Http404, JsonResponse

from captures.jobs import actions
from captures.models import Capture, ShareLink

GONE = "this share link is unknown, expired or revoked"


def error(status: int, message: str) -> JsonResponse:
    """Every refusal of the API: `{"error": "<one line for a human>"}` (docs/api.md)."""
    return JsonResponse({"error": message}, status=status)


def refusal(exc: actions.ActionError) -> JsonResponse:
    """An action's refusal as JSON, with Retry-After when it passes by itself (429, 503, a
    capture still recording)."""
    answer = error(exc.status, exc.message)
    if exc.retry_after is not None:
        answer["Retry-After"] = str(max(1, int(exc.retry_after)))
    return answer


def json_text(doc) -> str:
    """A JSON answer written out compactly, as the stored documents are."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def json_errors(view):
    """ActionError and Http404 as JSON answers, not HTML pages."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except actions.ActionError as exc:
            return refusal(exc)
        except Http404 as exc:
            return error(404, str(exc) or "not found")

    return wrapper


def own_capture(request, capture_id) -> Capture:
    # Another user's capture is answered exactly like a missing one (404), pages and API alike.
    capture = Capture.objects.select_related("owner").filter(id=capture_id).first()
    if capture is None or not capture.visible_to(request.user):
        raise Http404("no such capture")
    return capture


def share_link(token) -> ShareLink:
    link = actions.find_share(token)
    if link is None:
        raise Http404(GONE)
    return link


def read_json(request):
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise actions.ActionError("the body is not valid JSON") from None
