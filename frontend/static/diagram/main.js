// The diagram view's entry point: reads the section's data attributes (set by
// templates/captures/_diagram.html), loads the layout (or follows the live capture), and wires
// filters, folding, selection, keyboard, deep links, details, notes and exports.

import { Api, LayoutSource } from "./api.js";
import { loadFrame, renderNotes, renderPhaseDetails, renderRowDetails } from "./details.js";
import { exportButtons, thousands } from "./export.js";
import { LiveSource, follow } from "./live.js";
import { DiagramView } from "./view.js";

const RUNNING = new Set(["queued", "running", "stopping"]);
const LAYOUT_POLL_MS = 1000;
const WHOLE_POLLS = 900; // a first screen waits at most this many polls for the whole layout

class Diagram {
  constructor(root) {
    this.root = root;
    const data = root.dataset;
    this.api = new Api(data.api, document.querySelector('meta[name="csrf-token"]')?.content || "");
    this.readOnly = data.readOnly === "true";
    this.frames = data.frames === "true";
    this.user = data.user || "";
    this.staff = data.staff === "true";
    this.name = data.name || "capture";
    this.status = root.querySelector(".kd-status");
    this.panel = root.querySelector(".kd-details");
    this.fold = true;
    this.expanded = new Set();
    this.collapsed = new Set();
    this.notes = [];
    this.selected = -1;
    this.panelFor = null; // {row} or {phase}
    this.firstPaint = null;
    this.view = new DiagramView(root, {
      onSelectRow: (index, open) => this.select(index, open, false),
      onPhase: (id) => this.openPhase(id),
      onToggleFold: (id) => this.toggleFold(id),
      onTogglePhase: (id) => this.togglePhase(id),
      onDrawn: (pending) => this.drawn(pending),
    });
    this.exports = exportButtons(root.querySelector(".kd-exports"), this.api, this.name);
    this.clearButton = root.querySelector(".kd-clear-filters");
    root.querySelectorAll(".kd-filter").forEach((select) =>
      select.addEventListener("change", () => this.applyFilter()));
    this.clearButton?.addEventListener("click", () => {
      root.querySelectorAll(".kd-filter").forEach((select) => { select.value = ""; });
      this.applyFilter();
    });
    window.addEventListener("resize", () => { if (!this.panel.hidden) this.placePanel(); });
    root.querySelector(".kd-fold-all")?.addEventListener("change", (event) => {
      this.fold = event.target.checked;
      this.expanded.clear();
      this.reload().catch(() => {});
    });
    root.addEventListener("keydown", (event) => this.key(event));
    window.addEventListener("hashchange", () => this.followHash());
  }

  async start() {
    this.loadNotes();
    if (RUNNING.has(this.root.dataset.status) && this.root.dataset.ws) {
      this.goLive();
      return;
    }
    await this.reload();
    this.followHash();
  }

  say(text) { this.status.textContent = text; }

  // -- loading ---------------------------------------------------------------------------------

  // The first layout comes from the server; with its row index (fold.js), every later choice
  // of folds and phases is laid out here, over the same row chunks.
  async reload(keepRow = this.firstVisibleRow()) {
    let source;
    if (!this.origin && this.first) {
      if (await this.first.ensureIndex()) this.origin = this.first;
    }
    if (this.origin) {
      source = this.origin.variant(this.fold, [...this.expanded], [...this.collapsed]);
    } else {
      this.say("loading the diagram…");
      try {
        source = await LayoutSource.load(this.api, this.fold, [...this.expanded], [...this.collapsed]);
      } catch (error) {
        this.say(error.status === 409 ? "the analysis is not ready yet" : `no diagram: ${error.message}`);
        throw error;
      }
      this.first = source;
      if (source.head.first_screen) this.awaitWhole();
    }
    this.base = source;
    this.root.dataset.rows = source.rowCount;
    this.fillFilters();
    if (this.keep) source = await this.filterOf(source, this.keep);
    this.source = source;
    this.view.filter = () => true; // a layout is filtered by leaving rows out, not dimming them
    this.view.setSource(source);
    if (keepRow >= 0 && source.yOf(keepRow) !== null) {
      this.view.scroll.scrollTop = Math.max(0, source.yOf(keepRow) - 90);
    }
    this.view.select(this.selected, false);
    this.sayCount();
    this.root.dataset.state = "ready";
  }

  firstVisibleRow() {
    if (!this.source) return -1;
    const at = this.source.firstDrawnAt(this.view.scroll.scrollTop + 64);
    return at < this.source.drawnIndex.length ? this.source.drawnIndex[at] : -1;
  }

