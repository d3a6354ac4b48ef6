"""The sequence model laid out once: lanes, rows, phase groups, fold groups, idle gaps, badges.

Every export (SVG, Mermaid, PlantUML, Markdown) and the browser draw from this one layout, so
none of them re-derives names, phases or badges. docs/layout.md describes `to_dict()`.

Theory of operation, one pass over the messages then a few passes over the rows:
1. Lanes: one per participant IP, in the order they first appear in the messages (src before
   dst), named from `participants`; an IP the model did not list still gets a lane.
2. Rows: one per message, in time order, with its lanes, style and badges (see badges.py).
3. Phase groups: per connection (or per DNS/other conversation), consecutive rows of one phase;
   request/response/data rows form one "exchange" group per HTTP request.
4. Fold groups (folds.py): repeated exchanges or blocks of rows. Always found and listed; with
   `fold=True` only the first repetition gets a y and a band stands for the rest.
5. Vertical positions: a fixed pitch per row, more for rows with badges, a header before each
   phase group, a fixed-height band for each idle gap longer than `gap_seconds`.
6. Lane x positions: wide enough for the longest label between two neighbouring lanes.

When the lanes' participants run on two nodes or more (the model's `participants[].node`, from
the inventory), step 1's order is regrouped before step 3: each node's lanes side by side under
a header naming the node, the nodes in the order they first appear (the client's node first),
lanes outside any node (Services, outside clients) where they first appear between them. One
node, or none known, keeps the plain order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from captures.analysis.records import split_endpoint

from .badges import (
    ConnectionIndex,
    annotation_badge,
    badge,
    hop_chain,
    lost_here,
    request_badge,
)
from .folds import FoldGroup, find_folds

LAYOUT_SCHEMA = "kviz.layout/1"

# Geometry in SVG user units (px). The browser may scale; the proportions are the layout's.
AXIS_WIDTH = 96  # the time axis column at the left
LANE_HEAD_HEIGHT = 64
NODE_HEAD_HEIGHT = 20  # above the lane heads, for the node headers, when lanes are grouped
NODE_GAP = 24  # between two node groups' lane heads
ROW_PITCH = 28
BADGE_LINE = 14
PHASE_HEADER = 18
GAP_BAND = 30
FOLD_BAND = 34
MIN_LANE_GAP = 180
SELF_LOOP_SPACE = 150
RIGHT_MARGIN = 220
CHAR_WIDTH = 6.4  # average width of an 11px sans-serif character
LABEL_CHARS = 64  # longer labels are cut with "…" on the arrow (the full text is kept)

PHASE_KIND = {"request": "exchange", "response": "exchange", "data": "exchange"}
PHASE_TITLE = {
    "dns": "DNS",
    "handshake": "TCP handshake",
    "tls": "TLS",
    "exchange": "request/response",
    "teardown": "teardown",
    "other": "other",
}


@dataclass(slots=True)
class Lane:
    index: int
    ip: str
    name: str
    kind: str
    namespace: str | None
    ports: list[int]
    node: str | None = None  # the node it runs on (a pod) or is (a node's address)
    badges: list[str] = field(default_factory=list)
    x: float = 0.0

    @property
    def address(self) -> str:
        """The raw IP:port(s) shown beside the name."""
        ip = f"[{self.ip}]" if ":" in self.ip and self.ports else self.ip
        if not self.ports:
            return ip
        return ip + ":" + ",".join(str(p) for p in self.ports[:4]) + ("…" if len(self.ports) > 4
                                                                      else "")

    @property
    def caption(self) -> str:
        """The line under the name: the raw address, unless the name already is the IP."""
        if self.name != self.ip:
            return self.address
        return ("port " + ", ".join(str(p) for p in self.ports[:4])) if self.ports else ""

    @property
    def facts(self) -> str:
        """Kind, namespace and badges (sidecar) on one line."""
        return " · ".join([self.kind, *([self.namespace] if self.namespace else []),
                           *self.badges])

    @property
    def head_width(self) -> float:
        return max(len(self.name) * 7.4, len(self.caption) * 6.2, len(self.facts) * 5.4) + 24

    def to_dict(self) -> dict:
        return {"index": self.index, "ip": self.ip, "name": self.name, "kind": self.kind,
                "namespace": self.namespace, "ports": self.ports, "address": self.address,
                "caption": self.caption, "facts": self.facts, "head_width": self.head_width,
                "badges": self.badges, "x": self.x, "node": self.node}


@dataclass(slots=True)
class Row:
    index: int
    message: int
    t: float
    src: str
    dst: str
    src_lane: int
    dst_lane: int
    label: str
    proto: str
    flags: str | None
    connection: int | None
    phase: str
    frame: list | None
    hops: list[str]
    style: str
    badges: list[dict] = field(default_factory=list)
    group: int | None = None
    fold: int | None = None
    y: float | None = None
    nat_lane: int | None = None  # after a DNAT on the way: the lane the packet really reached

    def to_dict(self) -> dict:
        return {"index": self.index, "message": self.message, "t": self.t, "src": self.src,
                "dst": self.dst, "from": self.src_lane, "to": self.dst_lane, "label": self.label,
                "proto": self.proto, "flags": self.flags, "connection": self.connection,
                "phase": self.phase, "frame": self.frame, "hops": self.hops, "style": self.style,
                "badges": self.badges, "group": self.group, "fold": self.fold, "y": self.y,
                "nat_to": self.nat_lane}


@dataclass(slots=True)
class PhaseGroup:
    id: int
    connection: int | None
    phase: str
    title: str
    lanes: tuple[int, int]
    first_row: int
    last_row: int
    rows: int = 0
    has_request: bool = False
    y_top: float | None = None
    y_bottom: float | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "connection": self.connection, "phase": self.phase,
                "title": self.title, "lanes": list(self.lanes), "first_row": self.first_row,
                "last_row": self.last_row, "rows": self.rows, "y_top": self.y_top,
                "y_bottom": self.y_bottom}


@dataclass(slots=True)
class NodeGroup:
    """Lanes first_lane..last_lane run on one node: a header and a box around their heads."""

    node: str
    first_lane: int
    last_lane: int
    left: float = 0.0
    right: float = 0.0

    @property
    def title(self) -> str:
        return f"node {self.node}"

    def to_dict(self) -> dict:
        return {"node": self.node, "title": self.title,
                "lanes": [self.first_lane, self.last_lane], "left": self.left,
                "right": self.right}


@dataclass(slots=True)
class Gap:
    before_row: int
    seconds: float
    y: float
    height: float

    @property
    def text(self) -> str:
        return f"… {format_seconds(self.seconds)} idle …"

    def to_dict(self) -> dict:
        return {"before_row": self.before_row, "seconds": self.seconds, "text": self.text,
                "y": self.y, "height": self.height}


@dataclass
class Layout:
    capture: dict
    lanes: list[Lane]
    rows: list[Row]
    phases: list[PhaseGroup]
    folds: list[FoldGroup]
    gaps: list[Gap]
    folded: bool
    width: float
    height: float
    participants: list[dict]
    connections: list[dict]
    dns: list[dict]
    http: list[dict]
    annotations: list[dict]
    options: dict
    nodes: list[NodeGroup] = field(default_factory=list)
    head_height: float = LANE_HEAD_HEIGHT  # lifelines start below it

    @property
    def node_head_height(self) -> float:
        """Room above the lane heads for node headers (0 when lanes are not grouped)."""
        return self.head_height - LANE_HEAD_HEIGHT

    def visible_rows(self):
        return (row for row in self.rows if row.y is not None)

    def to_dict(self) -> dict:
        return self.head_dict(rows=True)

    def head_dict(self, rows: bool = False) -> dict:
        """`to_dict()` without its rows (the diagram cache writes those a chunk at a time)."""
        return {
            "schema": LAYOUT_SCHEMA,
            "capture": self.capture,
            "folded": self.folded,
            "options": self.options,
            "size": {"width": self.width, "height": self.height, "axis_width": AXIS_WIDTH,
                     "lane_head_height": self.head_height,
                     "node_head_height": self.node_head_height},
            "lanes": [lane.to_dict() for lane in self.lanes],
            "nodes": [group.to_dict() for group in self.nodes],
            **({"rows": [row.to_dict() for row in self.rows]} if rows else {}),
            "phases": [group.to_dict() for group in self.phases],
            "folds": [group.to_dict() for group in self.folds],
            "gaps": [gap.to_dict() for gap in self.gaps],
            "connections": self.connections,
            "annotations": self.annotations,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def format_seconds(seconds: float) -> str:
    if seconds >= 60:
        return f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def model_parts(model) -> tuple[dict, list, object, list, list, list, list]:
    """capture, participants, messages, connections, dns, http, annotations from either a
    SequenceModel (messages streamed from its spool) or its `to_dict()` document."""
    if isinstance(model, dict):
        get = model.get
    else:
        def get(key, default=None):
            return getattr(model, key, default)
    return (get("capture") or {}, get("participants") or [], get("messages") or [],
            get("connections") or [], get("dns") or [], get("http") or [],
            get("annotations") or [])


class LaneTable:
    """The lanes in order of first appearance: one per address, named from the participants;
    endpoints repeat (ip:port pairs per connection), so each is parsed once."""

    def __init__(self, participants: list[dict]) -> None:
        self.by_ip = {p["ip"]: p for p in participants}
        self.lanes: list[Lane] = []
        self.of_ip: dict[str, int] = {}
        self.of_endpoint: dict[str, int] = {}

    def lane_for(self, endpoint: str) -> int:
        found = self.of_endpoint.get(endpoint)
        if found is not None:
            return found
        ip = split_endpoint(endpoint)[0]
        found = self.of_ip.get(ip)
        if found is None:
            found = len(self.lanes)
            known = self.by_ip.get(ip, {})
            self.lanes.append(Lane(found, ip, known.get("name") or ip,
                                   known.get("kind") or "external", known.get("namespace"),
                                   list(known.get("ports") or []), known.get("node")))
            self.of_ip[ip] = found
        self.of_endpoint[endpoint] = found
        return found


def width_and_bands(lanes: list[Lane], folds: list, rows_right: float) -> float:
    """The drawing's width: past the last lane, the rows' content (`rows_right`) and the
    collapsed folds' words; each fold gets its band (a collapsed one as wide as its words)."""
    for group in folds:
        group.band = fold_band(lanes, group)
    return max((lanes[-1].x if lanes else AXIS_WIDTH) + RIGHT_MARGIN, rows_right + 20,
               *(_fold_right(lanes, group) for group in folds if group.collapsed))


