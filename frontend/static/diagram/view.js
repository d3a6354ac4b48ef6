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

export function formatT(t) {
  if (t >= 1) return `${t.toFixed(3)} s`;
  return `${(t * 1000).toFixed(3)} ms`;
}

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
    const out = [];
    for (const lane of head.lanes) {
      const w = Math.max(lane.head_width, 60);
      out.push(`<g class="kd-lane" data-lane="${lane.index}"><title>${esc(lane.facts)}</title>` +
        `<rect x="${lane.x - w / 2}" y="4" width="${w}" height="${height - 10}" rx="6"/>` +
        `<text class="kd-lane-name" x="${lane.x}" y="22">${esc(lane.name)}</text>` +
        `<text class="kd-lane-caption" x="${lane.x}" y="36">${esc(lane.caption)}</text>` +
        `<text class="kd-lane-facts" x="${lane.x}" y="49">${esc(lane.facts)}</text></g>`);
    }
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
    // Lifelines across the window.
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
        `<text class="kd-phase-toggle" data-toggle-phase="${phase.id}" x="${left + 4}" y="${phase.y_top + 12}">${isClosed ? "▸" : "▾"}</text>` +
        `<text class="kd-phase-title" data-phase-title="${phase.id}" x="${left + 18}" y="${phase.y_top + 12}">${esc(phase.title)}` +
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
          `<text class="kd-fold-toggle" data-toggle-fold="${fold.id}" x="${right - 16}" y="${fold.y + fold.height / 2 + 4}"><title>expand</title>⊕</text></g>`);
      } else if (head.folded || (head.expanded || []).includes(fold.id)) {
        const x = head.size.axis_width - 10;
        out.push(`<g class="kd-fold-open" data-fold="${fold.id}"><line x1="${x}" x2="${x}" y1="${fold.y}" y2="${fold.y + fold.height}"/>` +
          `<text class="kd-fold-toggle" data-toggle-fold="${fold.id}" x="${x - 8}" y="${fold.y + 12}"><title>fold: ${esc(fold.text)}</title>⊖</text></g>`);
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
        selected: index === this.selected, dim: !this.filter(row),
        notes: this.notes.get(`message:${row.message}`) || [],
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
      const y = this.source.head.ys[index];
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

function markers() {
  return ["send", "reply", "rst", "retransmission", "provisional"].map((style) =>
    `<marker id="kd-arrow-${style}" class="kd-marker-${style}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>`).join("");
}

export function drawRow(row, lanes, axis, width, state) {
  const x1 = lanes[row.from].x, x2 = lanes[row.to].x, y = row.y;
  const style = row.style || "send";
  const classes = ["kd-row", `kd-${style}`];
  if (state.selected) classes.push("kd-selected");
  if (state.dim) classes.push("kd-dim");
  const out = [`<g class="${classes.join(" ")}" data-row="${row.index}" data-group="${row.group ?? ""}" id="m-${row.message}">`];
  const tip = [row.label, `${row.src} → ${row.dst}`,
    ...(row.badges || []).map((b) => b.detail ? `${b.text}: ${b.detail}` : b.text)].join("\n");
  out.push(`<title>${esc(tip)}</title>`);
  out.push(`<rect class="kd-hit" x="${axis}" y="${y - 20}" width="${width - axis}" height="28"/>`);
  out.push(`<text class="kd-time" x="${axis - 8}" y="${y + 4}">${esc(formatT(row.t))}</text>`);
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
    out.push(`<text class="kd-badge kd-badge-${esc(badge.kind)}" x="${labelX}" y="${y + 2 + line * 14}">${esc(badgeText(badge))}</text>`);
  }
  if (state.notes.length) {
    out.push(`<g class="kd-note-marker"><title>${esc(state.notes.map((n) => `${n.author || "note"}: ${n.text}`).join("\n"))}</title>` +
      `<circle cx="${Math.min(x1, x2) - 14}" cy="${y}" r="7"/><text x="${Math.min(x1, x2) - 14}" y="${y + 4}">${state.notes.length > 1 ? state.notes.length : "✎"}</text></g>`);
  }
  out.push("</g>");
  return out.join("");
}

// Locks and other marks the exports draw as symbols, written as words plus the symbol here.
function badgeText(badge) {
  if (badge.kind === "mtls") return `🔒 ${badge.shown}`;
  return badge.shown;
}
