"""What a share link shows: one whitelist per answer, and the only place that decides it.

Theory of operation. Every answer a share link reaches (the capture, its analysis, the layout
head and row chunks, frames, exports, notes, the share page, the WebSocket's events) is built in
full and then passed through `shown(value, SPEC, view)`, which keeps only the fields SPEC lists:
a field added to an answer is not shown to any link until it is listed here. A spec is

    SHOWN            every link shows the value as it is (a whole subtree when it is an object)
    FULL             a full link shows it; a redacted link leaves the field out
    Renamed(fn)      a full link shows it; a redacted link shows fn(value, parent, names)
    {key: spec}      an object: only these keys
    [spec]           a list whose items follow spec

Three views: OWNER (the capture's owner or staff: not a share, nothing left out), FULL and
REDACTED links. A redacted link shows what happened but not where it was taken or by whom:
no packets (pcap, frames, live rows), no target, filter, limits, log, owner or note authors,
and vantage and interface names replaced by neutral ones ("vantage 1", "interface 2"). The
drawings of a redacted link are made from its whitelisted model (`sequence`), so the names
under its arrows are the neutral ones too.

No answer, for any view, carries a path of the server's data directory: `unpath`
(captures.jobs.owner_view, where the worker finds it too) turns one into the file's base name
(`capture.pcapng`).
"""

from __future__ import annotations

import re

from captures.jobs import described, diagram_cache
from captures.jobs.owner_view import OWNER, unpath
from captures.web import present

FULL_LINK, REDACTED = "full", "redacted"


def view_of(link) -> str:
    return REDACTED if link.redacted else FULL_LINK


def packets_shown(view: str) -> bool:
    """Packet bytes (the pcap, one frame's dissection, live rows): not for a redacted link."""
    return view != REDACTED


# -- the spec language -------------------------------------------------------------------------

SHOWN = "every link"
FULL = "full links only"


class Renamed:
    def __init__(self, rename):
        self.rename = rename


class NeutralNames:
    """Neutral names for one answer, numbered in order of appearance. A name that is already
    neutral keeps its name, so passing an answer through twice changes nothing."""

    NEUTRAL = re.compile(r"(vantage|interface|file) \d+")

    def __init__(self) -> None:
        self.given: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}

    def _name(self, kind: str, value):
        if not value or not isinstance(value, str) or self.NEUTRAL.fullmatch(value):
            return value
        name = self.given.get((kind, value))
        if name is None:
            count = self.counts[kind] = self.counts.get(kind, 0) + 1
            name = self.given[(kind, value)] = f"{kind} {count}"
        return name

    def vantage(self, value):
        return self._name("vantage", value)

    def interface(self, value):
        return self._name("interface", value)

    def file(self, value):
        """A file's neutral name; its path and its base name are one file."""
        if isinstance(value, str) and "/" in value:
            value = value.rsplit("/", 1)[1]
        return self._name("file", value)


def shown(value, spec, view: str, names: NeutralNames | None = None, parent: dict | None = None):
    """`value` as `view` may see it under `spec` (see the module's docstring)."""
    names = names if names is not None else NeutralNames()
    if isinstance(spec, Renamed):
        return spec.rename(value, parent or {}, names) if view == REDACTED else value
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return value
        return {key: shown(item, spec[key], view, names, value) for key, item in value.items()
                if key in spec and not (spec[key] is FULL and view == REDACTED)}
    if isinstance(spec, list):
        return [shown(item, spec[0], view, names, parent) for item in value] \
            if isinstance(value, list) else value
    return value


def _interface(value, parent, names):
    return names.interface(value)


def _vantage(value, parent, names):
    return names.vantage(value)


def _where(value, parent, names):
    # Written again from the hops (captures.analysis.engine's wording), with neutral names.
    if not value or value == "unknown":
        return value
    before, after = parent.get("from_hop") or {}, parent.get("to_hop") or {}
    if not before:
        return names.interface(after.get("interface")) or "unknown"
    if before.get("interface") == after.get("interface"):
        return (f"{names.interface(before.get('interface'))} "
                f"({before.get('direction')} → {after.get('direction')})")
    return f"{names.interface(before.get('interface'))} → {names.interface(after.get('interface'))}"


