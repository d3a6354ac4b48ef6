"""The dashboard's pages: validate, call an action, render a template. Nothing else here.

The pages read the same sources as the JSON API (captures.web.api, docs/api.md): the capture list
and the live view keep themselves current through that API and the capture's WebSocket.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from captures.jobs import actions, findings, retention
from captures.models import ShareLink, Status
from captures.sources import base as sources
from captures.web import listing, postmortem, present, redaction
from captures.web.api import capture_json
from captures.web.common import own_capture

GONE = {"expired": "This share link has expired.", "revoked": "This share link was revoked.",
        "unknown": "There is no such share link."}


def _limits_form(post) -> dict:
    limits = {}
    for key in ("seconds", "packets", "bytes"):
        value = (post.get(f"limit_{key}") or "").strip()
        if value:
            if not value.isdigit():
                raise actions.ActionError(f"limits.{key} must be a positive integer")
            limits[key] = int(value)
    return limits


def _target_form(post) -> dict:
    # The picker's values are "local:<iface>", "lab:<pod/ns/name | node/name>", for a cluster
    # "pod:<ns>/<name>", "service:<ns>/<name>", "node:<name>", and "path" (its own fields).
    kind, _, rest = (post.get("target") or "").partition(":")
    if kind == "local":
        return {"kind": "local", "interface": rest}
    if kind == "lab":
        return {"kind": "lab", "target": rest}
    if kind in ("pod", "service"):
        namespace, _, name = rest.partition("/")
        return {"kind": kind, "namespace": namespace, kind: name}
    if kind == "node":
        return {"kind": "node", "node": rest}
    if kind == "path":
        return _path_form(post)
    if kind == "upload":
        raise actions.ActionError("choose a pcap or pcapng file to upload")
    raise actions.ActionError("choose a target, or a file to upload")


def _path_form(post) -> dict:
    start, end = (post.get("path_from") or "").strip(), (post.get("path_to") or "").strip()
    if not start or not end:
        raise actions.ActionError("a path needs the client pod it starts from and the Service "
                                  "or pod it goes to")
    if start.count("/") == 1:  # "default/ubuntu": a path only ever starts at a pod
        start = f"pod/{start}"
    where = (post.get("path_where") or "").strip()
    return {"kind": "path", "from": start, "to": end, **({"where": where} if where else {})}


def _vantage_metas(request) -> list[str]:
    """The form's "taken at" field per file (pod/<ns>/<name>, node/<name>), as meta parts."""
    vantages = [v.strip() for v in request.POST.getlist("vantage")]
    if not any(vantages):
        return []
    return [json.dumps({"schema": "kviz.capture-meta/1", "vantage": v or None})
            for v in vantages]


@require_GET
@login_required
def capture_list(request):
    actions.reap_stale()
    error, status = "", 200
    try:
        search = listing.parse(request.GET, per_page=listing.PAGE_PER_PAGE)
    except actions.ActionError as exc:
        error, status = exc.message, exc.status
        search = listing.Search(per_page=listing.PAGE_PER_PAGE,
                                default_per_page=listing.PAGE_PER_PAGE)
    found = listing.page(search, request.user)
    base = reverse("page-list")
    # The list polls the API for the same rows it shows (frontend/static/kviz/list.js).
    query = urlencode({**search.params(page=found.number), "per_page": search.per_page})
    return render(request, "captures/list.html", {
        "captures": [{"row": c, "target": present.target_label(c),
                      "findings": findings.decode(c.finding_kinds) or [],
                      "expires": retention.expires(c)} for c in found.items],
        "page": found, "search": search, "error": error,
        "statuses": Status.values, "finding_kinds": present.FINDING_KINDS,
        "next_url": found.link(base, found.next_number),
        "previous_url": found.link(base, found.previous_number),
        "api_url": f"{reverse('captures')}?{query}", "here": request.get_full_path(),
        "retention_days": settings.KVIZ_RETENTION_DAYS,
    }, status=status)


def _back(request, default: str) -> str:
    """`next` from the form when it stays on this site, else `default`."""
    back = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        return default
    return back