def build_layout(model, *, fold: bool = True, gap_seconds: float = 1.0, max_period: int = 16,
                 min_repeats: int = 3, expand=(), collapse=()) -> Layout:
    """Lay out a `kviz.sequence/1` model (a SequenceModel or its dict); see the module doc.

    `expand`: fold group ids drawn in full although `fold` is set; `collapse`: phase group ids
    drawn as their header only (their rows get `y: null`). The browser asks for these when a
    reader opens a fold or closes a phase, so positions still come from one place."""
    capture, participants, messages, connections, dns, http, annotations = model_parts(model)
    table = LaneTable(participants)
    lanes, lane_of_ip, lane_for = table.lanes, table.of_ip, table.lane_for

    # 1-2. Lanes and rows in one pass over the (possibly spooled) messages. A row keeps one
    # copy of each text many rows repeat (endpoints, protocols, phases, labels, hop lists):
    # read from JSON, every message has its own, and at 1M rows that is hundreds of MB.
    rows: list[Row] = []
    same: dict = {}
    one = same.setdefault
    index = ConnectionIndex()
    client_of = {c["id"]: c.get("client") for c in connections}
    redirected = _redirected(annotations)
    several_files = len(capture.get("files") or ()) > 1
    for message in messages:
        row_index = len(rows)
        src, dst = message["src"], message["dst"]
        redirect = redirected.get(message.get("connection"))
        if redirect is None:
            src_lane, dst_lane = lane_for(src), lane_for(dst)
        else:
            # The sidecar answers in the name of the address the app meant: its replies are
            # drawn on the sidecar's lifeline, where the SYN went (the label keeps what the
            # packet said; the sidecar badge names the address the app meant).
            meant, sidecar = redirect
            src_lane = lane_for(sidecar if src == meant else src)
            dst_lane = lane_for(sidecar if dst == meant else dst)
        hops = message.get("hops") or []
        names = tuple(h.get("interface") or "?" for h in hops)
        label, proto = message.get("label") or "", message.get("proto") or ""
        flags, phase = message.get("flags"), message.get("phase") or "other"
        row = Row(row_index, message["id"], message["t"], one(src, src), one(dst, dst),
                  src_lane, dst_lane, one(label, label), one(proto, proto), one(flags, flags),
                  message.get("connection"), one(phase, phase), message.get("frame"),
                  one(names, list(names)) if names else [], _style(message, client_of))
        for note_index in message.get("annotations") or ():
            if 0 <= note_index < len(annotations):
                row.badges.append(annotation_badge(note_index, annotations[note_index]))
        if len(hops) > 1:
            row.badges.append(badge("hops", hop_chain(hops, several_files)))
        rows.append(row)
        index.see(row_index, message)
    meant = {split_endpoint(original)[0] for original, _sidecar in redirected.values()}
    for participant in participants:  # listed but silent (e.g. only named by a DNS answer)
        if participant["ip"] not in lane_of_ip and participant["ip"] not in meant:
            lane_for(participant["ip"])

    _attach_findings(rows, index, annotations, http)
    _follow_dnat(rows, annotations, lane_of_ip)
    _mark_sidecar_lanes(lanes, lane_of_ip, annotations)
    nodes = _group_by_node(lanes, rows)
    head_height = LANE_HEAD_HEIGHT + (NODE_HEAD_HEIGHT if nodes else 0)
    phases = _phase_groups(rows)
    folds = find_folds(rows, max_period, min_repeats)
    if fold:
        for group in folds:
            group.collapsed = group.id not in expand
    _place_lanes(lanes, rows, nodes)
    gaps, height = _place_rows(rows, phases, folds, gap_seconds, frozenset(collapse),
                               head_height)
    width = width_and_bands(lanes, folds, content_right(lanes, rows))
    options = {"fold": fold, "gap_seconds": gap_seconds, "max_period": max_period,
               "min_repeats": min_repeats}
    return Layout(capture, lanes, rows, phases, folds, gaps, fold, width, height, participants,
                  connections, dns, http, annotations, options, nodes, head_height)


