// The virtualised diagram: a scroll container as tall as the layout, a sticky header of lane
// heads, and one SVG covering only the rows near the visible window. Everything is placed
// where the layout (captures/render) says; this module only draws and hit-tests.

const SVG_NS = "http://www.w3.org/2000/svg";
const OVERSCAN = 1.0; // screens drawn above and below the visible one, so a scroll rarely redraws
const LABEL_CHARS = 64;

export function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function cut(text, limit = LABEL_CHARS) {
  return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
}

// A time in the unit that reads best; `spacing` (seconds to the nearest other row) adds decimals
// until neighbouring rows differ, so rows microseconds apart past 1 s do not all read "3.003 s".
export function formatT(t, spacing = null) {
  if (t >= 1) return `${t.toFixed(decimals(spacing, 3, 6))} s`;
  return `${(t * 1000).toFixed(decimals(spacing === null ? null : spacing * 1000, 3, 4))} ms`;
}

function decimals(step, least, most) {
  if (!(step > 0)) return least;
  return Math.min(most, Math.max(least, Math.ceil(-Math.log10(step) - 1e-9)));
}

const TOGGLES = "[data-toggle-fold], [data-toggle-phase]";

export class DiagramView {
  constructor(root, handlers) {
    this.root = root;
    this.handlers = handlers; // onSelectRow(index), onPhase(id), onToggleFold(id), onTogglePhase(id)
    this.scroll = root.querySelector(".kd-scroll");
    this.headSvg = root.querySelector(".kd-head svg");
    this.body = root.querySelector(".kd-body");
    this.svg = document.createElementNS(SVG_NS, "svg");
    this.svg.classList.add("kd-window");
    this.body.appendChild(this.svg);
    this.source = null;
    this.selected = -1;
    this.filter = () => true;
    this.notes = new Map(); // "message:12" -> [note]
    this.drawn = { top: 0, bottom: -1 };
    this.pendingFrame = 0;
    this.scroll.addEventListener("scroll", () => this.schedule(false), { passive: true });
    window.addEventListener("resize", () => this.schedule(true));
    this.svg.addEventListener("click", (event) => this.click(event));
    this.svg.setAttribute("role", "group");
    this.svg.setAttribute("aria-label", `arrows of ${root.dataset.name || "the capture"}`);
    // Fold and phase toggles are buttons for the keyboard too. A toggle reloads the layout and
    // redraws the window, so the focus is put back on the same toggle after each redraw.
    this.refocus = null;
    this.svg.addEventListener("keydown", (event) => {
      const toggle = event.target.closest?.(TOGGLES);
      if (!toggle || (event.key !== "Enter" && event.key !== " ")) return;
      event.preventDefault();
      event.stopPropagation(); // not the row keys of the whole diagram (Enter opens an arrow)
      this.click(event);
    });
    document.addEventListener("focusin", (event) => {
      const toggle = this.svg.contains(event.target) ? event.target.closest(TOGGLES) : null;
      this.refocus = toggle ? toggleSelector(toggle) : null;
    });
  }

  setSource(source) {
    this.source = source;
    source.onChunk = () => this.schedule(true);
    const size = source.head.size;
    this.body.style.height = `${size.height}px`;
    this.body.style.width = `${size.width}px`;
    this.drawHead();
    this.schedule(true);
  }

  setFilter(filter) { this.filter = filter; this.schedule(true); }
  setNotes(notes) { this.notes = notes; this.schedule(true); }

  schedule(force) {
    if (force) this.drawn = { top: 0, bottom: -1 };
    if (this.pendingFrame) return;
    this.pendingFrame = requestAnimationFrame(() => { this.pendingFrame = 0; this.render(); });
  }