  goLive() {
    const live = new LiveSource();
    this.source = live;
    this.root.dataset.state = "live";
    this.view.setSource(live);
    this.say("live: provisional arrows until the capture is analysed");
    this.socket = follow(this.root.dataset.ws, {
      onHello: (hello) => { if (hello.redacted) this.say("live: this share link hides the packets"); },
      onBatch: (batch) => {
        const atBottom = this.view.scroll.scrollTop + this.view.scroll.clientHeight >=
          this.view.scroll.scrollHeight - 40;
        if (live.add(batch)) this.view.drawHead();
        this.view.body.style.height = `${live.head.size.height}px`;
        this.view.body.style.width = `${live.head.size.width}px`;
        this.root.dataset.rows = live.rowCount;
        if (atBottom) this.view.scroll.scrollTop = this.view.scroll.scrollHeight;
        this.view.schedule(true);
        const skipped = live.thinned + live.dropped;
        this.say(`live: ${live.rowCount} provisional arrows` +
          (skipped ? ` (${skipped} packets not drawn to keep up; the capture keeps them all)` : "") +
          (live.notIp ? `; frames without IP (ARP, ...) left out: ${live.notIp}` : ""));
      },
      onStatus: (event) => {
        if (!RUNNING.has(event.status)) {
          this.socket.close();
          this.say(`capture ${event.status}: waiting for the analysis…`);
          this.awaitLayout();
        }
      },
    });
  }

  // The real layout, as a reload of the page would show it: from its top (the live view's
  // scroll offset means nothing there), then any deep link in the address.
  async awaitLayout() {
    for (;;) {
      try {
        this.root.dataset.state = "loading";
        this.view.scroll.scrollTop = 0;
        await this.reload(-1);
        await this.followHash();
        return;
      } catch (error) {
        if (error.status !== 409) return;
      }
      await new Promise((resolve) => setTimeout(resolve, LAYOUT_POLL_MS));
    }
  }

  // A big capture's first screen, while the server lays out the rest (docs/api.md): asked for
  // again every second until the whole layout answers, which then takes its place at the same
  // row, with the folds and filters chosen meanwhile.
  async awaitWhole() {
    if (this.awaiting) return;
    this.awaiting = true;
    try {
      for (let poll = 0; poll < WHOLE_POLLS; poll++) {
        await new Promise((resolve) => setTimeout(resolve, LAYOUT_POLL_MS));
        let whole;
        try {
          whole = await LayoutSource.load(this.api, true, [], []);
        } catch {
          continue;
        }
        if (whole.head.first_screen) continue;
        this.first = whole;
        this.origin = null;
        await this.reload();
        return;
      }
      this.say("the rest of the diagram is still being laid out: reload the page to see it");
    } finally {
      this.awaiting = false;
    }
  }

  // "N arrows", or of a first screen: "the first N of M arrows (the rest is being laid out…)".
  arrows(count) {
    const first = this.first?.head.first_screen;
    return first ? `the first ${thousands(count)} of ${thousands(first.messages)} arrows ` +
      "(the rest is being laid out…)" : `${thousands(count)} arrows`;
  }

  drawn(pending) {
    // The first screen counts as drawn once no row in it waits for its chunk.
    if (this.firstPaint === null && pending === 0 && this.source && this.source.rowCount > 0 &&
        !this.source.head.provisional) {
      this.firstPaint = performance.now();
      this.root.dataset.firstPaint = String(Math.round(this.firstPaint));
      performance.mark("kviz-diagram-first-paint");
      if (this.fillLater) setTimeout(() => this.fillFilters(), 0);
      const first = this.first;
      first?.ensureIndex().then((index) => { if (index && this.first === first) this.origin = first; });
    }
  }

  // -- filters, folding --------------------------------------------------------------------------

  // After the first screen is drawn: a capture of 100k arrows has thousands of connections, and
  // a select of thousands of options costs the page a layout it need not wait for.
  async fillFilters() {
    if (this.firstPaint === null) { this.fillLater = true; return; }
    this.fillLater = false;
    const head = this.base.head; // every lane and connection, whatever the filter leaves
    if (!head.connections) { // the lean head (api.js, load)
      this.connections ??= this.api.json(`layout/${this.base.query}&part=connections`)
        .then((doc) => doc.connections || []).catch(() => []);
      head.connections = await this.connections;
    }
    const fill = (name, options) => {
      const select = this.root.querySelector(`.kd-filter[data-filter="${name}"]`);
      if (!select || select.options.length > 1) return;
      const all = document.createDocumentFragment(); // one insertion, not one per option
      for (const [value, label] of options) all.appendChild(new Option(label, value));
      select.appendChild(all);
    };
    fill("connection", [["none", "no connection (DNS, ICMP)"],
      ...(head.connections || []).map((c) => [String(c.id), `${c.id}: ${c.client} → ${c.server}`])]);
    fill("lane", head.lanes.map((lane) => [String(lane.index), `${lane.name} (${lane.address || lane.ip})`]));
  }

