"""Repeated patterns folded into one group with a count, so 1,000 keep-alive requests on one
connection read as one request/response and "repeated 1000×".

Two passes, both greedy left to right, both over interned signatures (ints compare fast):
1. Exchanges: a unit is a run of consecutive rows of one phase group (usually one request and
   its response). Units repeat when they have the same phase, connection and messages, not
   counting bare ACKs: real keep-alive traffic acknowledges at slightly different moments from
   one request to the next, which is noise to a reader of the diagram.
2. Rows: among the rows the first pass left alone, a block of 1..max_period rows repeated
   exactly (ACKs included): bulk data segments, pings, keepalive probes.
A fold needs at least `min_repeats` repetitions. The first repetition stays drawn; the others
are hidden when the layout is folded (every row stays in the layout and names its fold).
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_HIDDEN = 3
# Badge kinds that differ from one repetition to the next without making it another pattern.
VARYING_BADGES = frozenset({"request", "pooled"})


@dataclass(slots=True)
class FoldGroup:
    id: int
    first_row: int
    shown_last_row: int  # the last row of the first repetition, the one drawn
    last_row: int
    count: int
    unit: str  # "exchange" (pass 1) or "rows" (pass 2)
    t_first: float
    t_last: float
    lanes: tuple[int, int]
    collapsed: bool = False
    y: float | None = None
    height: float = 0.0
    band: tuple[float, float] | None = None  # left and right of the drawn band

    @property
    def text(self) -> str:
        span = f"{self.t_first * 1000:.3f}–{self.t_last * 1000:.3f} ms"
        shown = self.shown_last_row - self.first_row + 1
        what = ("exchange" if self.unit == "exchange"
                else "message" if shown == 1 else f"{shown} messages")
        more = f", {self.count - 1} more not drawn" if self.collapsed else ""
        return f"↻ {what} repeated {self.count}×{more} ({span})"

    def to_dict(self) -> dict:
        return {"id": self.id, "first_row": self.first_row, "shown_last_row": self.shown_last_row,
                "last_row": self.last_row, "count": self.count, "unit": self.unit,
                "t_first": self.t_first, "t_last": self.t_last, "lanes": list(self.lanes),
                "collapsed": self.collapsed, "text": self.text, "y": self.y,
                "height": self.height, "band": list(self.band) if self.band else None}


def find_folds(rows, max_period: int = 16, min_repeats: int = 3) -> list[FoldGroup]:
    """Fold groups over `rows` (layout Rows with `group` set); sets each member's `fold`."""
    interned: dict[tuple, int] = {}
    signature = [
        interned.setdefault(
            (row.src, row.dst, row.label, row.phase, row.style,
             tuple(sorted(b["kind"] for b in row.badges if b["kind"] not in VARYING_BADGES))),
            len(interned))
        for row in rows
    ]
    folds = fold_groups(signature, [row.group for row in rows],
                        [row.label == "ACK" for row in rows], [row.phase for row in rows],
                        [row.connection for row in rows], [row.t for row in rows],
                        [row.src_lane for row in rows], [row.dst_lane for row in rows],
                        max_period, min_repeats)
    for group in folds:
        for row in rows[group.first_row:group.last_row + 1]:
            row.fold = group.id
    return folds


def fold_groups(signature, group, ack, phase, connection, t, src_lane, dst_lane,
                max_period: int = 16, min_repeats: int = 3) -> list[FoldGroup]:
    """The fold groups of rows given a column each (any sequences indexed by row): `signature`
    (equal when two rows read the same), phase `group`, whether the row is a bare `ack`, its
    `phase` and `connection` (compared only for equality), time `t`, and its two lanes.
    Numbered in row order; the groups never overlap. find_folds (layout Rows) and
    captures.render.columns (the diagram cache's columns) both call this."""
    n = len(signature)
    interned: dict[tuple, int] = {}
    folds: list[FoldGroup] = []

    # 1. Exchanges.
    units: list[tuple[int, int]] = []  # (first row, last row) of each run of one group
    unit_signature: list[int] = []
    start = 0
    for i in range(1, n + 1):
        if i == n or group[i] != group[start]:
            content = tuple(signature[r] for r in range(start, i) if not ack[r])
            unit_signature.append(interned.setdefault(
                ("unit", phase[start], connection[start], content), len(interned)))
            units.append((start, i - 1))
            start = i
    for first, period, count in _runs(unit_signature, 0, len(units), 4, min_repeats):
        _add(folds, t, src_lane, dst_lane, units[first][0], units[first + period - 1][1],
             units[first + period * count - 1][1], count, "exchange")

    # 2. Rows, within each stretch the first pass left unfolded.
    folded = bytearray(n)
    for found in folds:
        folded[found.first_row:found.last_row + 1] = b"\x01" * (found.last_row + 1
                                                                - found.first_row)
    start = 0
    while start < n:
        if folded[start]:
            start += 1
            continue
        end = start
        while end < n and not folded[end]:
            end += 1
        for first, period, count in _runs(signature, start, end, max_period, min_repeats):
            _add(folds, t, src_lane, dst_lane, first, first + period - 1,
                 first + period * count - 1, count, "rows")
        start = end
    folds.sort(key=lambda found: found.first_row)
    for number, found in enumerate(folds):
        found.id = number
    return folds


def _add(folds, t, src_lane, dst_lane, first, shown_last, last, count, unit) -> None:
    sources, targets = src_lane[first:last + 1], dst_lane[first:last + 1]
    lanes = (min(min(sources), min(targets)), max(max(sources), max(targets)))
    folds.append(FoldGroup(len(folds), first, shown_last, last, count, unit, t[first], t[last],
                           lanes))


def _runs(signature: list[int], start: int, end: int, max_period: int, min_repeats: int):
    """Greedy: at each position, the period whose repetitions cover the most items."""
    # A period can repeat only where the item recurs that far on: each item's next
    # occurrence, so that only those periods are tried (in increasing order, as they were
    # when every period from 1 was compared).
    following = [end] * (end - start)
    seen: dict[int, int] = {}
    for at in range(end - 1, start - 1, -1):
        item = signature[at]
        following[at - start] = seen.get(item, end)
        seen[item] = at
    del seen
    i = start
    while i < end:
        best, best_cover = None, 0
        at = following[i - start]
        while at < end:
            period = at - i
            if period > max_period or i + period * min_repeats > end:
                break
            count = _repeats(signature, i, end, period)
            # Worth a band only when it hides more arrows than the band costs.
            if count >= min_repeats and period * (count - 1) >= MIN_HIDDEN \
                    and period * count > best_cover:
                best, best_cover = (period, count), period * count
            at = following[at - start]
        if best is None:
            i += 1
            continue
        yield i, best[0], best[1]
        i += best_cover


def _repeats(signature: list[int], start: int, end: int, period: int) -> int:
    block = signature[start:start + period]
    count = 1
    at = start + period
    while at + period <= end and signature[at] == block[0] and signature[at:at + period] == block:
        count += 1
        at += period
    return count