  drawHead() {
    const head = this.source.head;
    const height = head.size.lane_head_height;
    // Lanes grouped by node (a capture across nodes) have the node headers above them.
    const top = head.size.node_head_height || 0;
    const out = [];
    for (const group of head.nodes || []) {
      out.push(`<g class="kd-node"><rect class="kd-node-band" x="${group.left}" y="1" width="${group.right - group.left}" height="${height + 8}" rx="8"/>` +
        `<text class="kd-node-title" x="${(group.left + group.right) / 2}" y="15">${esc(group.title)}</text></g>`);
    }
    for (const lane of head.lanes) {
      const w = Math.max(lane.head_width, 60);
      out.push(`<g class="kd-lane" data-lane="${lane.index}"><title>${esc(lane.facts)}</title>` +
        `<rect x="${lane.x - w / 2}" y="${top + 4}" width="${w}" height="${height - top - 10}" rx="6"/>` +
        `<text class="kd-lane-name" x="${lane.x}" y="${top + 22}">${esc(lane.name)}</text>` +
        `<text class="kd-lane-caption" x="${lane.x}" y="${top + 36}">${esc(lane.caption)}</text>` +
        `<text class="kd-lane-facts" x="${lane.x}" y="${top + 49}">${esc(lane.facts)}</text></g>`);
    }
    this.headSvg.setAttribute("role", "img");
    this.headSvg.setAttribute("aria-label", `Sequence diagram of ${this.root.dataset.name || "a capture"}: ` +
      `${head.lanes.length} participants (${head.lanes.map((lane) => lane.name).join(", ")})`);
    const box = this.headSvg.parentElement;
    box.style.height = `${height}px`; // the sticky head overlays the body's first `height` px
    box.style.marginBottom = `-${height}px`;
    this.headSvg.setAttribute("width", head.size.width);
    this.headSvg.setAttribute("height", height);
    this.headSvg.innerHTML = out.join("");
  }

  // Draw the rows inside [top - overscan, bottom + overscan] unless the last drawing covers it.
  render() {
    if (!this.source) return;
    const view = this.scroll;
    const screen = view.clientHeight || 600;
    const top = view.scrollTop, bottom = top + screen;
    if (top >= this.drawn.top && bottom <= this.drawn.bottom) return;
    const from = Math.max(0, top - screen * OVERSCAN);
    const to = bottom + screen * OVERSCAN;
    this.drawn = { top: from, bottom: to };
    const head = this.source.head;
    const width = head.size.width;
    const out = [];
    // Node groups behind everything, then lifelines across the window.
    for (const group of head.nodes || []) {
      out.push(`<rect class="kd-node-band" x="${group.left}" y="${from}" width="${group.right - group.left}" height="${to - from}"/>`);
    }
    for (const lane of head.lanes) {
      out.push(`<line class="kd-lifeline" x1="${lane.x}" x2="${lane.x}" y1="${from}" y2="${to}"/>`);
    }
    for (const gap of head.gaps) {
      if (gap.y + gap.height < from || gap.y > to) continue;
      out.push(`<rect class="kd-gap" x="${head.size.axis_width}" y="${gap.y}" width="${width}" height="${gap.height}"/>` +
        `<text class="kd-gap-text" x="${head.size.axis_width + 12}" y="${gap.y + gap.height / 2 + 4}">${esc(gap.text)}</text>`);
    }
    this.drawPhases(out, from, to);
    this.drawFolds(out, from, to);
    this.drawRows(out, from, to);
    this.svg.setAttribute("width", width);
    this.svg.setAttribute("height", to - from);
    this.svg.setAttribute("viewBox", `0 ${from} ${width} ${to - from}`);
    this.svg.style.top = `${from}px`;
    this.svg.innerHTML = `<defs>${markers()}</defs>` + out.join("");
    if (this.refocus) this.svg.querySelector(this.refocus)?.focus({ preventScroll: true });
    if (this.handlers.onDrawn) this.handlers.onDrawn(this.pending);
  }

