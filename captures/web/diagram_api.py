"""The diagram view's JSON and downloads (docs/api.md, "Diagram"): the layout in chunks, one
frame's tshark dissection, exports in every format, notes. Thin: parse, check, call, answer.

Every endpoint exists twice: under `/api/captures/<id>/` for the owner (or staff), and under
`/api/share/<token>/` read-only for a share link. What a link shows (a redacted one: no packet
bytes, no names of note authors, vantage points or interfaces) is decided in
captures.web.redaction, which every share answer passes through.
"""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET, require_http_methods

from captures.access import limits
from captures.access.auth import api_view
from captures.adapters import sniffer
from captures.jobs import diagram_cache, local_copy
from captures.jobs.actions import ActionError
from captures.render import export as exports
from captures.render.mermaid import mermaid_parts
from captures.web import notes, redaction
from captures.web.common import error, json_errors, json_text, own_capture, read_json, share_link


def _ids(request, name: str) -> list[int]:
    raw = request.GET.get(name, "").strip()
    if not raw:
        return []
    try:
        ids = sorted({int(part) for part in raw.split(",")})
    except ValueError:
        raise ActionError(f"{name} must be a comma-separated list of ids") from None
    if len(ids) > diagram_cache.MAX_IDS or any(i < 0 for i in ids):
        raise ActionError(f"{name} may list at most {diagram_cache.MAX_IDS} ids")
    return ids


def _variant(request, capture, view: str, first_screen: bool = False):
    """The layout variant the request names. `first_screen`: the page's first request, which
    a big capture's first screen answers while the worker lays the rest out; the first screen's
    own rows and index are asked for with `first=1` (diagram_cache's module doc)."""
    fold = request.GET.get("fold", "1") != "0"
    # The owner's and a full link's layouts are drawn from the same model; a redacted link's
    # from its own, whitelisted one.
    model_view = redaction.REDACTED if view == redaction.REDACTED else redaction.OWNER
    expand, collapse = _ids(request, "expand"), _ids(request, "collapse")
    try:
        if request.GET.get("first") == "1":
            partial = diagram_cache.first_screen(capture, model_view)
            if partial is None:
                raise ActionError("the diagram's first screen is gone: the whole diagram "
                                  "is laid out (reload the page)", 404)
            return partial
        # The owner's first variant is usually there already: the worker built it.
        return diagram_cache.ensure(capture, fold, expand, collapse, view=model_view,
                                    prepare=redaction.sequence_parts(model_view),
                                    first_screen=first_screen and fold
                                    and not expand and not collapse)
    except diagram_cache.NoAnalysis:
        if capture.is_terminal:
            raise ActionError("no analysis for this capture", 404) from None
        raise ActionError(f"the analysis is not ready (the capture is {capture.status})",
                          409) from None


def _file(path, content_type: str) -> FileResponse:
    answer = FileResponse(open(path, "rb"), content_type=content_type)  # noqa: SIM115 (it closes it)
    # A 1M-arrow capture's head and row index are tens of MB: in 4 KB blocks (the default)
    # through ASGI that is thousands of messages; 1 MB blocks send it in a few dozen.
    answer.block_size = 1 << 20
    return answer


def _json_file(path, view: str):
    if view == redaction.OWNER:
        return _file(path, "application/json")
    with open(path, encoding="utf-8") as fp:
        doc = redaction.layout(json.load(fp), view)
    return HttpResponse(json_text(doc), content_type="application/json")


def _layout_head(request, capture, view: str):
    part = request.GET.get("part", "")
    variant = _variant(request, capture, view, first_screen=part == "lean")
    if part == "index":
        # Numbers only (positions, ids, lengths), computed from the model `view` may read.
        path = diagram_cache.index_file(variant)
        if path is None:
            return error(404, "no row index for this layout")
        return _file(path, "application/octet-stream")
    if part in ("lean", "connections"):  # the page's first screen, then its filter list
        path = variant / ("head-lean.json" if part == "lean" else "connections.json")
        return _json_file(path if path.exists() else variant / "head.json", view)
    return _json_file(variant / "head.json", view)


def _layout_rows(request, capture, chunk: int, view: str):
    path = diagram_cache.chunk_file(_variant(request, capture, view), chunk)
    if path is None:
        return error(404, "no such row chunk")
    return _json_file(path, view)


