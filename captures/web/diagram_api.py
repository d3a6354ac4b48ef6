"""The diagram view's JSON and downloads (docs/api.md, "Diagram"): the layout in chunks, one
frame's tshark dissection, exports in every format, notes. Thin: parse, check, call, answer.

Every endpoint exists twice: under `/api/captures/<id>/` for the owner (or staff), and under
`/api/share/<token>/` read-only for a share link, where a redacted link gets no packet bytes
(frames refused, as the pcap is) and no names of note authors.
"""

from __future__ import annotations

from django.http import FileResponse, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods

from captures.access.auth import api_view
from captures.adapters import sniffer
from captures.jobs import diagram_cache
from captures.jobs.actions import ActionError
from captures.render import (
    build_layout,
    render_markdown,
    render_mermaid,
    render_plantuml,
    render_svg,
)
from captures.web import notes
from captures.web.api import _own_capture, _read_json, _share, error, json_errors

EXPORTS = {  # format: (content type, file suffix)
    "svg": ("image/svg+xml", ".svg"),
    "mermaid": ("text/plain; charset=utf-8", ".mmd"),
    "plantuml": ("text/plain; charset=utf-8", ".puml"),
    "markdown": ("text/markdown; charset=utf-8", ".md"),
    "layout": ("application/json", ".layout.json"),
}


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


def _variant(request, capture):
    fold = request.GET.get("fold", "1") != "0"
    try:
        return diagram_cache.ensure(capture, fold, _ids(request, "expand"),
                                    _ids(request, "collapse"))
    except diagram_cache.NoAnalysis:
        if capture.is_terminal:
            raise ActionError("no analysis for this capture", 404) from None
        raise ActionError(f"the analysis is not ready (the capture is {capture.status})",
                          409) from None


def _layout_head(request, capture):
    return FileResponse(open(_variant(request, capture) / "head.json", "rb"),
                        content_type="application/json")


def _layout_rows(request, capture, chunk: int):
    path = diagram_cache.chunk_file(_variant(request, capture), chunk)
    if path is None:
        return error(404, "no such row chunk")
    return FileResponse(open(path, "rb"), content_type="application/json")


def _frame(capture, file_index: int, number: int):
    path = capture.pcap_file
    # A dashboard capture is one stored file: index 0 of the analysis' file list.
    if file_index != 0 or path is None or not path.exists():
        return error(404, "no such capture file")
    try:
        dissection = sniffer.dissect_frame(path, number)
    except ValueError as exc:
        return error(400, str(exc))
    except sniffer.DissectError as exc:
        return error(503, str(exc))
    if dissection is None:
        return error(404, f"the capture has no frame {number}")
    return JsonResponse(dissection)


def _export(capture, fmt: str, redacted: bool):
    if fmt not in EXPORTS:
        return error(404, f"unknown format; one of {', '.join(EXPORTS)}")
    try:
        model = diagram_cache.load_model(capture)
    except diagram_cache.NoAnalysis:
        return error(404 if capture.is_terminal else 409, "no analysis for this capture yet")
    content_type, suffix = EXPORTS[fmt]
    if fmt == "layout":
        body = build_layout(model, fold=False).to_json()  # as `kviz analyze --format layout`
    else:
        layout = build_layout(model)
        if fmt == "svg":
            body = render_svg(layout, title=capture.name)
        elif fmt == "mermaid":
            body = render_mermaid(layout)
        elif fmt == "plantuml":
            body = render_plantuml(layout, title=capture.name)
        else:
            body = render_markdown(layout, facts=_facts(capture, redacted),
                                   notes=notes.for_markdown(capture, redacted),
                                   svg_href=f"{capture.name}.svg", title=capture.name)
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{capture.name}{suffix}"'
    return response


def _facts(capture, redacted: bool) -> dict:
    facts = {"time": capture.started.isoformat() if capture.started
             else capture.created.isoformat()}
    if not redacted:
        target = capture.target_spec.get("target") or capture.target_spec.get("interface") \
            or capture.target_spec.get("file_name") or ""
        facts.update({"target": f"{capture.target_kind} {target}".strip(),
                      "filter": capture.bpf_filter or "none",
                      "limits": f"{capture.limit_seconds} s, {capture.limit_packets} packets, "
                                f"{capture.limit_bytes} bytes"})
    return facts


# -- the owner's endpoints ----------------------------------------------------------------------


@require_GET
@api_view
@json_errors
def layout(request, capture_id):
    return _layout_head(request, _own_capture(request, capture_id))


@require_GET
@api_view
@json_errors
def layout_rows(request, capture_id, chunk):
    return _layout_rows(request, _own_capture(request, capture_id), chunk)


@require_GET
@api_view
@json_errors
def frame(request, capture_id, file_index, number):
    return _frame(_own_capture(request, capture_id), file_index, number)


@require_GET
@api_view
@json_errors
def export(request, capture_id, fmt):
    return _export(_own_capture(request, capture_id), fmt, redacted=False)


@require_http_methods(["GET", "POST"])
@api_view
@json_errors
def capture_notes(request, capture_id):
    capture = _own_capture(request, capture_id)
    if request.method == "POST":
        note = notes.add_note(request.user, capture, _read_json(request))
        return JsonResponse(notes.note_json(note), status=201)
    return JsonResponse({"notes": [notes.note_json(n) for n in notes.list_notes(capture)]})


@require_http_methods(["DELETE"])
@api_view
@json_errors
def capture_note_delete(request, capture_id, note_id):
    notes.delete_note(request.user, _own_capture(request, capture_id), note_id)
    return JsonResponse({"deleted": True})


# -- share links: read-only ---------------------------------------------------------------------


@require_GET
@json_errors
def share_layout(request, token):
    return _layout_head(request, _share(token).capture)


@require_GET
@json_errors
def share_layout_rows(request, token, chunk):
    return _layout_rows(request, _share(token).capture, chunk)


@require_GET
@json_errors
def share_frame(request, token, file_index, number):
    link = _share(token)
    if link.redacted:
        return error(403, "this share link does not include the packets")
    return _frame(link.capture, file_index, number)


@require_GET
@json_errors
def share_export(request, token, fmt):
    link = _share(token)
    return _export(link.capture, fmt, redacted=link.redacted)


@require_GET
@json_errors
def share_notes(request, token):
    link = _share(token)
    return JsonResponse({"notes": [notes.note_json(n, link.redacted)
                                   for n in notes.list_notes(link.capture)]})


