"""Postmortems: a capture's bundle (a zip that opens offline, captures/render/bundle.py) and the
diff of two captures (captures/analysis/compare.py) as a page, JSON, text and Markdown.

Thin like every view: find what the reader may see, hand it to the pure modules, answer.

- Who may see what: a bundle through a share link is made from what that link shows
  (captures.web.redaction): a redacted link's bundle has the whitelisted model, no pcap, no
  inventory, no target, filter or log, no note authors, and says what it left out. A diff needs
  the reader to be allowed to see both captures (their owner, or staff); either missing or
  another's is the same 404.
- TLS key logs are never read here: a bundle holds the stored capture files
  (Capture.stored_files), the analysis, the inventory and the notes, nothing else of the data
  directory.
"""

from __future__ import annotations

import json
import re
import tempfile

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from captures.access.auth import api_view
from captures.adapters import storage
from captures.analysis.compare import compare
from captures.jobs import diagram_cache
from captures.jobs.actions import ActionError
from captures.models import Capture
from captures.render import bundle as bundles
from captures.render import diff as diff_render
from captures.web import notes, redaction
from captures.web.common import error, json_errors, json_text, own_capture, share_link

SPOOL_BYTES = 32 * 2**20  # a bundle bigger than this is built in a temporary file
MAX_DIFF_BYTES = 64 * 2**20  # an analysis bigger than this is compared with `kviz diff`
COMPARE_CHOICES = 50  # captures offered by the "compare with" control
WITHHELD = [
    "the packets: no pcap file, no frame bytes",
    "where it was recorded: vantage points and interfaces are numbered (\"vantage 1\", "
    "\"interface 2\"), and the nodes the traffic crossed are not named",
    "the capture's target, filter, limits, log and file names",
    "the inventory (pods, Services and nodes with their interfaces)",
    "who wrote the notes",
]


# -- the bundle ----------------------------------------------------------------------------------


def _pcap_names(capture: Capture) -> list[tuple[str, object]]:
    """(name in the bundle, path) for every stored file of the capture, named by where it was
    taken (or its upload name), unique, with the stored file's suffix."""
    found, used = [], set()
    stored = capture.stored_files()
    for index, part in enumerate(stored):
        if not (part.file.exists() if storage.is_local() else storage.exists(part.path)):
            continue
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", part.label).strip("-.") or f"file-{index + 1}"
        suffix = part.file.suffix or ".pcapng"
        stem = stem.removesuffix(suffix)
        name = f"{index + 1}-{stem}{suffix}" if len(stored) > 1 else f"{stem}{suffix}"
        while name in used:
            name = f"{index + 1}-{name}"
        used.add(name)
        found.append((name, part.path))  # a stored file's name (captures.adapters.storage)
    return found


def _redacted_files(model: dict) -> dict:
    """The model's file list without file names: a redacted bundle names no file."""
    facts = dict(model.get("capture") or {})
    facts["files"] = [{**f, "path": f"file {i + 1}"} for i, f in
                      enumerate(facts.get("files") or [])]
    return {**model, "capture": facts}


def _bundle(capture: Capture, view: str, shares: list[dict]):
    try:
        model = redaction.sequence(diagram_cache.load_model(capture), view)
    except diagram_cache.NoAnalysis:
        return error(404 if capture.is_terminal else 409, "no analysis for this capture yet")
    facts = redaction.markdown_facts(capture, view)
    if redaction.packets_shown(view):
        facts["files"] = ", ".join(f.label for f in capture.stored_files()) or "none"
    else:
        model = _redacted_files(model)
    pcaps = _pcap_names(capture) if redaction.packets_shown(view) else []
    inventory = capture.inventory if view != redaction.REDACTED else None
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (the response closes it)
    with storage.local_copies([stored for _name, stored in pcaps]) as paths:
        bundles.write_bundle(
            spool, model, title=capture.name, facts=facts,
            notes=redaction.markdown_notes(notes.list_notes(capture), view),
            pcaps=[(name, path) for (name, _stored), path in zip(pcaps, paths, strict=True)],
            inventory=inventory, shares=shares,
            withheld=WITHHELD if view == redaction.REDACTED else [], folder=capture.name)
    spool.seek(0)
    suffix = "-redacted" if view == redaction.REDACTED else ""
    return FileResponse(spool, as_attachment=True, content_type="application/zip",
                        filename=f"{bundles.slug(capture.name)}{suffix}-postmortem.zip")