  drawPhases(out, from, to) {
    const head = this.source.head;
    const closed = new Set(head.collapsed_phases || []);
    const phases = head.phases;
    // y_top grows with the group id (groups are numbered by their first drawn row), so the
    // groups overlapping the window end just before the first one starting below it.
    let end = phases.length;
    let low = 0, high = phases.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      const y = phases[middle].y_top;
      if (y !== null && y > to) high = middle; else low = middle + 1;
    }
    end = low;
    const lanes = head.lanes;
    const drawn = [];
    for (let i = end - 1, seen = 0; i >= 0 && seen < 4000; i--, seen++) {
      const phase = phases[i];
      if (phase.y_top === null || phase.y_bottom < from) continue;
      const left = lanes[phase.lanes[0]].x - 40, right = lanes[phase.lanes[1]].x + 40;
      const isClosed = closed.has(phase.id);
      const notes = this.notes.get(`phase:${phase.id}`) || [];
      drawn.push(`<g class="kd-phase kd-phase-${esc(phase.phase)}${isClosed ? " kd-closed" : ""}" data-phase="${phase.id}">` +
        `<rect class="kd-phase-band" x="${left}" y="${phase.y_top}" width="${right - left}" height="${Math.max(phase.y_bottom - phase.y_top, 16)}"/>` +
        `<text class="kd-phase-toggle" data-toggle-phase="${phase.id}" tabindex="0" role="button" aria-expanded="${!isClosed}" aria-label="${isClosed ? "show" : "hide"} ${esc(phase.title)}" x="${left + 4}" y="${phase.y_top + 13}">${isClosed ? "▸" : "▾"}</text>` +
        `<text class="kd-phase-title" data-phase-title="${phase.id}" x="${left + 18}" y="${phase.y_top + 13}">${esc(phase.title)}` +
        `${isClosed ? ` (${phase.rows} hidden)` : ""}${notes.length ? ` ✎${notes.length}` : ""}</text></g>`);
    }
    // Scanned backwards, drawn forwards: a later header sits on top of an earlier band.
    out.push(...drawn.reverse());
  }

  drawFolds(out, from, to) {
    const head = this.source.head;
    for (const fold of head.folds) {
      if (fold.y === null || fold.y + fold.height < from || fold.y > to) continue;
      if (fold.collapsed) {
        const [left, right] = fold.band;
        out.push(`<g class="kd-fold" data-fold="${fold.id}"><rect class="kd-fold-band" x="${left}" y="${fold.y + 2}" width="${right - left}" height="${fold.height - 4}" rx="4"/>` +
          `<text class="kd-fold-text" x="${(left + right) / 2}" y="${fold.y + fold.height / 2 + 4}">${esc(fold.text)}</text>` +
          `<text class="kd-fold-toggle" data-toggle-fold="${fold.id}" tabindex="0" role="button" aria-expanded="false" aria-label="expand: ${esc(fold.text)}" x="${right - 16}" y="${fold.y + fold.height / 2 + 4}"><title>expand</title>⊕</text></g>`);
      } else if (head.folded || (head.expanded || []).includes(fold.id)) {
        const x = head.size.axis_width - 10;
        out.push(`<g class="kd-fold-open" data-fold="${fold.id}"><line x1="${x}" x2="${x}" y1="${fold.y}" y2="${fold.y + fold.height}"/>` +
          `<text class="kd-fold-toggle" data-toggle-fold="${fold.id}" tabindex="0" role="button" aria-expanded="true" aria-label="fold: ${esc(fold.text)}" x="${x - 8}" y="${fold.y + 12}"><title>fold: ${esc(fold.text)}</title>⊖</text></g>`);
      }
    }
  }

  drawRows(out, from, to) {
    const source = this.source;
    const lanes = source.head.lanes;
    const axis = source.head.size.axis_width;
    const width = source.head.size.width;
    this.pending = 0;
    for (let k = source.firstDrawnAt(from - 60); k < source.drawnY.length; k++) {
      const y = source.drawnY[k];
      if (y > to + 60) break;
      const index = source.drawnIndex[k];
      const row = source.row(index);
      if (!row) { // its chunk is on the way: a faint placeholder keeps the rhythm
        this.pending += 1;
        out.push(`<line class="kd-pending" x1="${axis}" x2="${width - 40}" y1="${y}" y2="${y}"/>`);
        continue;
      }
      out.push(drawRow(row, lanes, axis, width, {
        y, selected: index === this.selected, dim: !this.filter(row),
        notes: this.notes.get(`message:${row.message}`) || [],
        spacing: spacing(row.t, source.row(source.drawnIndex[k - 1]), source.row(source.drawnIndex[k + 1])),
      }));
    }
  }

  click(event) {
    const target = event.target;
    const fold = target.closest("[data-toggle-fold]");
    if (fold) return this.handlers.onToggleFold(Number(fold.dataset.toggleFold));
    const phaseToggle = target.closest("[data-toggle-phase]");
    if (phaseToggle) return this.handlers.onTogglePhase(Number(phaseToggle.dataset.togglePhase));
    const phase = target.closest("[data-phase-title]");
    if (phase) return this.handlers.onPhase(Number(phase.dataset.phaseTitle));
    const row = target.closest("[data-row]");
    if (row) this.handlers.onSelectRow(Number(row.dataset.row), true);
  }

  select(index, scrollIntoView) {
    this.selected = index;
    if (scrollIntoView && index >= 0) {
      const y = this.source.yOf ? this.source.yOf(index) : this.source.head.ys[index];
      if (y !== null && y !== undefined) {
        const view = this.scroll;
        const margin = 80;
        if (y < view.scrollTop + margin || y > view.scrollTop + view.clientHeight - margin) {
          view.scrollTop = Math.max(0, y - view.clientHeight / 3);
        }
      }
    }
    this.schedule(true);
  }
}

