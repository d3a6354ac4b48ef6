"""Finding captures: the list's search and pages, the same for the API and the page.

A search is the query string of `GET /api/captures/` and of the list page (docs/api.md):

    q        words matched in the name, the target (kind and what it names), the owner
    name     part of the name          target   part of the target    owner   the username
    status   one or more statuses (comma-separated or repeated): any of them
    finding  one or more finding kinds (`lost`, `refused`, `retransmission`, ...): any of them
    pinned   true / false
    page     1, 2, ...                 per_page at most MAX_PER_PAGE

Newest first. A user sees their own captures; staff see everyone's. Pages are numbered (a
reader goes back and forth, and a page's number is what a person shares); `count` and `pages`
come with every page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform

from captures.jobs import findings
from captures.jobs.actions import ActionError
from captures.models import Capture, Status

MAX_PER_PAGE = 200
API_PER_PAGE = 200  # the API answered up to 200 captures before it had pages
PAGE_PER_PAGE = 50
MAX_TERM = 200
# What a target's spec may name (captures/sources): a pod, a node, an interface, a file...
TARGET_KEYS = ("target", "interface", "file_name", "from", "to", "where", "namespace", "pod",
               "service", "node")
FIELDS = ("q", "name", "target", "owner", "status", "finding", "pinned")


@dataclass
class Search:
    q: str = ""
    name: str = ""
    target: str = ""
    owner: str = ""
    status: list[str] = field(default_factory=list)
    finding: list[str] = field(default_factory=list)
    pinned: bool | None = None
    page: int = 1
    per_page: int = API_PER_PAGE
    default_per_page: int = API_PER_PAGE

    def params(self, **change) -> dict:
        """The query string's fields for this search (page included), as given."""
        values = {"q": self.q, "name": self.name, "target": self.target, "owner": self.owner,
                  "status": ",".join(self.status), "finding": ",".join(self.finding),
                  "pinned": "" if self.pinned is None else str(self.pinned).lower(),
                  "page": self.page, **change}
        return {key: value for key, value in values.items() if value not in ("", None, 1)}

    @property
    def filtered(self) -> bool:
        return any(self.params(page=1).values())


def _list(params, key: str) -> list[str]:
    values = []
    for value in params.getlist(key):
        values += [part.strip() for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(values))


def _text(params, key: str) -> str:
    value = (params.get(key) or "").strip()
    if len(value) > MAX_TERM:
        raise ActionError(f"{key} is longer than {MAX_TERM} characters")
    return value


def _number(params, key: str, default: int, most: int | None = None) -> int:
    value = (params.get(key) or "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ActionError(f"{key} must be a positive integer")
    number = int(value)
    if most is not None and number > most:
        raise ActionError(f"{key} may be at most {most}")
    return number


def parse(params, per_page: int = API_PER_PAGE) -> Search:
    """The search a query string asks for; ActionError (400) names what is wrong."""
    search = Search(q=_text(params, "q"), name=_text(params, "name"),
                    target=_text(params, "target"), owner=_text(params, "owner"),
                    status=_list(params, "status"), finding=_list(params, "finding"))
    unknown = [s for s in search.status if s not in Status.values]
    if unknown:
        raise ActionError(f"unknown status {unknown[0]!r} (one of {', '.join(Status.values)})")
    bad = [kind for kind in search.finding if not findings.valid_kind(kind)]
    if bad:
        raise ActionError(f"{bad[0]!r} is not a finding kind (lowercase letters, digits, _)")
    pinned = (params.get("pinned") or "").strip().lower()
    if pinned:
        if pinned not in ("true", "false"):
            raise ActionError("pinned must be true or false")
        search.pinned = pinned == "true"
    search.page = _number(params, "page", 1)
    search.per_page = _number(params, "per_page", per_page, MAX_PER_PAGE)
    search.default_per_page = per_page
    return search


def _target(term: str) -> Q:
    found = Q(target_kind__iexact=term)
    for key in TARGET_KEYS:
        found |= Q(**{f"spec_{key}__icontains": term})
    return found


def rows(search: Search, user):
    """The captures `user` may see that match `search`, newest first."""
    found = Capture.objects.select_related("owner").prefetch_related("files")
    if not user.is_staff:
        found = found.filter(owner=user)
    if search.target or search.q:
        found = found.annotate(**{f"spec_{key}": KeyTextTransform(key, "target_spec")
                                  for key in TARGET_KEYS})
    for word in search.q.split():
        found = found.filter(Q(name__icontains=word) | Q(owner__username__icontains=word)
                             | _target(word))
    if search.name:
        found = found.filter(name__icontains=search.name)
    if search.target:
        found = found.filter(_target(search.target))
    if search.owner:
        found = found.filter(owner__username__iexact=search.owner)
    if search.status:
        found = found.filter(status__in=search.status)
    if search.finding:
        any_kind = Q()
        for kind in search.finding:
            any_kind |= Q(finding_kinds__contains=findings.pattern(kind))
        found = found.filter(any_kind)
    if search.pinned is not None:
        found = found.filter(pinned=search.pinned)
    return found.order_by("-created", "-id")


@dataclass
class Page:
    items: list
    number: int
    pages: int
    count: int
    search: Search

    def link(self, base: str, number: int | None) -> str | None:
        if number is None or not 1 <= number <= self.pages:
            return None
        query = self.search.params(page=number)
        if self.search.per_page != self.search.default_per_page:
            query["per_page"] = self.search.per_page
        return f"{base}?{urlencode(query)}" if query else base

    @property
    def next_number(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None

    @property
    def previous_number(self) -> int | None:
        return self.number - 1 if self.number > 1 else None


def page(search: Search, user) -> Page:
    found = rows(search, user)
    count = found.count()
    pages = max(1, math.ceil(count / search.per_page))
    start = (search.page - 1) * search.per_page
    items = list(found[start:start + search.per_page]) if search.page <= pages else []
    return Page(items, search.page, pages, count, search)