def _style(message: dict, client_of: dict) -> str:
    """How the arrow is drawn: reset, retransmission, reply (server to client) or send."""
    flags = message.get("flags") or ""
    if "R" in flags:
        return "rst"
    if (message.get("label") or "").endswith("(retransmission)"):
        return "retransmission"
    client = client_of.get(message.get("connection"))
    if client is not None:
        return "send" if message["src"] == client else "reply"
    label = message.get("label") or ""
    return "reply" if label.startswith("DNS ") and not label.startswith("DNS query") else "send"


def _attach_findings(rows: list[Row], index: ConnectionIndex, annotations: list[dict],
                     http: list[dict]) -> None:
    referenced = {b["annotation"] for row in rows for b in row.badges
                  if b["annotation"] is not None} if len(rows) < 200_000 else set()
    seen_names: dict[tuple[str, str], int] = {}
    for note_index, note in enumerate(annotations):
        if note_index in referenced:
            continue
        for row_index in index.rows_for(note, seen_names):
            found = annotation_badge(note_index, note)
            if note.get("kind") == "rst":
                found["text"] = f"RST by {rows[row_index].src}"
            elif rows[row_index].message == _lost_copy(note).get("message"):
                found["text"] = lost_here(_lost_copy(note))
            rows[row_index].badges.append(found)
    for request in http:
        row_index = index.request_row(request)
        if row_index is not None:
            rows[row_index].badges.append(request_badge(request))