@require_POST
@login_required
def capture_pin(request, capture_id):
    """Pin or unpin from the list or the capture's page, then go back there."""
    capture = own_capture(request, capture_id)
    pinned = request.POST.get("pinned") == "true"
    retention.pin(capture, pinned)
    messages.info(request, f"{capture.name} is pinned: kept until unpinned." if pinned else
                  f"{capture.name} is unpinned: it expires with the others.")
    return redirect(_back(request, reverse("page-detail", args=[capture.id])))


@require_http_methods(["GET", "POST"])
@login_required
def capture_delete(request, capture_id):
    """GET: what deleting the capture removes, and a button (a POST with the CSRF token); a
    pinned capture asks for one more, explicit confirmation. POST: delete it, then the list.
    Only who may see the capture may delete it: its owner, or staff (own_capture: 404)."""
    capture = own_capture(request, capture_id)
    files = capture.stored_files()
    error, status = "", 200
    if request.method == "POST":
        try:
            actions.delete_capture(capture, pinned_too=request.POST.get("pinned_too") == "yes")
        except actions.ActionError as exc:
            if exc.status == 404:
                messages.info(request, f"{capture.name} was deleted already.")
                return redirect("page-list")
            error, status = exc.message, exc.status
            capture.refresh_from_db()  # pinned or started meanwhile: the page says so
        else:
            messages.success(request, f"Deleted {capture.name}: its {len(files)} capture "
                                      f"file{'s' if len(files) != 1 else ''} "
                                      f"({retention.size(capture.bytes)}), analysis, notes and "
                                      "share links.")
            # Back to the list, the same search and page when it came from there.
            back = _back(request, reverse("page-list"))
            if urlsplit(back).path != reverse("page-list"):
                back = reverse("page-list")
            return redirect(back)
    return render(request, "captures/delete.html", {
        "capture": capture, "target": present.target_label(capture), "error": error,
        "files": files, "size": retention.size(capture.bytes),
        "notes": capture.notes.count(),
        "links": ShareLink.objects.filter(capture=capture, revoked=False,
                                          expires__gt=timezone.now()).count(),
        "next": _back(request, ""),
    }, status=status)


@require_http_methods(["GET", "POST"])
@login_required
def capture_new(request):
    targets = sources.list_targets(request.user)
    error, status, retry_after = "", 200, None
    if request.method == "POST":
        try:
            if request.FILES.getlist("file"):
                capture = actions.upload_capture(request.user, request.POST.get("name"),
                                                 request.FILES.getlist("file"),
                                                 metas=_vantage_metas(request),
                                                 keylog=request.FILES.get("keylog"))
                return redirect("page-detail", capture.id)
            capture = actions.start_capture(request.user, {
                "name": request.POST.get("name"),
                "target": _target_form(request.POST),
                "filter": request.POST.get("filter", "").strip(),
                "limits": _limits_form(request.POST),
            })
            return redirect("page-live", capture.id)
        except actions.ActionError as exc:
            error, status, retry_after = exc.message, exc.status, exc.retry_after
    # Too many captures at once: the ones to stop, each linked to its live page (Stop).
    busy = [{"row": c, "seconds_left": retention.seconds_left(c)}
            for c in retention.live_captures(request.user)] if status == 429 else []
    answer = render(request, "captures/new.html", {
        "targets": [t for t in targets if t["kind"] != "upload"], "error": error,
        "busy": busy,
        "path": present.path_choices(targets),
        "form": request.POST, "max": {"seconds": settings.KVIZ_MAX_SECONDS,
                                      "packets": settings.KVIZ_MAX_PACKETS,
                                      "bytes": settings.KVIZ_MAX_BYTES,
                                      "upload": settings.KVIZ_MAX_UPLOAD_BYTES},
    }, status=status)
    if retry_after is not None:
        answer["Retry-After"] = str(max(1, int(retry_after)))
    return answer