  sayCount() {
    const source = this.source;
    this.updateExports();
    if (source.matching !== undefined) {
      this.say(`${thousands(source.matching)} of ${this.arrows(source.rowCount)}` +
        (source.folded ? ` (${thousands(source.folded)} of them inside folded repeats)` : ""));
    } else {
      const folds = source.head.folds.filter((f) => f.collapsed).length;
      this.say(this.arrows(source.rowCount) + (folds ? `, ${folds} repeated patterns folded` : ""));
    }
    this.root.dataset.matching = source.matching ?? source.rowCount;
  }

  // The exports draw this view; they need its size and the folded view's to say when a
  // picture is too long (export.js).
  updateExports() {
    const source = this.source;
    if (!source || source.head.provisional || !this.exports) return;
    if (this.fold && !this.expanded.size && !this.collapsed.size && !this.choice) {
      this.foldedArrows = source.drawnY.length; // this view is the folded one
    } else if (this.foldedArrows === undefined && this.origin) {
      this.foldedArrows = this.origin.variant(true, [], []).drawnY.length;
    }
    this.exports.update({
      fold: this.fold, choice: this.choice, filtered: Boolean(this.choice),
      arrows: source.drawnY.length, height: source.head.size.height,
      foldedArrows: this.foldedArrows ?? source.drawnY.length,
    });
  }

  async filterOf(base, keep) {
    if (!base.index) await base.ensureIndex();
    if (base.index && this.choice) return base.filteredBy(base.match(this.choice).match);
    return base.filtered(keep, (done, total) => {
      if (total > 1) this.say(`filtering: ${done} of ${total} parts of the diagram loaded…`);
    });
  }

  // A filter draws only the matching arrows, closed up (api.js, filtered); a live capture's
  // provisional arrows are few and only dimmed.
  async applyFilter() {
    const value = (name) => this.root.querySelector(`.kd-filter[data-filter="${name}"]`)?.value || "";
    const connection = value("connection"), lane = value("lane"), phase = value("phase");
    const active = Boolean(connection || lane || phase);
    if (this.clearButton) this.clearButton.hidden = !active;
    const phases = () => this.source.head.phases;
    this.filter = active ? (row) => {
      if (connection === "none" ? row.connection !== null
        : connection && String(row.connection) !== connection) return false;
      if (lane && ![row.from, row.to, row.nat_to].map(String).includes(lane)) return false;
      if (phase) {
        const group = row.group !== null && row.group !== undefined ? phases()[row.group] : null;
        if ((group ? group.phase : row.phase) !== phase) return false;
      }
      return true;
    } : null;
    const keep = this.filter;
    this.choice = active ? { connection, lane, phase } : null;
    this.keep = keep; // the layout, once a live capture has one, is filtered by reload()
    if (!this.base || this.source.head.provisional) {
      this.view.setFilter(keep || (() => true));
      return;
    }
    this.view.filter = () => true;
    this.root.dataset.state = "filtering";
    const source = keep ? await this.filterOf(this.base, keep) : this.base;
    if (this.keep !== keep) return; // a newer choice is on its way
    this.source = source;
    this.view.scroll.scrollTop = 0;
    this.view.setSource(source);
    this.view.select(source.yOf(this.selected) !== null ? this.selected : -1, true);
    this.sayCount();
    this.root.dataset.state = "ready";
  }

  toggleFold(id) {
    const fold = this.source.head.folds[id];
    if (!this.fold) { // everything is drawn: folding one means folding mode with the rest open
      this.fold = true;
      this.source.head.folds.forEach((f) => { if (f.id !== id) this.expanded.add(f.id); });
      this.root.querySelector(".kd-fold-all").checked = true;
    } else if (fold.collapsed) this.expanded.add(id); else this.expanded.delete(id);
    return this.reload();
  }

  togglePhase(id) {
    if (this.collapsed.has(id)) this.collapsed.delete(id); else this.collapsed.add(id);
    return this.reload();
  }

  // -- selection, details ------------------------------------------------------------------------

  async select(index, open, fromHash) {
    this.selected = index;
    this.view.select(index, true);
    if (!fromHash && index >= 0) {
      const row = await this.source.rowAsync(index);
      if (row && !String(row.message).startsWith("p")) {
        history.replaceState(null, "", `#m-${row.message}`);
      }
    }
    if (open) this.openRow(index);
  }

  async openRow(index) {
    const row = await this.source.rowAsync(index);
    if (!row) return;
    this.panelFor = { row: index };
    renderRowDetails(this.panel, row, this.source.head, { frames: this.frames });
    this.showPanel();
    this.drawNotes();
    if (this.frames) loadFrame(this.panel, this.api, row.frame);
  }

