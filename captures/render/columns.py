"""A layout variant in columns: build_layout's steps over typed arrays, for the diagram cache.

Why: build_layout (layout.py) makes a Row object per message, with a dict per badge, and the
diagram cache then turned each into a dict to serialise it: about 75 µs and 700 bytes a row, a
minute and a gigabyte at 1M packets, when the analysis itself takes half that time. Here a row
is a few numbers in `array`s plus ids of interned strings and badge sets, and its JSON text is
written from those directly (as captures.analysis.model.encode_message writes a message).

The same steps in the same order with the same arithmetic as layout.py's module doc. Only the
loops over rows are written again here, over columns; everything per lane, per phase group and
per fold is layout.py's own (Lane, PhaseGroup, Gap, regroup_lanes, place_lanes, fold_band,
badges.py's words, folds.fold_groups, rowindex.pack_index). tests/render/test_columns.py checks
that the files written from these columns are byte for byte those written from build_layout's
Layout (the path every export takes) for the corpus, folded or not, with folds opened and
phases closed, for the owner and a redacted view.

A message this does not expect (an id that is not an int, a negative connection, a time that
is not a number) raises `Unusual`: the caller then lays it out with build_layout instead.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable

from captures.analysis.records import split_endpoint

from .badges import ConnectionIndex, annotation_badge, badge, hop_chain, lost_here, request_badge
from .folds import VARYING_BADGES, FoldGroup, fold_groups
from .layout import (
    BADGE_LINE,
    CHAR_WIDTH,
    FOLD_BAND,
    GAP_BAND,
    LABEL_CHARS,
    LANE_HEAD_HEIGHT,
    NODE_HEAD_HEIGHT,
    PHASE_HEADER,
    PHASE_KIND,
    PHASE_TITLE,
    ROW_PITCH,
    Gap,
    Lane,
    LaneTable,
    Layout,
    PhaseGroup,
    _lost_copy,
    _mark_sidecar_lanes,
    _redirected,
    place_lanes,
    regroup_lanes,
    width_and_bands,
)
from .rowindex import CONDITIONAL, fold_forms, pack_index

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
NONE = -1  # "null" in an int column (connection, fold, nat lane, length, place)
NO_SHOWN = 0xFFFFFFFF  # a row never placed: its badges have no `shown` at all
STYLES = ("send", "reply", "rst", "retransmission")
STYLE_JSON = tuple(_encode(style) for style in STYLES)
SEND, REPLY, RST, RETRANSMISSION = range(4)
HOP_KEYS = ("interface", "direction", "src", "dst", "t")


class Unusual(Exception):
    """A message the columns cannot hold as build_layout would read it."""


class _RowOf:
    """ConnectionIndex.row_of (message id -> row) without a dict of a million entries when
    message ids are the row numbers, as the analysis writes them."""

    def __init__(self, ids: array) -> None:
        self.ids = ids
        self.identity = all(ids[i] == i for i in range(len(ids)))
        self.found: dict[int, int] | None = None

    def _map(self) -> dict[int, int]:
        if self.found is None:
            self.found = {}
            for row, ident in enumerate(self.ids):
                self.found[ident] = row
        return self.found

    def __contains__(self, ident) -> bool:
        if self.identity:
            return type(ident) is int and 0 <= ident < len(self.ids)
        return ident in self._map()

    def __getitem__(self, ident) -> int:
        return ident if self.identity else self._map()[ident]


class _Badges:
    """Interned badges (kind, text, detail, annotation) and sets of them (a row's badges)."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}
        self.items: list[tuple] = []
        self.set_ids: dict[tuple, int] = {(): 0}
        self.sets: list[tuple] = [()]

    def add(self, found: dict) -> int:
        key = (found["kind"], found["text"], found["detail"], found["annotation"])
        number = self.ids.get(key)
        if number is None:
            number = self.ids[key] = len(self.items)
            self.items.append(key)
        return number

    def with_(self, set_id: int, badge_id: int) -> int:
        key = (*self.sets[set_id], badge_id)
        number = self.set_ids.get(key)
        if number is None:
            number = self.set_ids[key] = len(self.sets)
            self.sets.append(key)
        return number


class ColumnLayout:
    """What build_layout returns, with the rows in columns. `head_parts()`, `rows_text()` and
    `index_bytes()` give what the diagram cache writes (captures.jobs.diagram_cache)."""

    def __init__(self) -> None:
        self.n = 0
        self.ident = array("q")
        self.t = array("d")
        self.src, self.dst = array("i"), array("i")  # string ids
        self.src_lane, self.dst_lane, self.nat = array("i"), array("i"), array("i")
        self.label, self.proto, self.flags, self.phase = (array("i"), array("i"), array("i"),
                                                          array("i"))
        self.conn = array("q")
        self.frame_file, self.frame_number = array("q"), array("q")
        self.odd_frame: dict[int, str] = {}  # JSON text of a frame that is not [file, number]
        self.hops = array("i")  # id of the row's interface names (`names`)
        self.style = array("B")
        self.badge_set = array("i")
        self.group, self.fold = array("i"), array("i")
        self.y = array("d")
        self.shown = array("I")
        self.many_shown: dict[int, tuple] = {}  # rows with more badges than `shown` has bits
        self.length = array("q")
        self.place = array("i")  # id of the one hop's (interface, direction), or NONE
        self.hop_detail: dict[int, str] = {}  # JSON text of the hops when not one plain hop
        self.strings: list = []  # src, dst, label, proto, flags, phase values by id
        self.names: list[tuple] = []
        self.places: list[tuple] = []
        self.badges = _Badges()
        self._texts: tuple | None = None

    # -- the head ----------------------------------------------------------------------------

    def as_layout(self) -> Layout:
        """A Layout without rows: head_dict() as build_layout's would give it."""
        return Layout(self.capture, self.lanes, [], self.phases, self.folds, self.gaps,
                      self.folded, self.width, self.height, self.participants, self.connections,
                      [], [], self.annotations, self.options, self.nodes, self.head_height)

    def ys(self, start: int, end: int) -> list:
        return [None if y != y else y for y in self.y[start:end]]

    def message_ids(self) -> array | None:
        """Each row's message id, or None when they are the row numbers."""
        return None if self._row_of.identity else self.ident

    # -- the rows ----------------------------------------------------------------------------

    def rows_text(self, start: int, end: int) -> str:
        """Rows start..end-1 as JSON, comma-separated: what `Row.to_dict()` gives, plus the
        message's `len` and `hop_detail` (its hops) that the row chunks carry."""
        if self._texts is None:  # the JSON of each interned value, made once for all chunks
            self._texts = (
                [_encode(value) for value in self.strings],
                [_encode(list(found)) for found in self.names],
                [f'[{{"interface":{_encode(i)},"direction":{_encode(d)},"src":'
                 for i, d in self.places],
                [_encode({"kind": k, "text": t, "detail": d, "annotation": a})[:-1]
                 for k, t, d, a in self.badges.items],
                {})
        strings, names, places, badge_json, shown_text = self._texts
        sets = self.badges.sets
        ident, t_col = self.ident, self.t
        src, dst, src_lane, dst_lane, nat = (self.src, self.dst, self.src_lane, self.dst_lane,
                                             self.nat)
        label, proto, flags, phase, conn = (self.label, self.proto, self.flags, self.phase,
                                            self.conn)
        frame_file, frame_number, odd_frame = self.frame_file, self.frame_number, self.odd_frame
        hops, style, badge_set, group, fold, ys = (self.hops, self.style, self.badge_set,
                                                   self.group, self.fold, self.y)
        shown, length, place, hop_detail = self.shown, self.length, self.place, self.hop_detail
        items = self.badges.items
        out = []
        for i in range(start, end):
            t_text = repr(t_col[i])
            c = conn[i]
            f = fold[i]
            y = ys[i]
            n = nat[i]
            ln = length[i]
            s = badge_set[i]
            if s:
                mask = shown[i]
                badges_text = shown_text.get((s, mask))
                if badges_text is None:
                    badges_text = "[" + ",".join(
                        badge_json[b] + (
                            "}" if mask == NO_SHOWN
                            else ',"shown":' + _encode(_shown_of(items[b], mask, k, i,
                                                                 self.many_shown)) + "}")
                        for k, b in enumerate(sets[s])) + "]"
                    if i not in self.many_shown:
                        shown_text[(s, mask)] = badges_text
            else:
                badges_text = "[]"
            p = place[i]
            if p != NONE:
                detail = (places[p] + strings[src[i]] + ',"dst":' + strings[dst[i]] + ',"t":'
                          + t_text + "}]")
            else:
                detail = hop_detail.get(i, "[]")
            frame = (odd_frame[i] if frame_file[i] == NONE and i in odd_frame
                     else f"[{frame_file[i]},{frame_number[i]}]")
            out.append(
                f'{{"index":{i},"message":{ident[i]},"t":{t_text},"src":{strings[src[i]]},'
                f'"dst":{strings[dst[i]]},"from":{src_lane[i]},"to":{dst_lane[i]},'
                f'"label":{strings[label[i]]},"proto":{strings[proto[i]]},'
                f'"flags":{strings[flags[i]]},"connection":{"null" if c == NONE else c},'
                f'"phase":{strings[phase[i]]},"frame":{frame},"hops":{names[hops[i]]},'
                f'"style":{STYLE_JSON[style[i]]},"badges":{badges_text},"group":{group[i]},'
                f'"fold":{"null" if f == NONE else f},"y":{"null" if y != y else repr(y)},'
                f'"nat_to":{"null" if n == NONE else n},"len":{"null" if ln < 0 else ln},'
                f'"hop_detail":{detail}}}')
        return ",".join(out)

    # -- the row index -----------------------------------------------------------------------

    def index_bytes(self) -> bytes:
        """captures.render.rowindex.layout_index's file, from the columns."""
        n = self.n
        items, sets = self.badges.items, self.badges.sets
        used = set(self.badge_set)
        nat_notes = {items[b][3] for s in used for b in sets[s]
                     if items[b][0] in CONDITIONAL and items[b][3] is not None}
        fixed, fixed_len = array("B", bytes(n)), array("H", bytes(2 * n))
        label_len = array("H", [min(len(text), LABEL_CHARS) if isinstance(text, str) else 0
                                for text in self.strings])
        label_len = array("H", [label_len[i] for i in self.label])
        tok_start = array("I", [0]) * (n + 1)
        tok_kind, tok_key, tok_val, tok_len = array("B"), array("i"), array("i"), array("H")
        keys: dict[tuple, int] = {}
        texts: dict[str, int] = {}
        # Per badge set: fixed, longest, and its tokens (a hop chain's key is the row's).
        plans: dict[int, tuple] = {}
        for s in used:
            always, longest, tokens = 0, 0, []
            for b in sets[s]:
                kind, text, _detail, note = items[b]
                if kind == "hops":
                    tokens.append((0, None, text, min(len(text) + 4, 65535)))
                    continue
                if note is not None and kind in CONDITIONAL:
                    tokens.append((1, note, 0, min(len(text), 65535)))
                    continue
                always += 1
                longest = max(longest, len(text))
                if note is not None and note in nat_notes:
                    tokens.append((2, note, 0, 0))
            plans[s] = (min(always, 255), min(longest, 65535), tokens)
        badge_set, conn, src = self.badge_set, self.conn, self.src
        count = 0
        for i in range(n):
            s = badge_set[i]
            if s:
                fixed[i], fixed_len[i], tokens = plans[s]
                for kind, key, value, length in tokens:
                    if kind == 0:
                        c = conn[i]
                        key = keys.setdefault((None if c == NONE else c, src[i]), len(keys))
                        value = texts.setdefault(value, len(texts))
                    tok_kind.append(kind)
                    tok_key.append(key)
                    tok_val.append(value)
                    tok_len.append(length)
                count = len(tok_kind)
            tok_start[i + 1] = count
        arrays = {"t": self.t, "fold": self.fold, "group": self.group,
                  "conn": array("i", self.conn), "src": self.src_lane, "dst": self.dst_lane,
                  "nat": self.nat, "fixed": fixed, "fixed_len": fixed_len,
                  "label_len": label_len, "tok_start": tok_start, "tok_kind": tok_kind,
                  "tok_key": tok_key, "tok_val": tok_val, "tok_len": tok_len}
        return pack_index(arrays, n, len(keys), len(self.annotations),
                          self.options["gap_seconds"], fold_forms(self.lanes, self.folds))


def _shown_of(item: tuple, mask: int, k: int, row: int, many: dict):
    """What `_choose_shown` wrote for badge k of a row: None, its text, or "via " + a chain."""
    if row in many:
        return many[row][k]
    if not mask >> k & 1:
        return None
    return f"via {item[1]}" if item[0] == "hops" else item[1]


def lay_out_columns(head: dict, messages: Iterable[dict], *, fold: bool = True,
                    gap_seconds: float = 1.0, max_period: int = 16, min_repeats: int = 3,
                    expand=(), collapse=()) -> ColumnLayout:
    """build_layout(`head` with `messages`, ...) in columns; see the module doc."""
    out = ColumnLayout()
    capture = head.get("capture") or {}
    participants = head.get("participants") or []
    connections = head.get("connections") or []
    http = head.get("http") or []
    annotations = head.get("annotations") or []
    table = LaneTable(participants)
    lanes, lane_of_ip, lane_of_endpoint = table.lanes, table.of_ip, table.of_endpoint
    lane_for = table.lane_for

    # 1-2. Lanes and rows, one pass over the messages.
    client_of = {c["id"]: c.get("client") for c in connections}
    redirected = _redirected(annotations)
    several_files = len(capture.get("files") or ()) > 1
    index = ConnectionIndex()
    first, last, first_tls = index.first, index.last, index.first_tls
    request_rows, resets, retransmissions = (index.request_rows, index.resets,
                                             index.retransmissions)
    nxdomain_rows, query_rows = index.nxdomain_rows, index.query_rows
    strings, string_id = out.strings, {}
    # Per label id: (retransmission?, a reply when no connection says, ("NXDOMAIN"|"query",
    # name) or None)
    label_info: dict[int, tuple] = {}
    names, name_id = out.names, {}
    places, place_id = out.places, {}
    badges = out.badges
    note_badges: dict[int, int] = {}
    chain_badges: dict[tuple, int] = {}
    referenced: set[int] = set()
    ident_col, t_col = out.ident, out.t
    src_col, dst_col, src_lanes, dst_lanes = out.src, out.dst, out.src_lane, out.dst_lane
    label_col, proto_col, flags_col, phase_col = out.label, out.proto, out.flags, out.phase
    conn_col, frame_file, frame_number, odd_frame = (out.conn, out.frame_file, out.frame_number,
                                                     out.odd_frame)
    hops_col, style_col, set_col = out.hops, out.style, out.badge_set
    length_col, place_col, hop_detail = out.length, out.place, out.hop_detail
    n_notes = len(annotations)

    def intern(value) -> int:
        number = string_id.get(value)
        if number is None:
            number = string_id[value] = len(strings)
            strings.append(value)
        return number

    def label_id(value) -> int:
        number = string_id.get(value)
        if number is None:
            number = intern(value)
        text = value if isinstance(value, str) else ""
        dns = None
        if text.startswith("DNS "):
            words = text.split(" ")
            if words[1] in ("NXDOMAIN", "query"):
                dns = (words[1], words[-1])
        label_info[number] = (text.endswith("(retransmission)"),
                              text.startswith("DNS ") and not text.startswith("DNS query"), dns)
        return number

    i = 0
    for message in messages:
        ident = message["id"]
        if type(ident) is not int:
            raise Unusual("message id")
        t = message["t"]
        if type(t) is not float:
            raise Unusual("message time")  # an int would be written as one: 0, not 0.0
        src, dst = message["src"], message["dst"]
        connection = message.get("connection")
        if connection is not None and (type(connection) is not int or connection < 0
                                       or connection >= 1 << 31):
            raise Unusual("connection")
        redirect = redirected.get(connection) if redirected else None
        if redirect is None:
            src_lane = lane_of_endpoint.get(src)
            if src_lane is None:
                src_lane = lane_for(src)
            dst_lane = lane_of_endpoint.get(dst)
            if dst_lane is None:
                dst_lane = lane_for(dst)
        else:
            meant, sidecar = redirect
            src_lane = lane_for(sidecar if src == meant else src)
            dst_lane = lane_for(sidecar if dst == meant else dst)
        ident_col.append(ident)
        t_col.append(t)
        sid = string_id.get(src)
        src_col.append(intern(src) if sid is None else sid)
        did = string_id.get(dst)
        dst_col.append(intern(dst) if did is None else did)
        src_lanes.append(src_lane)
        dst_lanes.append(dst_lane)
        label = message.get("label") or ""
        lid = string_id.get(label)
        info = label_info.get(lid) if lid is not None else None
        if info is None:
            lid = label_id(label)
            info = label_info[lid]
        label_col.append(lid)
        proto = message.get("proto") or ""
        number = string_id.get(proto)
        proto_col.append(intern(proto) if number is None else number)
        flags = message.get("flags")
        number = string_id.get(flags)
        flags_col.append(intern(flags) if number is None else number)
        phase = message.get("phase") or "other"
        number = string_id.get(phase)
        phase_col.append(intern(phase) if number is None else number)
        conn_col.append(NONE if connection is None else connection)
        frame = message.get("frame")
        if (type(frame) is list and len(frame) == 2 and type(frame[0]) is int
                and type(frame[1]) is int and frame[0] >= 0):
            frame_file.append(frame[0])
            frame_number.append(frame[1])
        else:
            frame_file.append(NONE)
            frame_number.append(0)
            odd_frame[i] = _encode(frame)
        # Hops: the interface names, the detail (usually one plain hop: its place) and, when
        # seen at several places, the chain's badge.
        seen = message.get("hops") or []
        if len(seen) == 1:
            hop = seen[0]
            key = (hop.get("interface") or "?",)
        else:
            hop = None
            key = tuple(h.get("interface") or "?" for h in seen)
        number = name_id.get(key)
        if number is None:
            number = name_id[key] = len(names)
            names.append(key)
        hops_col.append(number)
        if (hop is not None and tuple(hop) == HOP_KEYS and hop["src"] == src
                and hop["dst"] == dst and hop["t"] == t):
            where = (hop["interface"], hop["direction"])
            number = place_id.get(where)
            if number is None:
                number = place_id[where] = len(places)
                places.append(where)
            place_col.append(number)
        else:
            place_col.append(NONE)
            if seen:
                hop_detail[i] = _encode(seen)
        length = message.get("len")
        length_col.append(length if isinstance(length, int) and length >= 0 else -1)
        # The style (layout._style).
        retransmitted, dns_reply, dns = info
        if "R" in (flags or ""):
            style_col.append(RST)
        elif retransmitted:
            style_col.append(RETRANSMISSION)
        else:
            client = client_of.get(connection)
            if client is not None:
                style_col.append(SEND if src == client else REPLY)
            else:
                style_col.append(REPLY if dns_reply else SEND)
        # Badges: the message's findings, then its hop chain.
        found = 0
        notes = message.get("annotations")
        if notes:
            for note_index in notes:
                if 0 <= note_index < n_notes:
                    number = note_badges.get(note_index)
                    if number is None:
                        number = note_badges[note_index] = badges.add(
                            annotation_badge(note_index, annotations[note_index]))
                    found = badges.with_(found, number)
                    referenced.add(note_index)
        if len(seen) > 1:
            key = tuple((h.get("interface"), h.get("tunnel"),
                         (h.get("underlay") or {}).get("name")) for h in seen)
            number = chain_badges.get(key)
            if number is None:
                number = chain_badges[key] = badges.add(
                    badge("hops", hop_chain(seen, several_files)))
            found = badges.with_(found, number)
        set_col.append(found)
        # What ConnectionIndex.see gathers.
        if connection is not None:
            if connection not in first:
                first[connection] = i
            last[connection] = i
            if phase == "tls":
                if connection not in first_tls:
                    first_tls[connection] = i
            elif phase == "request":
                request_rows.setdefault(connection, []).append((t, i))
            if "R" in (flags or ""):
                resets.setdefault(connection, []).append(i)
            if retransmitted:
                retransmissions.setdefault(connection, []).append(i)
        if dns is not None:
            (nxdomain_rows if dns[0] == "NXDOMAIN" else query_rows).setdefault(
                dns[1], []).append(i)
        i += 1
    n = out.n = i
    out._row_of = index.row_of = _RowOf(ident_col)  # type: ignore[assignment]
    meant_ips = {split_endpoint(original)[0] for original, _sidecar in redirected.values()}
    for participant in participants:
        if participant["ip"] not in lane_of_ip and participant["ip"] not in meant_ips:
            lane_for(participant["ip"])

    # _attach_findings.
    if n >= 200_000:
        referenced = set()  # as build_layout: past 200k rows it does not look
    seen_names: dict[tuple[str, str], int] = {}
    for note_index, note in enumerate(annotations):
        if note_index in referenced:
            continue
        for row in index.rows_for(note, seen_names):
            found = annotation_badge(note_index, note)
            if note.get("kind") == "rst":
                found["text"] = f"RST by {strings[src_col[row]]}"
            elif ident_col[row] == _lost_copy(note).get("message"):
                found["text"] = lost_here(_lost_copy(note))
            set_col[row] = badges.with_(set_col[row], badges.add(found))
    for request in http:
        row = index.request_row(request)
        if row is not None:
            set_col[row] = badges.with_(set_col[row], badges.add(request_badge(request)))

    # _follow_dnat.
    nat_col = out.nat
    nat_col.extend(array("i", [NONE]) * n)
    items, sets = badges.items, badges.sets
    dnat_of = {s: [items[b][3] for b in sets[s] if items[b][0] == "dnat"
                   and items[b][3] is not None] for s in range(len(sets))}
    for row in range(n):
        s = set_col[row]
        if s and dnat_of[s]:
            for note_index in dnat_of[s]:
                note = annotations[note_index]
                if strings[dst_col[row]] == note.get("before"):
                    lane = lane_of_ip.get(split_endpoint(note.get("after") or "")[0])
                    if lane is not None and lane != dst_lanes[row]:
                        nat_col[row] = lane
    _mark_sidecar_lanes(lanes, lane_of_ip, annotations)
    moved, nodes = regroup_lanes(lanes)
    if moved is not None:
        order = array("i", [moved[number] for number in range(len(moved))])
        for col in (src_lanes, dst_lanes):
            for row in range(n):
                col[row] = order[col[row]]
        for row in range(n):
            if nat_col[row] != NONE:
                nat_col[row] = order[nat_col[row]]
    head_height = LANE_HEAD_HEIGHT + (NODE_HEAD_HEIGHT if nodes else 0)

    # 3. Phase groups (layout._phase_groups).
    request_title: dict[int, str | None] = {}
    for s in range(len(sets)):
        request_title[s] = next((items[b][1].split(" on ")[0] for b in sets[s]
                                 if items[b][0] == "request"), None)
    phase_kind = [PHASE_KIND.get(value, value) for value in strings]
    phases: list[PhaseGroup] = []
    open_group: dict = {}
    pair_key: dict[tuple[int, int], tuple[int, int]] = {}
    group_col = out.group
    group_col.extend(array("i", bytes(4 * n)))
    for row, (c, sid, did, phid, s, sl, dl, nat) in enumerate(zip(
            conn_col, src_col, dst_col, phase_col, set_col, src_lanes, dst_lanes, nat_col,
            strict=True)):
        if c != NONE:
            key = c
        else:
            pair = (sid, did)
            key = pair_key.get(pair)
            if key is None:
                a, b = pair
                key = pair_key[pair] = pair if strings[a] <= strings[b] else (b, a)
        kind = phase_kind[phid]
        title = request_title[s] if s and kind == "exchange" else None
        group = open_group.get(key)
        if group is None or group.phase != kind or (title is not None and group.has_request):
            words = PHASE_TITLE.get(kind, kind)
            if c != NONE:
                words = f"connection {c} · {words}"
            group = PhaseGroup(len(phases), None if c == NONE else c, kind, words,
                               (min(sl, dl), max(sl, dl)), row, row)
            phases.append(group)
            open_group[key] = group
        if title is not None:
            if not group.has_request and group.connection is not None:
                group.title = f"connection {group.connection} · {title}"
            group.has_request = True
        group.last_row = row
        group.rows += 1
        low, high = group.lanes
        reached = dl if nat == NONE else nat
        if sl < low or dl < low or reached < low or sl > high or dl > high or reached > high:
            group.lanes = (min(low, sl, dl, reached), max(high, sl, dl, reached))
        group_col[row] = group.id

    # 4. Fold groups, and the longest label between two lanes for step 6.
    kinds_of = {s: tuple(sorted(items[b][0] for b in sets[s]
                                if items[b][0] not in VARYING_BADGES)) for s in range(len(sets))}
    signatures: dict[tuple, int] = {}
    signature = array("i", bytes(4 * n))
    widest: dict[tuple[int, int], int] = {}
    label_length = [len(value) if isinstance(value, str) else 0 for value in strings]
    for row, (sid, did, lid, phid, style, s, sl, dl) in enumerate(zip(
            src_col, dst_col, label_col, phase_col, style_col, set_col, src_lanes, dst_lanes,
            strict=True)):
        key = (sid, did, lid, phid, style, kinds_of[s])
        number = signatures.get(key)
        if number is None:
            number = signatures[key] = len(signatures)
        signature[row] = number
        pair = (sl, dl) if sl <= dl else (dl, sl)
        length = label_length[lid]
        if length > widest.get(pair, -1):
            widest[pair] = length
    del signatures
    ack = bytearray(len(strings))
    if "ACK" in string_id:
        ack[string_id["ACK"]] = 1
    folds = fold_groups(signature, group_col, [ack[label] for label in label_col], phase_col,
                        conn_col, t_col, src_lanes, dst_lanes, max_period, min_repeats)
    del signature
    fold_col = out.fold
    fold_col.extend(array("i", [NONE]) * n)
    for found in folds:
        fold_col[found.first_row:found.last_row + 1] = array(
            "i", [found.id]) * (found.last_row + 1 - found.first_row)
    if fold:
        for found in folds:
            found.collapsed = found.id not in expand

    # 6. Lane x positions (before 5, as build_layout does).
    place_lanes(lanes, widest, nodes)

    # 5. Vertical positions (layout._place_rows, _choose_shown).
    gaps, height = _place_rows(out, phases, folds, gap_seconds, frozenset(collapse),
                               head_height)
    width = width_and_bands(lanes, folds, _content_right(out, lanes))
    out.capture, out.participants, out.connections = capture, participants, connections
    out.annotations, out.lanes, out.nodes, out.phases = annotations, lanes, nodes, phases
    out.folds, out.gaps, out.folded, out.width, out.height = folds, gaps, fold, width, height
    out.head_height = head_height
    out.options = {"fold": fold, "gap_seconds": gap_seconds, "max_period": max_period,
                   "min_repeats": min_repeats}
    return out


def _place_rows(out: ColumnLayout, phases: list[PhaseGroup], folds: list[FoldGroup],
                gap_seconds: float, collapsed: frozenset, head_height: float):
    """layout._place_rows over the columns: each visible row's y and its badges' `shown`."""
    n = out.n
    ys = out.y
    ys.extend(array("d", [float("nan")]) * n)
    shown_col = out.shown
    shown_col.extend(array("I", [NO_SHOWN]) * n)
    items, sets = out.badges.items, out.badges.sets
    t_col, fold_col, group_col, set_col = out.t, out.fold, out.group, out.badge_set
    conn_col, src_col = out.conn, out.src
    gaps: list[Gap] = []
    y = float(head_height + 16)
    previous_t = None
    headed = bytearray(len(phases))
    closed = bytearray(len(phases))
    for number in collapsed:
        if isinstance(number, int) and 0 <= number < len(phases):
            closed[number] = 1
    state: dict = {}
    for row in range(n):
        t = t_col[row]
        f = fold_col[row]
        found = folds[f] if f != NONE else None
        if found is not None and found.collapsed and row > found.shown_last_row:
            if row == found.shown_last_row + 1:
                found.y, found.height = y, float(FOLD_BAND)
                y += FOLD_BAND
            previous_t = t
            continue
        if previous_t is not None and t - previous_t > gap_seconds:
            gaps.append(Gap(row, t - previous_t, y, float(GAP_BAND)))
            y += GAP_BAND
        previous_t = t
        g = group_col[row]
        group = phases[g]
        if not headed[g]:
            headed[g] = 1
            group.y_top = y
            y += PHASE_HEADER
            if closed[g]:
                group.y_bottom = y
        if closed[g]:
            continue
        ys[row] = y + ROW_PITCH * 0.6
        s = set_col[row]
        lines = 0
        if s:
            # _choose_shown: which badges are written under the arrow.
            mask = 0
            values = []
            for k, b in enumerate(sets[s]):
                kind, text, _detail, note = items[b]
                if kind == "hops":
                    c = conn_col[row]
                    key = ("hops", None if c == NONE else c, src_col[row])
                    shown = None if state.get(key) == text else f"via {text}"
                    state[key] = text
                elif note is not None and kind in ("dnat", "snat") and ("note", note) in state:
                    shown = None
                else:
                    shown = text
                    if note is not None:
                        state[("note", note)] = True
                if shown is not None:
                    lines += 1
                    mask |= 1 << k
                values.append(shown)
            if len(values) > 31:
                out.many_shown[row] = tuple(values)
                mask = 0
            shown_col[row] = mask
        y += ROW_PITCH + BADGE_LINE * lines
        group.y_bottom = y
        if found is not None and not found.collapsed and row == found.last_row:
            first = ys[found.first_row]
            top = (first if first == first and first else 0.0) - ROW_PITCH * 0.6
            found.y, found.height = top, y - top
    return gaps, y + 40


def _content_right(out: ColumnLayout, lanes: list[Lane]) -> float:
    """layout.content_right over the columns."""
    right = 0.0
    items, sets = out.badges.items, out.badges.sets
    ys, set_col, shown_col = out.y, out.badge_set, out.shown
    src_lanes, dst_lanes, label_col, strings = out.src_lane, out.dst_lane, out.label, out.strings
    for row, (y, s, sl, dl) in enumerate(zip(ys, set_col, src_lanes, dst_lanes, strict=True)):
        if y != y or (sl != dl and not s):
            continue
        texts = []
        if s:
            mask = shown_col[row]
            for k, b in enumerate(sets[s]):
                shown = _shown_of(items[b], mask, k, row, out.many_shown)
                if shown:
                    texts.append(shown)
        if sl == dl:
            longest = max([min(len(strings[label_col[row]]), LABEL_CHARS) * CHAR_WIDTH]
                          + [len(t) * CHAR_WIDTH * 0.9 for t in texts])
            right = max(right, lanes[sl].x + 48 + longest)
        elif texts:
            middle = (lanes[sl].x + lanes[dl].x) / 2
            right = max(right, middle + max(len(t) for t in texts) * CHAR_WIDTH * 0.45)
    return right