@require_GET
@api_view
@json_errors
def capture_bundle(request, capture_id):
    capture = own_capture(request, capture_id)
    # Only a hash of each token is kept: the bundle lists the live links, not their URLs.
    shares = [{"url": None, "redacted": link.redacted, "created": link.created.isoformat(),
               "expires": link.expires.isoformat()}
              for link in capture.share_links.order_by("created") if link.is_valid()]
    return _bundle(capture, redaction.OWNER, shares)


@require_GET
@json_errors
def share_bundle(request, token):
    link = share_link(token)
    url = request.build_absolute_uri(reverse("page-share", args=[token]))
    shares = [{"url": url, "redacted": link.redacted, "created": link.created.isoformat(),
               "expires": link.expires.isoformat()}]
    return _bundle(link.capture, redaction.view_of(link), shares)


# -- the diff ------------------------------------------------------------------------------------


def _model(capture: Capture) -> dict:
    path = capture.analysis_file
    if path is None or not path.exists():
        raise ActionError(f"{capture.name} has no analysis yet"
                          + ("" if capture.is_terminal else f" (it is {capture.status})"),
                          404 if capture.is_terminal else 409)
    if path.stat().st_size > MAX_DIFF_BYTES:
        raise ActionError(f"{capture.name}'s analysis is too big to compare here; use "
                          "`manage.py kviz diff` with the two capture ids", 413)
    with open(path, encoding="utf-8") as fp:
        return json.load(fp)


def diff_of(request, a_id, b_id) -> tuple[dict, Capture, Capture]:
    a, b = own_capture(request, a_id), own_capture(request, b_id)
    return compare(_model(a), _model(b), a.name, b.name), a, b


@require_GET
@api_view
@json_errors
def capture_diff(request, capture_id, other_id):
    doc, a, b = diff_of(request, capture_id, other_id)
    fmt = request.GET.get("format", "json")
    if fmt == "json":
        doc = {**doc, "a": {**doc["a"], "id": str(a.id)}, "b": {**doc["b"], "id": str(b.id)}}
        return HttpResponse(json_text(doc), content_type="application/json")
    if fmt not in ("text", "markdown"):
        return error(400, "format is one of json, text, markdown")
    body = (diff_render.render_markdown(doc, title=f"Diff: {a.name} vs {b.name}")
            if fmt == "markdown" else diff_render.render_text(doc))
    response = HttpResponse(body, content_type="text/markdown; charset=utf-8"
                            if fmt == "markdown" else "text/plain; charset=utf-8")
    name = bundles.slug(f"{a.name}-vs-{b.name}")
    response["Content-Disposition"] = (f'attachment; filename="{name}'
                                       f'{".md" if fmt == "markdown" else ".txt"}"')
    return response


def _visible(request):
    rows = Capture.objects.exclude(analysis_path="")
    return rows if request.user.is_staff else rows.filter(owner=request.user)


def compare_choices(request, capture: Capture) -> list[Capture]:
    """The captures the "compare with" control offers: the reader's others with an analysis."""
    return list(_visible(request).exclude(id=capture.id).order_by("-created")[:COMPARE_CHOICES])


@require_GET
@login_required
def diff_choose(request, capture_id):
    """The "compare with" form's target: on to the diff page, or the list to choose from."""
    capture = own_capture(request, capture_id)
    other = (request.GET.get("with") or "").strip()
    if other:
        try:
            own_capture(request, other)
        except (Http404, ValidationError):  # a malformed id is as unknown as a missing one
            raise Http404("no such capture") from None
        return redirect("page-diff", capture.id, other)
    return render(request, "captures/diff_choose.html",
                  {"capture": capture, "compare_choices": compare_choices(request, capture),
                   "read_only": False})


@require_GET
@login_required
def diff_page(request, capture_id, other_id):
    try:
        doc, a, b = diff_of(request, capture_id, other_id)
    except ActionError as exc:
        return render(request, "captures/diff.html", {"error": exc.message}, status=exc.status)
    items = [*doc["requests"], *doc["dns"]]
    return render(request, "captures/diff.html", {
        "doc": doc, "a": a, "b": b, "items": items,
        "summary": diff_render.summary_line(doc),
        "differing": [i for i in items if i["status"] != "same"],
        "same": [i for i in items if i["status"] == "same"],
        "api_url": reverse("capture-diff", args=[a.id, b.id]),
    })