def _redirected(annotations: list[dict]) -> dict[int, tuple[str, str]]:
    """connection -> (the address the app meant, the sidecar's) for REDIRECTed connections."""
    return {note["connection"]: (note["before"], note["after"]) for note in annotations
            if note.get("kind") == "dnat" and note.get("mechanism") == "redirect"
            and note.get("connection") is not None}


def _lost_copy(note: dict) -> dict:
    """Where a cause says a packet was lost (its `lost` part, or itself for `lost`)."""
    if note.get("kind") == "lost":
        return note
    return note.get("lost") or {}


def _follow_dnat(rows: list[Row], annotations: list[dict], lane_of_ip: dict[str, int]) -> None:
    """A packet sent to a Service VIP and DNATed on the way really reached the pod behind it:
    the arrow goes on from the VIP's lane to the pod's (when the pod has a lane)."""
    for row in rows:
        for found in row.badges:
            if found["kind"] != "dnat" or found["annotation"] is None:
                continue
            note = annotations[found["annotation"]]
            if row.dst == note.get("before"):
                lane = lane_of_ip.get(split_endpoint(note.get("after") or "")[0])
                if lane is not None and lane != row.dst_lane:
                    row.nat_lane = lane


def _mark_sidecar_lanes(lanes: list[Lane], lane_of_ip: dict[str, int],
                        annotations: list[dict]) -> None:
    for note in annotations:
        if note.get("kind") != "sidecar":
            continue
        mesh = note.get("mesh") or "mesh"
        for ip, text in ((note.get("app"), f"{mesh} sidecar"), (note.get("via"), "sidecar")):
            lane = lane_of_ip.get(ip) if ip else None
            if lane is not None and text not in lanes[lane].badges:
                lanes[lane].badges.append(text)


