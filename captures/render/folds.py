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
    folds: list[FoldGroup] = []

    # 1. Exchanges.
    units: list[tuple[int, int]] = []  # (first row, last row) of each run of one group
    unit_signature: list[int] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i].group != rows[start].group:
            content = tuple(signature[r] for r in range(start, i) if rows[r].label != "ACK")
            unit_signature.append(interned.setdefault(
                ("unit", rows[start].phase, rows[start].connection, content), len(interned)))
            units.append((start, i - 1))
            start = i
    for first, period, count in _runs(unit_signature, 0, len(units), 4, min_repeats):
        _add(folds, rows, units[first][0], units[first + period - 1][1],
             units[first + period * count - 1][1], count, "exchange")

    # 2. Rows, within each stretch the first pass left unfolded.
    folded = [False] * len(rows)
    for group in folds:
        for r in range(group.first_row, group.last_row + 1):
            folded[r] = True
    start = 0
    while start < len(rows):
        if folded[start]:
            start += 1
            continue
        end = start
        while end < len(rows) and not folded[end]:
            end += 1
        for first, period, count in _runs(signature, start, end, max_period, min_repeats):
            _add(folds, rows, first, first + period - 1, first + period * count - 1, count,
                 "rows")
        start = end
    folds.sort(key=lambda group: group.first_row)
    for number, group in enumerate(folds):
        group.id = number
        for row in rows[group.first_row:group.last_row + 1]:
            row.fold = number
    return folds


def _add(folds, rows, first, shown_last, last, count, unit) -> None:
    members = rows[first:last + 1]
    lanes = (min(min(r.src_lane, r.dst_lane) for r in members),
             max(max(r.src_lane, r.dst_lane) for r in members))
    folds.append(FoldGroup(len(folds), first, shown_last, last, count, unit, rows[first].t,
                           rows[last].t, lanes))


def _runs(signature: list[int], start: int, end: int, max_period: int, min_repeats: int):
    """Greedy: at each position, the period whose repetitions cover the most items."""
    i = start
    while i < end:
        best, best_cover = None, 0
        for period in range(1, max_period + 1):
            if i + period * min_repeats > end:
                break
            # Cheap test first: most positions repeat nothing at most periods.
            if signature[i] != signature[i + period]:
                continue
            count = _repeats(signature, i, end, period)
            # Worth a band only when it hides more arrows than the band costs.
            if count >= min_repeats and period * (count - 1) >= MIN_HIDDEN \
                    and period * count > best_cover:
                best, best_cover = (period, count), period * count
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