def _busy(seconds: int, message: str):
    answer = error(429, message)
    answer["Retry-After"] = str(seconds)
    return answer


def _frame(capture, file_index: int, number: int, view: str, who: str):
    """One frame's dissection. tshark reads the whole file up to the frame (seconds and
    hundreds of MB for a big capture), and a share link needs no account, so: what costs
    nothing is checked first (a frame beyond the stored packets is 404 before anything
    starts), then `who`'s rate (a user, or a share link), then a slot of the few tshark runs
    all web processes may have at once; tshark itself is bounded in time and memory."""
    if not redaction.packets_shown(view):
        return error(403, "this share link does not include the packets")
    files = capture.stored_files()  # index i: file i of the analysis (`frame: [i, n]`)
    # Still recording on another machine (S3): 409 (captures/jobs/local_copy.py).
    if not 0 <= file_index < len(files) or not local_copy.readable(capture, files[file_index]):
        return error(404, "no such capture file")
    if number < 1:
        return error(400, "frame numbers start at 1")
    # A file's count is kept by the runner and the analysis; while one file is still being
    # written, the capture's running counter is its count.
    stored = files[file_index].packets
    if len(files) == 1:
        stored = max(stored, capture.packets, int((capture.summary or {}).get("packets") or 0))
    if number > stored:
        return error(404, f"the capture has no frame {number}")
    wait = limits.seconds_over_rate(f"frames:{who}", settings.KVIZ_FRAMES_PER_MINUTE)
    if wait:
        return _busy(wait, f"at most {settings.KVIZ_FRAMES_PER_MINUTE} frames a minute; "
                           f"try again in {wait} s")
    holder = uuid.uuid4().hex
    # The lease outlives tshark's own time limit: a slot is freed here, or by a killed
    # process' lease ending.
    if not limits.take_slot("tshark", holder, settings.KVIZ_TSHARK_CONCURRENCY,
                            lease=settings.KVIZ_TSHARK_SECONDS + 5):
        return _busy(2, "the server is dissecting other frames; try again in a moment")
    try:
        # tshark needs a file: a remote storage's comes from this machine's bounded cache.
        with local_copy.capture_file(capture, files[file_index]) as path:
            dissection = sniffer.dissect_frame(
                path, number, timeout=settings.KVIZ_TSHARK_SECONDS,
                memory_bytes=settings.KVIZ_TSHARK_MEMORY_MB * 2**20)
    except sniffer.DissectError as exc:
        return error(503, str(exc))
    finally:
        limits.give_back_slot("tshark", holder)
    if dissection is None:
        return error(404, f"the capture has no frame {number}")
    return JsonResponse(redaction.frame(dissection, view))


PHASES = ("dns", "handshake", "tls", "exchange", "teardown", "other")


def _filters(request) -> dict:
    """The page's filters as an export's query: connection (an id or `none`), lane, phase."""
    connection = request.GET.get("connection", "").strip()
    lane = request.GET.get("lane", "").strip()
    phase = request.GET.get("phase", "").strip()
    if connection not in ("", "none") and not connection.isdigit():
        raise ActionError("connection must be a connection id or none")
    if lane and not lane.isdigit():
        raise ActionError("lane must be a lane index")
    if phase and phase not in PHASES:
        raise ActionError(f"phase must be one of {', '.join(PHASES)}")
    return {"connection": connection, "lane": lane, "phase": phase}


def _svg_stream(request, capture, view: str):
    """The SVG drawn from the diagram cache's variant (the page's folds and filters) a chunk of
    rows at a time: a 200k-arrow capture never sits in memory as one document."""
    filters = _filters(request)
    variant = _variant(request, capture, view)
    transform = None if view == redaction.OWNER else (lambda doc: redaction.layout(doc, view))
    arrows, pieces = diagram_cache.svg_pieces(variant, title=capture.name, filters=filters,
                                              transform=transform)
    response = StreamingHttpResponse((piece.encode() for piece in pieces),
                                     content_type=exports.FORMATS["svg"].content_type)
    response["X-Kviz-Arrows"] = str(arrows)
    response["Content-Disposition"] = f'attachment; filename="{capture.name}.svg"'
    return response