def _group_by_node(lanes: list[Lane], rows: list[Row]) -> list[NodeGroup]:
    """Lanes of one node side by side (see the module doc), renumbered in their new order
    with the rows' lane references; no groups unless the lanes span two nodes or more."""
    moved, groups = regroup_lanes(lanes)
    if moved is None:
        return groups
    for row in rows:
        row.src_lane, row.dst_lane = moved[row.src_lane], moved[row.dst_lane]
        if row.nat_lane is not None:
            row.nat_lane = moved[row.nat_lane]
    return groups


def regroup_lanes(lanes: list[Lane]) -> tuple[dict[int, int] | None, list[NodeGroup]]:
    """`_group_by_node` for the lanes alone: reorders and renumbers `lanes` in place and
    returns {old index: new index} (None when nothing moves) and the node groups."""
    if len({lane.node for lane in lanes if lane.node}) < 2:
        return None, []
    units: dict[tuple, list[Lane]] = {}  # in order of first appearance
    for lane in lanes:
        key = ("node", lane.node) if lane.node else ("lane", lane.index)
        units.setdefault(key, []).append(lane)
    order = [lane for unit in units.values() for lane in unit]
    moved = {lane.index: position for position, lane in enumerate(order)}
    for position, lane in enumerate(order):
        lane.index = position
    lanes[:] = order
    return moved, [NodeGroup(key[1], unit[0].index, unit[-1].index)
                   for key, unit in units.items() if key[0] == "node"]