// Seconds to the nearer drawn neighbour (rows at the very same time do not count).
function spacing(t, above, below) {
  const gaps = [above, below].filter(Boolean).map((row) => Math.abs(row.t - t)).filter((d) => d > 0);
  return gaps.length ? Math.min(...gaps) : null;
}

function toggleSelector(toggle) {
  return toggle.dataset.toggleFold !== undefined ? `[data-toggle-fold="${toggle.dataset.toggleFold}"]`
    : `[data-toggle-phase="${toggle.dataset.togglePhase}"]`;
}

function markers() {
  return ["send", "reply", "rst", "retransmission", "provisional"].map((style) =>
    `<marker id="kd-arrow-${style}" class="kd-marker-${style}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>`).join("");
}

export function drawRow(row, lanes, axis, width, state) {
  // The source's y, not the row's: a filtered view moves kept rows up (api.js, filtered).
  const x1 = lanes[row.from].x, x2 = lanes[row.to].x, y = state.y ?? row.y;
  const style = row.style || "send";
  const classes = ["kd-row", `kd-${style}`];
  if (state.selected) classes.push("kd-selected");
  if (state.dim) classes.push("kd-dim");
  const out = [`<g class="${classes.join(" ")}" data-row="${row.index}" data-group="${row.group ?? ""}" id="m-${row.message}">`];
  const tip = [row.label, `${row.src} → ${row.dst}`,
    ...(row.badges || []).map((b) => b.detail ? `${b.text}: ${b.detail}` : b.text)].join("\n");
  out.push(`<title>${esc(tip)}</title>`);
  out.push(`<rect class="kd-hit" x="${axis}" y="${y - 20}" width="${width - axis}" height="28"/>`);
  out.push(`<text class="kd-time" x="${axis - 8}" y="${y + 4}">${esc(formatT(row.t, state.spacing ?? null))}</text>`);
  let labelX;
  if (x1 === x2) {
    out.push(`<path class="kd-arrow" d="M${x1},${y - 6} h40 v12 h-38" marker-end="url(#kd-arrow-${style})"/>`);
    labelX = x1 + 48;
    out.push(`<text class="kd-label kd-label-self" x="${labelX}" y="${y - 2}">${esc(cut(row.label))}</text>`);
  } else {
    out.push(`<line class="kd-arrow" x1="${x1}" x2="${x2}" y1="${y}" y2="${y}" marker-end="url(#kd-arrow-${style})"/>`);
    labelX = (x1 + x2) / 2;
    out.push(`<text class="kd-label" x="${labelX}" y="${y - 5}">${esc(cut(row.label))}</text>`);
  }
  if (row.nat_to !== null && row.nat_to !== undefined) {
    const x3 = lanes[row.nat_to].x;
    out.push(`<line class="kd-nat" x1="${x2}" x2="${x3}" y1="${y}" y2="${y}" marker-end="url(#kd-arrow-${style})"/>`);
  }
  let line = 0;
  for (const badge of row.badges || []) {
    if (!badge.shown) continue;
    line += 1;
    const badgeY = y + 2 + line * 14;
    if (badge.kind === "mtls") out.push(padlock(labelX - badge.shown.length * 2.85 - 14, badgeY - 10));
    out.push(`<text class="kd-badge kd-badge-${esc(badge.kind)}" x="${labelX}" y="${badgeY}">${esc(badge.shown)}</text>`);
  }
  if (state.notes.length) {
    out.push(`<g class="kd-note-marker"><title>${esc(state.notes.map((n) => `${n.author || "note"}: ${n.text}`).join("\n"))}</title>` +
      `<circle cx="${Math.min(x1, x2) - 14}" cy="${y}" r="9"/><text x="${Math.min(x1, x2) - 14}" y="${y + 4}">${state.notes.length > 1 ? state.notes.length : "✎"}</text></g>`);
  }
  out.push("</g>");
  return out.join("");
}

// The mTLS mark: a drawn padlock (as the SVG export draws it), not an emoji whose look and
// size change with the reader's fonts. (x, y): its top-left; 10 × 11 px.
function padlock(x, y) {
  return `<g class="kd-padlock" aria-hidden="true"><path d="M${x + 2.5},${y + 5} v-2 a2.5,2.5 0 0 1 5,0 v2" fill="none"/>` +
    `<rect x="${x + 1}" y="${y + 5}" width="8" height="6" rx="1"/></g>`;
}
