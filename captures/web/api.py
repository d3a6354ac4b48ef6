"""The JSON API (docs/api.md): validate, call an action, answer JSON. Nothing else here."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from captures.access.auth import api_view
from captures.adapters import storage
from captures.analysis import CaptureError, pcapmerge
from captures.jobs import actions, derived, findings, keylogs, local_copy, retention
from captures.models import Capture
from captures.sources import base as sources
from captures.web import common, download, listing, redaction
from captures.web.common import error, json_errors, json_text, own_capture, read_json, share_link


def capture_json(capture: Capture) -> dict:
    """The owner's (or staff's) view of a capture; share links: redaction.capture. Retention
    and the findings' kinds are the owner's alone: a share link never shows them."""
    expires = retention.expires(capture)
    return {**redaction.capture(capture, redaction.OWNER), "pinned": capture.pinned,
            "expires": expires.isoformat() if expires else None,
            "findings": findings.decode(capture.finding_kinds),
            "keylog": keylogs.path(capture.id) is not None}


def _read_upto(path, size: int, chunk: int = 256 * 1024):
    with open(path, "rb") as fp:
        while size > 0:
            data = fp.read(min(chunk, size))
            if not data:
                return
            size -= len(data)
            yield data


def _pcap_response(capture: Capture, which: str | None = None, request=None):
    """The stored packets: `?file=N` one file as stored (N is the analysis' file index);
    without it the only file, or for several one merged pcapng (an interface per place and
    interface, in time order). A finished file streams from the storage and honours Range."""
    files = capture.stored_files()
    if not files:
        return error(404, "no capture file stored")
    if which is None and len(files) > 1:
        return _merged_response(capture, files)
    try:
        index = 0 if which is None else int(which)
    except ValueError:
        return error(400, "file must be a file index (0, 1, ...)")
    if not 0 <= index < len(files):
        return error(404, "no such capture file")
    stored = files[index]
    path = stored.file
    filename = f"{capture.name}{_file_suffix(stored, len(files))}{path.suffix}"
    if capture.is_terminal or capture.target_kind == "upload" or not storage.is_local():
        response = download.stored_file(request, stored.path, filename)
        if response is not None:
            return response
        # A remote storage gets the files when the recording ends: until then only a web
        # process on the worker's machine has them (its spool); any other says where (409).
        path = local_copy.spooled(capture, stored)
        if path is None:
            local_copy.readable(capture, stored)  # raises the 409 while it records elsewhere
            return error(404, "no such capture file")
    elif not path.exists():
        return error(404, "no such capture file")
    # Still growing: send what is on disk now, and say exactly how much.
    size = path.stat().st_size
    response = StreamingHttpResponse(_read_upto(path, size),
                                     content_type="application/vnd.tcpdump.pcap")
    response["Content-Length"] = str(size)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _file_suffix(stored, count: int) -> str:
    if count == 1:
        return ""
    place = re.sub(r"[^A-Za-z0-9_.-]+", "-", stored.vantage or stored.file_name)
    return f"-{stored.position + 1}" + (f"-{place.strip('-')[:60]}" if place.strip("-") else "")


def _merged_response(capture: Capture, files) -> StreamingHttpResponse:
    files = [f for f in files if (f.file.exists() if storage.is_local()
                                  else storage.exists(f.path))]
    if not files and not storage.is_local() and not capture.is_terminal:
        raise local_copy.recording_elsewhere(capture)  # 409: in its worker's spool still
    copies = contextlib.ExitStack()  # a remote storage's files, copied for the merge
    paths = copies.enter_context(storage.local_copies([f.path for f in files]))
    inputs = [pcapmerge.MergeInput(str(path), f.label,
                                   {int(k): str(v) for k, v in (f.interfaces or {}).items()})
              for f, path in zip(files, paths, strict=True)]
    try:
        chunks = pcapmerge.merged_pcapng(inputs)
        first = next(chunks)  # a file that cannot be read is an error, not a broken download
    except CaptureError as exc:
        copies.close()
        return error(422, f"the files cannot be merged: {exc}")
    except BaseException:
        copies.close()
        raise

    response = StreamingHttpResponse(_Closing(itertools.chain([first], chunks), copies.close),
                                     content_type="application/vnd.tcpdump.pcap")
    response["Content-Disposition"] = f'attachment; filename="{capture.name}-merged.pcapng"'
    return response


class _Closing:
    """Chunks that close `closer` with the response (Django closes what it streams), so a
    remote storage's copies go when the download ends, is cut short or never starts."""

    def __init__(self, chunks, closer):
        self.chunks, self.closer = chunks, closer

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closer()


def _analysis_response(capture: Capture, view: str = redaction.OWNER):
    path = capture.analysis_file
    if path is None or not path.exists():
        if capture.is_terminal:
            return error(404, "no analysis for this capture")
        return error(409, f"the analysis is not ready (the capture is {capture.status})")
    return FileResponse(open(_shown_analysis(capture, view), "rb"),
                        content_type="application/json")


def _shown_analysis(capture: Capture, view: str) -> Path:
    """The analysis as `view` may read it, kept beside the stored one (which names the server's
    paths, so it is never sent as it is) and made again when the analysis changes."""
    stored = capture.analysis_file
    shown = capture.directory / f"analysis.{view}.json"
    if not derived.is_current(shown, stored):
        made_from = derived.version(stored)
        with open(stored, encoding="utf-8") as fp:
            doc = redaction.sequence(json.load(fp), view)
        derived.write_text(shown, made_from, json_text(doc))
    return shown


@require_http_methods(["GET", "POST"])
@api_view
@json_errors
def captures(request):
    if request.method == "GET":
        actions.reap_stale()
        found = listing.page(listing.parse(request.GET), request.user)
        base = request.path
        return JsonResponse({
            "captures": [capture_json(c) for c in found.items], "count": found.count,
            "page": found.number, "pages": found.pages, "per_page": found.search.per_page,
            "next": found.link(base, found.next_number),
            "previous": found.link(base, found.previous_number)})
    if request.content_type == "multipart/form-data":
        # Refuse an oversize body by its declared length before reading it.
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > settings.KVIZ_MAX_UPLOAD_BYTES + 64 * 1024:
            return error(413, f"the file is larger than {settings.KVIZ_MAX_UPLOAD_BYTES} bytes")
        capture = actions.upload_capture(
            request.user, request.POST.get("name"), request.FILES.getlist("file"),
            metas=_metas(request),
            inventory=request.FILES.get("inventory") or request.POST.get("inventory"),
            keylog=request.FILES.get("keylog") or request.POST.get("keylog"))
    else:
        capture = actions.start_capture(request.user, read_json(request))
    return JsonResponse(capture_json(capture), status=201)


def _metas(request) -> list:
    """The `meta` parts, one per `file` in the same order: all sent as files or all as fields
    (the multipart parser keeps the two kinds apart, so a mix would lose the pairing)."""
    as_files, as_fields = request.FILES.getlist("meta"), request.POST.getlist("meta")
    if as_files and as_fields:
        raise actions.ActionError("send every `meta` part the same way: all as files or all as "
                                  "fields")
    return as_files or as_fields


@require_http_methods(["GET", "DELETE"])
@api_view
@json_errors
def capture_detail(request, capture_id):
    if request.method == "DELETE":
        # A pinned capture goes too: a script that deletes by id asked for that one.
        actions.delete_capture(own_capture(request, capture_id), pinned_too=True)
        return JsonResponse({"deleted": True})
    actions.reap_stale()
    return JsonResponse(capture_json(own_capture(request, capture_id)))


@require_http_methods(["POST", "DELETE"])
@api_view
@json_errors
def capture_pin(request, capture_id):
    """POST pins (kept past retention), DELETE unpins."""
    capture = retention.pin(own_capture(request, capture_id), request.method == "POST")
    if capture is None:
        return error(404, "no such capture")
    return JsonResponse(capture_json(capture))


@require_http_methods(["DELETE"])
@api_view
@json_errors
def capture_keylog(request, capture_id):
    """DELETE removes the capture's TLS key log (never served: it holds secrets)."""
    if not actions.delete_keylog(own_capture(request, capture_id)):
        return error(404, "this capture has no key log")
    return JsonResponse({"deleted": True})


@require_POST
@api_view
@json_errors
def capture_stop(request, capture_id):
    capture = actions.stop_capture(own_capture(request, capture_id))
    return JsonResponse(capture_json(capture), status=202)


@require_GET
@api_view
@json_errors
def capture_pcap(request, capture_id):
    return _pcap_response(own_capture(request, capture_id), request.GET.get("file"), request)


@require_GET
@api_view
@json_errors
def capture_analysis(request, capture_id):
    return _analysis_response(own_capture(request, capture_id))


@require_POST
@api_view
@json_errors
def capture_share(request, capture_id):
    capture = own_capture(request, capture_id)
    body = read_json(request) or {}
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
    actions.revoke_share(own_capture(request, capture_id), token)
    return JsonResponse({"revoked": True})


@require_http_methods(["GET", "DELETE"])
@api_view(required=False)
@json_errors
def share(request, token):
    if request.method == "DELETE":
        link = actions.find_share(token)
        if link is None or not link.capture.visible_to(request.user):
            return error(404, common.GONE)
        actions.revoke_share(link.capture, token)
        return JsonResponse({"revoked": True})
    link = share_link(token)
    return JsonResponse(redaction.capture(link.capture, redaction.view_of(link), link))


@require_GET
@json_errors
def share_pcap(request, token):
    link = share_link(token)
    if not redaction.packets_shown(redaction.view_of(link)):
        return error(403, "this share link does not include the packets")
    return _pcap_response(link.capture, request.GET.get("file"), request)


@require_GET
@json_errors
def share_analysis(request, token):
    link = share_link(token)
    return _analysis_response(link.capture, redaction.view_of(link))


@require_GET
@api_view
@json_errors
def targets(request):
    return JsonResponse({"targets": sources.list_targets(request.user)})