def _phase_groups(rows: list[Row]) -> list[PhaseGroup]:
    """Step 3: per conversation, consecutive rows of one phase kind; a new exchange per request.
    Rows of other conversations may sit between a group's rows (they interleave in time)."""
    groups: list[PhaseGroup] = []
    open_group: dict[object, PhaseGroup] = {}
    for row in rows:
        if row.connection is not None:
            key: object = row.connection
        else:  # DNS over UDP, ICMP: the conversation is the endpoint pair, either direction
            key = (row.src, row.dst) if row.src <= row.dst else (row.dst, row.src)
        kind = PHASE_KIND.get(row.phase, row.phase)
        starts_request = kind == "exchange" and any(b["kind"] == "request" for b in row.badges)
        group = open_group.get(key)
        if group is None or group.phase != kind or (starts_request and group.has_request):
            title = PHASE_TITLE.get(kind, kind)
            if row.connection is not None:
                title = f"connection {row.connection} · {title}"
            group = PhaseGroup(len(groups), row.connection, kind, title,
                               (min(row.src_lane, row.dst_lane), max(row.src_lane, row.dst_lane)),
                               row.index, row.index)
            groups.append(group)
            open_group[key] = group
        if starts_request:
            request = next(b for b in row.badges if b["kind"] == "request")
            if not group.has_request and group.connection is not None:
                group.title = f"connection {group.connection} · {request['text'].split(' on ')[0]}"
            group.has_request = True
        group.last_row = row.index
        group.rows += 1
        low, high = group.lanes
        reached = row.dst_lane if row.nat_lane is None else row.nat_lane
        group.lanes = (min(low, row.src_lane, row.dst_lane, reached),
                       max(high, row.src_lane, row.dst_lane, reached))
        row.group = group.id
    return groups


def _place_lanes(lanes: list[Lane], rows: list[Row], nodes: list[NodeGroup] = ()) -> None:
    """Step 6: each gap between neighbouring lanes fits the widest label that spans it (a label
    spanning k gaps needs 1/k of its width from each); self-arrows need room to the right.
    A node group's box edge gets room of its own, so neighbouring boxes never touch."""
    widest: dict[tuple[int, int], int] = {}
    for row in rows:
        key = (row.src_lane, row.dst_lane) if row.src_lane <= row.dst_lane else (row.dst_lane,
                                                                                 row.src_lane)
        length = len(row.label)
        if length > widest.get(key, -1):
            widest[key] = length
    place_lanes(lanes, widest, nodes)


def place_lanes(lanes: list[Lane], widest: dict[tuple[int, int], int],
                nodes: list[NodeGroup] = ()) -> None:
    """`_place_lanes` given the longest label between each pair of lanes (low, high)."""
    if not lanes:
        return
    gaps = [float(MIN_LANE_GAP)] * len(lanes)
    for (low, high), length in widest.items():
        width = min(length, LABEL_CHARS) * CHAR_WIDTH + 24
        if low == high:
            gaps[low] = max(gaps[low], SELF_LOOP_SPACE + width * 0.6)
            continue
        share = width / (high - low)
        for gap in range(low, high):
            gaps[gap] = max(gaps[gap], share)
    edges = {group.first_lane for group in nodes} | {group.last_lane + 1 for group in nodes}
    x = AXIS_WIDTH + max(90.0, lanes[0].head_width / 2 + 10)
    for number, lane in enumerate(lanes):
        lane.x = round(x, 1)
        following = lanes[number + 1].head_width / 2 if number + 1 < len(lanes) else 0
        boxed = NODE_GAP if number + 1 in edges else 0
        x += max(gaps[lane.index], lane.head_width / 2 + following + 16 + boxed)
    for group in nodes:
        first, last = lanes[group.first_lane], lanes[group.last_lane]
        group.left = round(first.x - first.head_width / 2 - NODE_GAP / 2 + 2, 1)
        group.right = round(last.x + last.head_width / 2 + NODE_GAP / 2 - 2, 1)