  openPhase(id) {
    const phase = this.source.head.phases[id];
    this.panelFor = { phase: id };
    renderPhaseDetails(this.panel, phase, this.source.head);
    this.showPanel();
    this.drawNotes();
  }

  showPanel() {
    this.panel.hidden = false;
    this.placePanel();
    this.panel.querySelector(".kd-close").addEventListener("click", () => this.closePanel());
  }

  // Beside the diagram when both fit, else over its right side: opening details never narrows
  // the drawing a reader is looking at.
  placePanel() {
    const main = this.root.querySelector(".kd-main");
    const panelWidth = Math.min(26 * 16, main.clientWidth);
    const drawing = (this.source?.head.size.width || 0) + 2; // + the scroll box's borders
    const beside = main.clientWidth - panelWidth - 12 >= drawing;
    main.classList.toggle("kd-over", !beside);
  }

  closePanel() {
    this.panel.hidden = true;
    this.panelFor = null;
    this.view.scroll.focus({ preventScroll: true });
  }

  async step(direction) {
    const source = this.source;
    if (!source || !source.drawnIndex.length) return;
    let at = this.selected >= 0 ? source.drawnPosition(this.selected) : -1;
    if (at < 0) at = direction > 0 ? source.firstDrawnAt(this.view.scroll.scrollTop) - 1
      : source.firstDrawnAt(this.view.scroll.scrollTop + this.view.scroll.clientHeight);
    // Skip arrows the filter dims; bounded so a filter matching nothing stays quick.
    for (let tries = 0; tries < 5000; tries++) {
      at += direction;
      if (at < 0 || at >= source.drawnIndex.length) return;
      const index = source.drawnIndex[at];
      const row = await source.rowAsync(index);
      if (!this.filter || this.filter(row)) {
        await this.select(index, !this.panel.hidden && this.panelFor && "row" in this.panelFor, false);
        return;
      }
    }
  }

  key(event) {
    if (event.target.closest("textarea, input, select")) return;
    if (event.key === "j" || event.key === "ArrowDown") { event.preventDefault(); this.step(1); }
    else if (event.key === "k" || event.key === "ArrowUp") { event.preventDefault(); this.step(-1); }
    else if (event.key === "Enter" && this.selected >= 0) { event.preventDefault(); this.openRow(this.selected); }
    else if (event.key === "Escape") { this.closePanel(); }
  }

  // `#m-<message id>`: scroll to that arrow, open folds or phases hiding it, highlight it.
  async followHash() {
    if (!location.hash.startsWith("#m-")) return;  // the page's own anchors (#sharing)
    const match = /^#m-(\d+)$/.exec(location.hash);
    if (!this.source || this.source.head.provisional) return;
    // A link that names no arrow says so, rather than leaving the reader at the top.
    if (!match) {
      this.say(`the link's ${location.hash.slice(0, 40)} names no message: it should read #m-<number>`);
      return;
    }
    const index = this.source.rowOfMessage(Number(match[1]));
    if (index < 0) {
      this.say(`message ${match[1]} is not in this capture's diagram (the link may be for another capture)`);
      return;
    }
    if (this.source.yOf(index) === null) {
      const row = await this.source.rowAsync(index);
      if (row.fold !== null) this.expanded.add(row.fold);
      if (row.group !== null) this.collapsed.delete(row.group);
      await this.reload(index);
    }
    this.view.scroll.focus({ preventScroll: true });
    await this.select(index, true, true);
    this.root.dataset.deepLinked = String(index);
  }

  // -- notes -------------------------------------------------------------------------------------

  async loadNotes() {
    try {
      this.notes = (await this.api.json("notes/")).notes;
    } catch {
      this.notes = [];
    }
    const byTarget = new Map();
    for (const note of this.notes) {
      if (!byTarget.has(note.target)) byTarget.set(note.target, []);
      byTarget.get(note.target).push(note);
    }
    this.view.setNotes(byTarget);
    this.drawNotes();
  }

  drawNotes() {
    const section = this.panel.querySelector(".kd-notes");
    if (!section) return;
    renderNotes(section, this.notes, {
      readOnly: this.readOnly, user: this.user, staff: this.staff,
      onAdd: async (target, text) => {
        try {
          await this.api.json("notes/", { method: "POST", body: JSON.stringify({ target, text }) });
        } catch (error) {
          this.say(`the note was not saved: ${error.message}`);
        }
        await this.loadNotes();
      },
      onDelete: async (note) => {
        await this.api.json(`notes/${note.id}/`, { method: "DELETE" }).catch((error) =>
          this.say(`the note was not deleted: ${error.message}`));
        await this.loadNotes();
      },
    });
  }
}

const root = document.getElementById("diagram");
if (root && root.dataset.api) {
  const diagram = new Diagram(root);
  window.kvizDiagram = diagram; // for the browser tests and a curious reader's console
  diagram.start().catch(() => {});
}