def _place_interface(value, parent, names):
    # A place names its interface bare ("cbr0"); its neutral name is its hop's.
    return names.interface(parent.get("hop") or value)


def _replace_word(text: str, word: str, neutral: str) -> str:
    return re.sub(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", neutral, text)


def _scrub(value, parent, names):
    """A diagnosis sentence with the places it names (its `places`) in neutral names."""
    if not isinstance(value, str):
        return value
    for place in parent.get("places") or ():
        if place.get("interface"):
            value = _replace_word(value, place["interface"],
                                  names.interface(place.get("hop") or place["interface"]))
        vantage = place.get("vantage")
        if vantage and "/" in vantage:
            neutral = names.vantage(vantage)
            kind, name = vantage.split("/", 1)
            value = value.replace(vantage, neutral).replace(f"{kind} {name}", neutral)
            value = _replace_word(value, name, neutral)
    return value


def _place_description(value, parent, names):
    if isinstance(value, str) and parent.get("interface"):
        return _replace_word(value, parent["interface"], _place_interface(
            parent["interface"], parent, names))
    return value


def _file(value, parent, names):
    return names.file(value)


def without_file_names(text, files, names: NeutralNames):
    """`text` (a warning: "<file>: cut off …") with each of `files` (paths or names) in its
    neutral name: an uploaded file's name can say where it was taken."""
    if not isinstance(text, str):
        return text
    for name in sorted({f for f in files if f}, key=len, reverse=True):
        base = name.rsplit("/", 1)[-1]
        text = text.replace(name, names.file(base))
        if base:
            text = _replace_word(text, base, names.file(base))
    return text


def _warnings(value, parent, names):
    files = [f.get("path") for f in parent.get("files") or () if isinstance(f, dict)]
    if not isinstance(value, list):
        return value
    return [without_file_names(text, files, names) for text in value]


def _nobody(value, parent, names):
    return None


def _no_rows(value, parent, names):
    return []


def _refused(value, parent, names):
    return False


# -- the whitelists ----------------------------------------------------------------------------

_CAPTURE_FACTS = {  # the sequence model's and the layout's `capture` (docs/model.md)
    # A file's name can say where it was taken (an upload's "node-3-eth0.pcap"): a redacted
    # link sees "file 1", also where a warning names it.
    "files": [{"path": Renamed(_file), "vantage": Renamed(_vantage), "packets": SHOWN,
               "linktypes": SHOWN}],
    "packets": SHOWN, "messages": SHOWN, "start": SHOWN, "duration": SHOWN, "partial": SHOWN,
    "warnings": Renamed(_warnings),
}
# A tunnelled hop's outer header: addresses are shown as the hops' are; the nodes it names
# (and its name, which spells them) say where the capture was taken, so full links only.
_UNDERLAY = {"src": SHOWN, "dst": SHOWN, "port": SHOWN, "vni": SHOWN, "key": SHOWN,
             "src_node": FULL, "dst_node": FULL, "name": FULL}
_HOP = {"interface": Renamed(_interface), "direction": SHOWN, "src": SHOWN, "dst": SHOWN,
        "t": SHOWN, "tunnel": SHOWN, "underlay": _UNDERLAY}
_HOP_REF = {"interface": Renamed(_interface), "direction": SHOWN}
_ANNOTATION = {
    key: SHOWN for key in (
        "kind", "connection", "before", "after", "seen_on", "mechanism", "flow", "port", "app",
        "mesh", "direction", "original_dst", "via", "client", "server", "evidence", "requests",
        "basis", "count", "by", "description", "name", "retried_over_tcp", "from", "to",
        "error", "about", "mtu", "t")
} | {"where": Renamed(_where), "from_hop": _HOP_REF, "to_hop": _HOP_REF,
     "node": FULL}  # the node a DNAT/SNAT happened on: where the capture was taken
# The diagnosis' causes (docs/model.md, "Diagnosis"): their sentences name places, which a
# redacted link sees under the same neutral names as the hops.
_PLACE = {"vantage": Renamed(_vantage), "interface": Renamed(_place_interface),
          "direction": SHOWN, "hop": Renamed(_interface),
          "description": Renamed(_place_description)}
_LOSS = {"message": SHOWN, "last_seen": _PLACE, "next_expected": _PLACE, "after_nat": SHOWN,
         "attempts": SHOWN}
_ANNOTATION |= {
    key: SHOWN for key in (
        "severity", "connections", "rejected_by", "by_name", "exchange", "queries", "nxdomain",
        "extra_queries", "extra_ms", "search", "type", "waited_ms", "resolver_timeout",
        "same_socket_twin", "largest_delivered", "lost_size", "retransmissions", "icmp_seen",
        "reason", "inferred", "expected", "seen", "service", "bytes", "signs",
        # listen_overflow, injected_reset, hairpin, idle_reset, server_first_stall
        "synack_resent", "delivered", "served", "reset", "claimed", "request_delivered",
        "dnat_to", "returned", "masqueraded", "idle_s", "request", "outcome", "timeouts",
        "conntrack_forgot", "protocol", "waited_s", "closed_by")
} | {"text": Renamed(_scrub), "check": Renamed(_scrub), "message": SHOWN,
     "group": Renamed(_scrub),  # the sentence for several connections (happened.py)
     "origin": _PLACE, "first_seen": _PLACE,  # injected_reset's places
     "sent_by_node": FULL,  # the node that forged a reset: where the capture was taken
     "vantage": Renamed(_vantage),  # capture_missed_loopback: the pod that was recorded
     "places": [{"hop": Renamed(_interface), "vantage": Renamed(_vantage),
                 "interface": Renamed(_place_interface)}],
     "lost": _LOSS, **{key: spec for key, spec in _LOSS.items() if key != "message"}}
_CONNECTION = {
    key: SHOWN for key in (
        "id", "client", "server", "server_after_nat", "requests", "exchanges", "closed", "state",
        "handshake", "retransmissions", "keepalives", "zero_windows", "packets", "app", "tls",
        "annotations", "timing", "outcome", "unseen_bytes")
}

SEQUENCE = {  # kviz.sequence/1: GET .../analysis, and what every drawing is made from
    "schema": SHOWN,
    "capture": _CAPTURE_FACTS,
    "participants": [{"ip": SHOWN, "name": SHOWN, "kind": SHOWN, "namespace": SHOWN,
                      "ports": SHOWN, "node": FULL}],
    "messages": [{key: SHOWN for key in (
        "id", "t", "src", "dst", "proto", "label", "flags", "len", "connection", "phase", "frame",
        "annotations")} | {"hops": [_HOP]}],
    "connections": [_CONNECTION],
    "dns": [{key: SHOWN for key in (
        "id", "name", "type", "answers", "answer_records", "rcode", "client", "server", "t",
        "latency_ms", "transport", "retries", "truncated", "messages")}],
    "http": [{key: SHOWN for key in (
        "connection", "n", "method", "target", "host", "t", "status", "response_t", "ttfb_ms",
        "protocol", "stream")}],
    "annotations": [_ANNOTATION],
}

LAYOUT = {  # kviz.layout/1: the layout head, its row chunks, and the `layout` export
    "schema": SHOWN, "capture": _CAPTURE_FACTS, "folded": SHOWN, "options": SHOWN,
    "size": SHOWN,
    "lanes": [{key: SHOWN for key in (
        "index", "ip", "name", "kind", "namespace", "ports", "address", "caption", "facts",
        "head_width", "badges", "x")} | {"node": FULL}],
    "nodes": FULL,  # lanes grouped by node (a redacted link's model names no node)
    "rows": [{key: SHOWN for key in (
        "index", "message", "t", "src", "dst", "from", "to", "nat_to", "label", "proto",
        "flags", "connection", "phase", "frame", "style", "group", "fold", "y", "len")}
        | {"hops": [Renamed(_interface)], "hop_detail": [_HOP],
           # Badge words are drawn from the (whitelisted) model: neutral names already.
           "badges": [{"kind": SHOWN, "text": SHOWN, "detail": SHOWN, "annotation": SHOWN,
                       "shown": SHOWN}]}],
    "phases": [{key: SHOWN for key in (
        "id", "connection", "phase", "title", "lanes", "first_row", "last_row", "rows",
        "has_request", "y_top", "y_bottom")}],
    "folds": [{key: SHOWN for key in (
        "id", "first_row", "shown_last_row", "last_row", "count", "unit", "t_first", "t_last",
        "lanes", "collapsed", "text", "y", "height", "band")}],
    "gaps": [{key: SHOWN for key in ("before_row", "seconds", "text", "y", "height")}],
    # the lean head's phases, and its mark (captures.jobs.diagram_cache._lean)
    "phase_columns": SHOWN, "lean": SHOWN,
    # a big capture's first screen, while the rest is laid out: of how many messages
    "first_screen": {"messages": SHOWN},
    "connections": [_CONNECTION], "annotations": [_ANNOTATION],
    # the head's index of the rows (captures.jobs.diagram_cache), and a chunk's first row
    "row_count": SHOWN, "chunk_rows": SHOWN, "ys": SHOWN, "message_rows": SHOWN,
    "expanded": SHOWN, "collapsed_phases": SHOWN, "start": SHOWN,
}

CAPTURE = {  # GET /api/share/<token>/ (docs/api.md, "Captures")
    # A capture's error may name its target ("pod x/y is gone"): full links only.
    "id": SHOWN, "name": SHOWN, "status": SHOWN, "counters": SHOWN, "error": FULL,
    "created": SHOWN, "started": SHOWN, "finished": SHOWN,
    "summary": {key: SHOWN for key in (
        "packets", "duration", "partial", "warnings", "participants", "messages", "connections",
        "dns", "http")},
    "analysis": SHOWN, "pcap": Renamed(_refused),
    # Where each file was taken names pods and nodes; only full links show it.
    "files": FULL,
    "owner": FULL, "target": FULL, "filter": FULL, "limits": FULL, "log": FULL, "worker": FULL,
    "redacted": SHOWN, "expires": SHOWN,
}

FRAME = {"frame": SHOWN, "protocols": SHOWN, "layers": SHOWN, "details": SHOWN,
         "hex": SHOWN}  # full links only

NOTE = {"id": SHOWN, "target": SHOWN, "text": SHOWN, "author": Renamed(_nobody),
        "created": SHOWN}

MARKDOWN_FACTS = {"time": SHOWN, "target": FULL, "filter": FULL, "limits": FULL}

EVENTS = {  # the WebSocket, by event kind; an unlisted kind keeps only its seq and kind
    "hello": {"kind": SHOWN, "capture": SHOWN, "status": SHOWN, "redacted": SHOWN},
    "batch": {"seq": SHOWN, "kind": SHOWN, "thinned": SHOWN, "counters": SHOWN,
              "rows": Renamed(_no_rows), "redacted": SHOWN},
    "status": {"seq": SHOWN, "kind": SHOWN, "status": SHOWN, "counters": SHOWN, "error": FULL},
    "error": {"kind": SHOWN, "error": SHOWN},
}

PAGE = {  # the share page's template context (frontend/templates/captures/share.html)
    "capture": {key: SHOWN for key in (
        "id", "name", "status", "is_terminal", "analysis_path", "created", "finished")},
    "link": {"redacted": SHOWN, "expires": SHOWN},
    "doc": CAPTURE, "target": FULL, "analysis": SHOWN, "pcap_url": FULL,
    "ws_path": SHOWN, "api_url": SHOWN, "diagram_url": SHOWN, "read_only": SHOWN,
    "share_token": SHOWN,
}


# -- the answers -------------------------------------------------------------------------------


def _answer(value, spec, view: str):
    return unpath(value if view == OWNER else shown(value, spec, view))


def capture(row, view: str, link=None) -> dict:
    doc = {
        "id": str(row.id), "name": row.name, "status": row.status,
        "counters": {"packets": row.packets, "bytes": row.bytes,
                     "elapsed": round(row.elapsed, 2)},
        "error": row.error, "created": row.created.isoformat(),
        "started": row.started.isoformat() if row.started else None,
        "finished": row.finished.isoformat() if row.finished else None,
        "summary": row.summary, "analysis": bool(row.analysis_path),
        "pcap": any(f.path for f in row.files.all()),
        # Stored files come first (a path's parts are numbered as they start), so `index`
        # is the file index of the analysis, the frames and the downloads.
        "files": [{"index": f.position, "stored": bool(f.path), "role": f.role,
                   "vantage": f.vantage, "file_name": f.file_name, "packets": f.packets,
                   "bytes": f.bytes, "error": f.error} for f in row.files.all()],
        "owner": row.owner.get_username(),
        "target": {"kind": row.target_kind, **row.target_spec},
        "filter": row.bpf_filter,
        "limits": {"seconds": row.limit_seconds, "packets": row.limit_packets,
                   "bytes": row.limit_bytes},
        "log": row.log, "worker": row.worker_id,
    }
    if link is not None:
        doc.update({"redacted": link.redacted, "expires": link.expires.isoformat()})
    if view == REDACTED and isinstance(row.summary, dict):
        # The summary's warnings may name the files (as the analysis' do), in the order the
        # analysis lists them, so that "file 1" is the same file in both answers.
        neutral = NeutralNames()
        warnings = list(row.summary.get("warnings") or ())
        for stored in row.files.all():
            warnings = [without_file_names(text, [stored.path], neutral) for text in warnings]
            if stored.file_name and stored.path:  # as uploaded: the same file's other name
                same = neutral.file(stored.path)
                warnings = [_replace_word(text, stored.file_name, same) for text in warnings]
        doc["summary"] = {**row.summary, "warnings": warnings}
    return _answer(doc, CAPTURE, view)


def sequence(model: dict, view: str) -> dict:
    return _answer(model, SEQUENCE, view)


def sequence_parts(view: str) -> diagram_cache.Prepare:
    """`sequence` a part at a time, for a layout built from the stored analysis: the model
    without its messages, then each message in order. One set of neutral names spans them
    all, given in the order `sequence` gives them (the messages come last in a stored model)."""
    if view == OWNER:
        return diagram_cache.OWNER_PREPARE
    names = NeutralNames()
    message_spec = SEQUENCE["messages"][0]
    return diagram_cache.Prepare(
        lambda head: unpath(shown(head, SEQUENCE, view, names)),
        lambda message: unpath(shown(message, message_spec, view, names)))


def layout(doc: dict, view: str) -> dict:
    return _answer(doc, LAYOUT, view)


def frame(doc: dict, view: str) -> dict:
    if not packets_shown(view):
        raise ValueError("a redacted link shows no packets")
    return _answer(doc, FRAME, view)


def note(row, view: str) -> dict:
    return _answer({"id": row.id, "target": row.target, "text": row.text,
                    "author": row.author.get_username(), "created": row.created.isoformat()},
                   NOTE, view)


def markdown_notes(rows, view: str) -> list[dict]:
    return [{key: value for key, value in note(row, view).items()
             if key in ("target", "text", "author")} for row in rows]


def markdown_facts(row, view: str) -> dict:
    facts = {"time": (row.started or row.created).isoformat(),
             "target": present.target_label(row),
             "filter": row.bpf_filter or "none",
             "limits": f"{row.limit_seconds} s, {row.limit_packets} packets, "
                       f"{row.limit_bytes} bytes"}
    return _answer(facts, MARKDOWN_FACTS, view)


def live_event(event: dict, view: str) -> dict:
    if view == OWNER:
        return event
    spec = EVENTS.get(event.get("kind"), {"seq": SHOWN, "kind": SHOWN})
    if view == REDACTED and event.get("kind") == "batch":
        event = {**event, "redacted": True}
    return _answer(event, spec, view)


def describe(row, view: str) -> dict | None:
    """The analysis in sentences (captures.render.describe) as `view` may read it, made once
    per analysis (captures.jobs.described); it needs no messages and reads none."""
    if view == OWNER:
        return described.read(row)
    return described.read(row, view, prepare=lambda head: sequence(head, view))


def page(row, link, context: dict) -> dict:
    """The share page's context: `context` (the URLs) and the capture, whitelisted."""
    view = view_of(link)
    facts = {key: getattr(row, key) for key in PAGE["capture"]}
    facts["analysis_path"] = bool(row.analysis_path)  # whether there is one, not where
    full = {**context, "capture": facts,
            "link": {"redacted": link.redacted, "expires": link.expires},
            "doc": capture(row, view, link), "target": present.target_label(row),
            "analysis": describe(row, view)}
    return _answer(full, PAGE, view)