def _place_rows(rows: list[Row], phases: list[PhaseGroup], folds: list[FoldGroup],
                gap_seconds: float, collapsed: frozenset = frozenset(),
                head_height: float = LANE_HEAD_HEIGHT) -> tuple[list[Gap], float]:
    """Step 5: y for every visible row, phase headers, fold bands and idle-gap bands."""
    gaps: list[Gap] = []
    y = float(head_height + 16)
    previous_t: float | None = None
    headed: set[int] = set()
    shown_state: dict = {}
    fold_by_id = {group.id: group for group in folds}
    for row in rows:
        fold = fold_by_id.get(row.fold) if row.fold is not None else None
        hidden = fold is not None and fold.collapsed and row.index > fold.shown_last_row
        if hidden:
            if row.index == fold.shown_last_row + 1:
                fold.y, fold.height = y, float(FOLD_BAND)
                y += FOLD_BAND
            previous_t = row.t
            continue
        if previous_t is not None and row.t - previous_t > gap_seconds:
            gaps.append(Gap(row.index, row.t - previous_t, y, float(GAP_BAND)))
            y += GAP_BAND
        previous_t = row.t
        group = phases[row.group] if row.group is not None else None
        if group is not None and group.id not in headed:
            headed.add(group.id)
            group.y_top = y
            y += PHASE_HEADER
            if group.id in collapsed:
                group.y_bottom = y
        if group is not None and group.id in collapsed:
            previous_t = row.t  # a closed phase is its header; its rows take no room
            continue
        row.y = y + ROW_PITCH * 0.6  # the arrow line; its label sits above it
        y += ROW_PITCH + BADGE_LINE * _choose_shown(row, shown_state)
        if group is not None:
            group.y_bottom = y
        if fold is not None and not fold.collapsed and row.index == fold.last_row:
            fold.y, fold.height = fold_y_top(rows, fold), y - fold_y_top(rows, fold)
    return gaps, y + 40


def fold_y_top(rows: list[Row], fold: FoldGroup) -> float:
    return (rows[fold.first_row].y or 0.0) - ROW_PITCH * 0.6


def _choose_shown(row: Row, state: dict) -> int:
    """Which badges are written under the arrow (`shown`; the rest live in the tooltip), one
    line each; returns the line count. A finding on many arrows (a DNAT on every packet of its
    connection) is spelled out once and abbreviated after; a hop chain is written when it
    changes for that sender on that connection."""
    lines = 0
    for found in row.badges:
        kind = found["kind"]
        note = found["annotation"]
        if kind == "hops":
            key = ("hops", row.connection, row.src)
            shown = None if state.get(key) == found["text"] else f"via {found['text']}"
            state[key] = found["text"]
        elif note is not None and kind in ("dnat", "snat") and ("note", note) in state:
            shown = None  # the arrow still carries the badge kind; the SVG marks it briefly
        else:
            shown = found["text"]
            if note is not None:
                state[("note", note)] = True
        found["shown"] = shown
        lines += shown is not None
    return lines


def content_right(lanes: list[Lane], rows: list[Row]) -> float:
    """The right edge of what the rows write: badge lines and self-loop labels can reach
    past the last lifeline."""
    right = 0.0
    for row in rows:
        if row.y is None:
            continue
        texts = [b["shown"] for b in row.badges if b.get("shown")]
        if row.src_lane == row.dst_lane:
            longest = max([min(len(row.label), LABEL_CHARS) * CHAR_WIDTH]
                          + [len(t) * CHAR_WIDTH * 0.9 for t in texts])
            right = max(right, lanes[row.src_lane].x + 48 + longest)
        elif texts:
            middle = (lanes[row.src_lane].x + lanes[row.dst_lane].x) / 2
            right = max(right, middle + max(len(t) for t in texts) * CHAR_WIDTH * 0.45)
    return right


def fold_band(lanes: list[Lane], group: FoldGroup) -> tuple[float, float]:
    """Left and right of a fold band: its lanes, widened to fit its text."""
    left, right = lanes[group.lanes[0]].x - 60, lanes[group.lanes[1]].x + 60
    need = len(group.text) * 6.8 + 24
    if right - left < need:
        middle = (left + right) / 2
        left, right = middle - need / 2, middle + need / 2
    if left < AXIS_WIDTH + 4:
        left, right = AXIS_WIDTH + 4, AXIS_WIDTH + 4 + (right - left)
    return round(left, 1), round(right, 1)


def _fold_right(lanes: list[Lane], group: FoldGroup) -> float:
    return fold_band(lanes, group)[1] + 20