def _export(capture, fmt: str, view: str, request=None):
    if fmt not in exports.FORMATS:
        return error(404, f"unknown format; one of {', '.join(exports.FORMATS)}")
    if fmt == "svg" and request is not None:
        try:
            return _svg_stream(request, capture, view)
        except diagram_cache.NoAnalysis:
            pass  # drawn from the model below (a cache made before the row index)
    try:
        model = redaction.sequence(diagram_cache.load_model(capture), view)
    except diagram_cache.NoAnalysis:
        return error(404 if capture.is_terminal else 409, "no analysis for this capture yet")
    part = None
    if fmt == "mermaid" and request is not None and request.GET.get("part"):
        if not request.GET["part"].isdigit() or int(request.GET["part"]) < 1:
            raise ActionError("part must be a number from 1")
        part = int(request.GET["part"])
    if fmt == "mermaid":  # one diagram per part: Mermaid draws a few hundred arrows at most
        layout = exports.layout_for(fmt, model)
        body = exports.render(fmt, model, layout=layout, part=part or 1)
        response = HttpResponse(body, content_type=exports.FORMATS[fmt].content_type)
        parts = mermaid_parts(layout)
        response["X-Kviz-Parts"] = str(parts)
        suffix = f".part{part or 1}" if parts > 1 else ""
        response["Content-Disposition"] = (f'attachment; filename="{capture.name}{suffix}'
                                           f'{exports.FORMATS[fmt].suffix}"')
        return response
    if fmt == "layout" and view != redaction.OWNER:
        layout = exports.layout_for(fmt, model)
        body = json_text(redaction.layout(layout.to_dict(), view))
    else:
        body = exports.render(
            fmt, model, title=capture.name, svg_href=f"{capture.name}.svg",
            facts=redaction.markdown_facts(capture, view),
            notes=redaction.markdown_notes(notes.list_notes(capture), view))
    response = HttpResponse(body, content_type=exports.FORMATS[fmt].content_type)
    response["Content-Disposition"] = (f'attachment; filename="{capture.name}'
                                       f'{exports.FORMATS[fmt].suffix}"')
    return response


# -- the owner's endpoints ----------------------------------------------------------------------


@require_GET
@api_view
@json_errors
def layout(request, capture_id):
    return _layout_head(request, own_capture(request, capture_id), redaction.OWNER)


@require_GET
@api_view
@json_errors
def layout_rows(request, capture_id, chunk):
    return _layout_rows(request, own_capture(request, capture_id), chunk, redaction.OWNER)


@require_GET
@api_view
@json_errors
def frame(request, capture_id, file_index, number):
    return _frame(own_capture(request, capture_id), file_index, number, redaction.OWNER,
                  f"user:{request.user.pk}")


@require_GET
@api_view
@json_errors
def export(request, capture_id, fmt):
    return _export(own_capture(request, capture_id), fmt, redaction.OWNER, request)


@require_http_methods(["GET", "POST"])
@api_view
@json_errors
def capture_notes(request, capture_id):
    capture = own_capture(request, capture_id)
    if request.method == "POST":
        note = notes.add_note(request.user, capture, read_json(request))
        return JsonResponse(redaction.note(note, redaction.OWNER), status=201)
    return JsonResponse({"notes": [redaction.note(n, redaction.OWNER)
                                   for n in notes.list_notes(capture)]})


@require_http_methods(["DELETE"])
@api_view
@json_errors
def capture_note_delete(request, capture_id, note_id):
    notes.delete_note(request.user, own_capture(request, capture_id), note_id)
    return JsonResponse({"deleted": True})


# -- share links: read-only, through captures.web.redaction ----------------------------------


@require_GET
@json_errors
def share_layout(request, token):
    link = share_link(token)
    return _layout_head(request, link.capture, redaction.view_of(link))


@require_GET
@json_errors
def share_layout_rows(request, token, chunk):
    link = share_link(token)
    return _layout_rows(request, link.capture, chunk, redaction.view_of(link))


@require_GET
@json_errors
def share_frame(request, token, file_index, number):
    link = share_link(token)
    return _frame(link.capture, file_index, number, redaction.view_of(link), f"link:{link.id}")


@require_GET
@json_errors
def share_export(request, token, fmt):
    link = share_link(token)
    return _export(link.capture, fmt, redaction.view_of(link), request)


@require_GET
@json_errors
def share_notes(request, token):
    link = share_link(token)
    return JsonResponse({"notes": [redaction.note(n, redaction.view_of(link))
                                   for n in notes.list_notes(link.capture)]})
