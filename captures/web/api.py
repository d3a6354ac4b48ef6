"""The JSON API (docs/api.md): validate, call an action, answer JSON. Nothing else here."""

from __future__ import annotations

import functools
import json

from django.conf import settings
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from captures.access.auth import api_view
from captures.jobs import actions
from captures.models import Capture
from captures.sources import base as sources

LIST_LIMIT = 200


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def capture_json(capture: Capture, redacted: bool = False) -> dict:
    doc = {
        "id": str(capture.id), "name": capture.name, "status": capture.status,
        "counters": {"packets": capture.packets, "bytes": capture.bytes,
                     "elapsed": round(capture.elapsed, 2)},
        "error": capture.error, "created": capture.created.isoformat(),
        "started": capture.started.isoformat() if capture.started else None,
        "finished": capture.finished.isoformat() if capture.finished else None,
        "summary": capture.summary, "analysis": bool(capture.analysis_path),
        "pcap": bool(capture.pcap_path),
    }
    if not redacted:
        doc.update({
            "owner": capture.owner.get_username(),
            "target": {"kind": capture.target_kind, **capture.target_spec},
            "filter": capture.bpf_filter,
            "limits": {"seconds": capture.limit_seconds, "packets": capture.limit_packets,
                       "bytes": capture.limit_bytes},
            "log": capture.log, "worker": capture.worker_id,
        })
    return doc


def _own_capture(request, capture_id) -> Capture:
    # Another user's capture is answered exactly like a missing one.
    capture = Capture.objects.select_related("owner").filter(id=capture_id).first()
    if capture is None or not capture.visible_to(request.user):
        raise Http404("no such capture")
    return capture


def _read_json(request):
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise actions.ActionError("the body is not valid JSON") from None


def _read_upto(path, size: int, chunk: int = 256 * 1024):
    with open(path, "rb") as fp:
        while size > 0:
            data = fp.read(min(chunk, size))
            if not data:
                return
            size -= len(data)
            yield data


def _pcap_response(capture: Capture):
    path = capture.pcap_file
    if path is None or not path.exists():
        return error(404, "no capture file stored")
    filename = f"{capture.name}{path.suffix}"
    if capture.is_terminal or capture.target_kind == "upload":
        return FileResponse(open(path, "rb"), as_attachment=True, filename=filename,
                            content_type="application/vnd.tcpdump.pcap")
    # Still growing: send what is on disk now, and say exactly how much.
    size = path.stat().st_size
    response = StreamingHttpResponse(_read_upto(path, size),
                                     content_type="application/vnd.tcpdump.pcap")
    response["Content-Length"] = str(size)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _analysis_response(capture: Capture):
    path = capture.analysis_file
    if path is None or not path.exists():
        if capture.is_terminal:
            return error(404, "no analysis for this capture")
        return error(409, f"the analysis is not ready (the capture is {capture.status})")
    return FileResponse(open(path, "rb"), content_type="application/json")


def json_errors(view):
    """ActionError and Http404 as JSON answers, not HTML pages."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except actions.ActionError as exc:
            return error(exc.status, exc.message)
        except Http404 as exc:
            return error(404, str(exc) or "not found")

    return wrapper


@require_http_methods(["GET", "POST"])
@api_view
@json_errors
def captures(request):
    if request.method == "GET":
        actions.reap_stale()
        rows = Capture.objects.select_related("owner")
        if not request.user.is_staff:
            rows = rows.filter(owner=request.user)
        return JsonResponse({"captures": [capture_json(c) for c in rows[:LIST_LIMIT]]})
    if request.content_type == "multipart/form-data":
        # Refuse an oversize body by its declared length before reading it.
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > settings.KVIZ_MAX_UPLOAD_BYTES + 64 * 1024:
            return error(413, f"the file is larger than {settings.KVIZ_MAX_UPLOAD_BYTES} bytes")
        capture = actions.upload_capture(
            request.user, request.POST.get("name"), request.FILES.get("file"),
            meta=request.FILES.get("meta") or request.POST.get("meta"),
            inventory=request.FILES.get("inventory") or request.POST.get("inventory"))
    else:
        capture = actions.start_capture(request.user, _read_json(request))
    return JsonResponse(capture_json(capture), status=201)


@require_GET
@api_view
@json_errors
def capture_detail(request, capture_id):
    actions.reap_stale()
    return JsonResponse(capture_json(_own_capture(request, capture_id)))


@require_POST
@api_view
@json_errors
def capture_stop(request, capture_id):
    capture = actions.stop_capture(_own_capture(request, capture_id))
    return JsonResponse(capture_json(capture), status=202)


@require_GET
@api_view
@json_errors
def capture_pcap(request, capture_id):
    return _pcap_response(_own_capture(request, capture_id))


@require_GET
@api_view
@json_errors
def capture_analysis(request, capture_id):
    return _analysis_response(_own_capture(request, capture_id))


@require_POST
@api_view
@json_errors
def capture_share(request, capture_id):
    capture = _own_capture(request, capture_id)
    body = _read_json(request) or {}
    if not isinstance(body, dict):
        raise actions.ActionError("the body must be a JSON object")
    link, token = actions.share_capture(request.user, capture, body.get("redacted", False),
                                        body.get("days"))
    # `url` is what a person opens (the read-only page); `api_url` what a script reads.
    url = request.build_absolute_uri(reverse("page-share", args=[token]))
    api_url = request.build_absolute_uri(reverse("share", args=[token]))
    return JsonResponse({"url": url, "api_url": api_url, "token": token,
                         "expires": link.expires.isoformat(),
                         "redacted": link.redacted}, status=201)


@require_http_methods(["DELETE"])
@api_view
@json_errors
def capture_share_revoke(request, capture_id, token):
    actions.revoke_share(_own_capture(request, capture_id), token)
    return JsonResponse({"revoked": True})


def _share(token):
    link = actions.find_share(token)
    if link is None:
        raise Http404("this share link is unknown, expired or revoked")
    return link


@require_http_methods(["GET", "DELETE"])
@api_view(required=False)
@json_errors
def share(request, token):
    if request.method == "DELETE":
        link = actions.find_share(token)
        if link is None or not link.capture.visible_to(request.user):
            return error(404, "this share link is unknown, expired or revoked")
        actions.revoke_share(link.capture, token)
        return JsonResponse({"revoked": True})
    link = _share(token)
    return JsonResponse(capture_json(link.capture, redacted=link.redacted) | {
        "redacted": link.redacted, "expires": link.expires.isoformat()})


@require_GET
@json_errors
def share_pcap(request, token):
    link = _share(token)
    if link.redacted:
        return error(403, "this share link does not include the packets")
    return _pcap_response(link.capture)


@require_GET
@json_errors
def share_analysis(request, token):
    return _analysis_response(_share(token).capture)


@require_GET
@api_view
@json_errors
def targets(request):
    return JsonResponse({"targets": sources.list_targets(request.user)})