@require_GET
@login_required
def capture_detail(request, capture_id):
    actions.reap_stale()
    capture = own_capture(request, capture_id)
    links = ShareLink.objects.filter(capture=capture).order_by("-created")
    doc, pcap_url = capture_json(capture), reverse("capture-pcap", args=[capture.id])
    return render(request, "captures/detail.html", {
        "capture": capture, "doc": doc, "target": present.target_label(capture),
        "files": present.files(doc, pcap_url),
        "analysis": redaction.describe(capture, redaction.OWNER),
        "links": links, "share_days": min(settings.KVIZ_SHARE_DAYS, settings.KVIZ_SHARE_MAX_DAYS),
        "share_max_days": settings.KVIZ_SHARE_MAX_DAYS,
        "pcap_url": pcap_url,
        "diagram_url": reverse("capture-analysis", args=[capture.id]), "read_only": False,
        # Postmortems (captures/web/postmortem.py): the bundle and "compare with…".
        "bundle_url": reverse("capture-bundle", args=[capture.id]) if capture.analysis_path
        else None,
        "compare_choices": postmortem.compare_choices(request, capture),
    })


@require_GET
@login_required
def capture_live(request, capture_id):
    capture = own_capture(request, capture_id)
    doc = capture_json(capture)
    return render(request, "captures/live.html", {
        "capture": capture, "doc": doc, "target": present.target_label(capture),
        "files": present.files(doc, reverse("capture-pcap", args=[capture.id])),
        "ws_path": f"/ws/captures/{capture.id}/",
        "api_url": reverse("capture", args=[capture.id]),
        "stop_url": reverse("capture-stop", args=[capture.id]),
        "detail_url": reverse("page-detail", args=[capture.id]),
        "diagram_url": reverse("capture-analysis", args=[capture.id]), "read_only": False,
    })


@require_POST
@login_required
def share_create(request, capture_id):
    capture = own_capture(request, capture_id)
    try:
        days = int(request.POST.get("days") or settings.KVIZ_SHARE_DAYS)
    except ValueError:
        days = 0  # refused below with the action's own message
    try:
        link, token = actions.share_capture(request.user, capture,
                                            request.POST.get("redacted") == "on", days)
    except actions.ActionError as exc:
        messages.error(request, exc.message)
    else:
        # The token is shown this once: only its hash is stored.
        messages.success(request, request.build_absolute_uri(reverse("page-share",
                                                                     args=[token])),
                         extra_tags=f"share-url link-{link.id}")
    return redirect("page-detail", capture.id)


@require_POST
@login_required
def share_revoke(request, capture_id, link_id):
    capture = own_capture(request, capture_id)
    try:
        actions.revoke_share_link(capture, link_id)
    except actions.ActionError as exc:
        messages.error(request, exc.message)
    else:
        messages.info(request, "The share link was revoked.")
    return redirect("page-detail", capture.id)


@require_POST
@login_required
def keylog_delete(request, capture_id):
    capture = own_capture(request, capture_id)
    if actions.delete_keylog(capture):
        messages.info(request, "The TLS key log was deleted; the capture is analysed again "
                               "without it.")
    return redirect("page-detail", capture.id)


@require_GET
def share_page(request, token):
    """Read-only and anonymous. Expired or revoked: 410; unknown: 404."""
    link, state = actions.share_link_state(token)
    if state != "valid":
        return render(request, "captures/share_gone.html", {"message": GONE[state]},
                      status=404 if state == "unknown" else 410)
    context = redaction.page(link.capture, link, {
        "pcap_url": reverse("share-pcap", args=[token]),
        "ws_path": f"/ws/share/{token}/", "api_url": reverse("share", args=[token]),
        "diagram_url": reverse("share-analysis", args=[token]), "read_only": True,
        "share_token": token,
    })
    # Made from the whitelisted context: a redacted link's doc has no files, nor a pcap_url.
    context["files"] = present.files(context["doc"], context.get("pcap_url"))
    # The bundle is made from what this link shows (captures/web/postmortem.py).
    context["bundle_url"] = (reverse("share-bundle", args=[token])
                             if link.capture.analysis_path else None)
    return render(request, "captures/share.html", context)
