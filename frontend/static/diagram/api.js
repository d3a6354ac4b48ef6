import { matchRows, readIndex, relayout, withShown } from "./fold.js";

// Talking to the server: the diagram endpoints (docs/api.md, "Diagram") under one base URL,
// `/api/captures/<id>/` for the owner or `/api/share/<token>/` for a share link.

export class Api {
  constructor(base, csrf) {
    this.base = base;
    this.csrf = csrf;
  }

  async json(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (options.method && options.method !== "GET") {
      // Session requests need Django's CSRF token for anything that changes state.
      headers["X-CSRFToken"] = this.csrf;
      headers["Content-Type"] = "application/json";
    }
    const response = await fetch(this.base + path, { credentials: "same-origin", ...options, headers });
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // A binary answer (the row index) as an ArrayBuffer, or null when the server has none.
  async buffer(path) {
    const response = await fetch(this.base + path, { credentials: "same-origin" });
    if (!response.ok) return null;
    return response.arrayBuffer();
  }

  url(path) { return this.base + path; }
}

function shown(y) { return y !== null && y !== undefined && y === y; } // y === y: not NaN

// The lean head spells its phases as columns (key -> a value per phase; diagram_cache._lean):
// at 1M arrows the objects' repeated keys were most of what the first screen waited for.
export function phasesFromColumns(head) {
  const columns = head.phase_columns;
  if (!columns) return head;
  const keys = Object.keys(columns);
  const count = keys.length ? columns[keys[0]].length : 0;
  const phases = new Array(count);
  for (let i = 0; i < count; i++) {
    const phase = {};
    for (const key of keys) phase[key] = columns[key][i];
    phases[i] = phase;
  }
  const { phase_columns: _columns, ...rest } = head;
  return { ...rest, phases };
}

// One layout variant (fold / expanded folds / closed phases): its head at once, its rows in
// chunks as they scroll into view. Rows are never re-derived here; only fetched and cached.
export class LayoutSource {
  constructor(api, head, query, index = null) {
    this.api = api;
    this.head = head;
    this.query = query;
    this.index = index; // the row index (fold.js), when the server has one
    this.chunks = new Map(); // chunk number -> rows array, or a pending Promise
    this.onChunk = () => {};
    this.indexDrawn();
  }

  static query(fold, expanded, collapsed) {
    const parts = [`fold=${fold ? 1 : 0}`];
    if (expanded.length) parts.push(`expand=${expanded.join(",")}`);
    if (collapsed.length) parts.push(`collapse=${collapsed.join(",")}`);
    return "?" + parts.join("&");
  }

  // The head first (the first screen needs nothing else); the row index follows
  // (`ensureIndex`), for folding and filtering without the server.
  static async load(api, fold, expanded, collapsed) {
    const query = LayoutSource.query(fold, expanded, collapsed);
    // The lean head: no connections (fetched for the filters after the first paint, main.js)
    // and no annotations (the rows' badges carry their words).
    const lean = phasesFromColumns(await api.json("layout/" + query + "&part=lean"));
    // A big capture's first screen while the server lays out the rest (docs/api.md): its own
    // rows and index are asked for by name, whatever the server has built meanwhile.
    const own = lean.first_screen ? query + "&first=1" : query;
    const source = new LayoutSource(api, lean, own);
    source.indexPath = "layout/" + own + "&part=index";
    return source;
  }

  // The row index, fetched once: after the first screen (at 1M arrows the head and the index
  // are tens of MB each, and the first screen needs only the head), or when a fold or a filter
  // needs it first. Resolves to the index, or null when the server has none.
  ensureIndex() {
    if (this.index || !this.indexPath) return Promise.resolve(this.index);
    this.indexReady ??= this.api.buffer(this.indexPath).catch(() => null).then((buffer) => {
      let index = null;
      try { index = buffer ? readIndex(buffer) : null; } catch { index = null; }
      this.index = index && index.count === this.head.row_count ? index : null;
      return this.index;
    });
    return this.indexReady;
  }

  // The same capture with folds and phases chosen anew, laid out here from the row index
  // (fold.js) over the same row chunks: no request, whatever the size.
  variant(fold, expanded, collapsed) {
    const head = relayout(this.index, this.head, { fold, expand: expanded, collapse: collapsed });
    const source = new LayoutSource(this.api, head, this.query, this.index);
    source.chunks = this.chunks;
    return source;
  }

  // Rows matching a filter, from the index ({match, count}); null without an index.
  match(choice) {
    return this.index ? matchRows(this.index, this.head.phases, choice) : null;
  }

  // Drawn rows (y not null) as two typed arrays, in y order, for binary search by scroll
  // position: 100k rows cost ~1 MB here instead of 100k objects.
  // `head.ys` is the server's array (null: hidden) or a Float64Array made here (NaN: hidden).
  indexDrawn() {
    const ys = this.head.ys;
    let count = 0;
    for (let i = 0; i < ys.length; i++) if (shown(ys[i])) count++;
    this.drawnY = new Float64Array(count);
    this.drawnIndex = new Int32Array(count);
    let k = 0;
    for (let i = 0; i < ys.length; i++) {
      if (shown(ys[i])) { this.drawnY[k] = ys[i]; this.drawnIndex[k] = i; k++; }
    }
  }

  // Row `index`'s y, or null when it is hidden (folded, in a closed phase, filtered out).
  yOf(index) {
    const y = this.head.ys[index];
    return shown(y) ? y : null;
  }

  get rowCount() { return this.head.row_count; }

  row(index) {
    // (a neighbour of the first or last drawn row is asked for as index undefined)
    if (!(index >= 0 && index < this.rowCount)) return null;
    const size = this.head.chunk_rows;
    const number = Math.floor(index / size);
    const chunk = this.chunks.get(number);
    if (Array.isArray(chunk)) {
      const row = chunk[index - number * size] || null;
      // A layout made here writes badges under other arrows than the server's did.
      return row && this.head.shown ? withShown(row, this.head.shown[index]) : row;
    }
    if (!chunk) this.fetchChunk(number);
    return null;
  }

  fetchChunk(number) {
    const pending = this.api.json(`layout/rows/${number}/${this.query}`).then((doc) => {
      this.chunks.set(number, doc.rows);
      this.onChunk(number);
      return doc.rows;
    }).catch((error) => { this.chunks.delete(number); throw error; });
    this.chunks.set(number, pending);
    return pending;
  }

  async chunkAsync(number) {
    const chunk = this.chunks.get(number);
    if (Array.isArray(chunk)) return chunk;
    return chunk || this.fetchChunk(number);
  }

  // Only the rows `keep` accepts, drawn one under the other: a new source over the same
  // chunks whose head has the kept rows' y moved up by the height of the rows left out above
  // them (each row's height being its distance to the drawn row above it, so a phase header
  // before a kept row stays). Every row's data is needed to know which match, so all chunks are
  // fetched first; `progress(done, total)` hears how far that got.
  async filtered(keep, progress = () => {}) {
    const total = Math.ceil(this.rowCount / this.head.chunk_rows);
    let next = 0, done = 0;
    const worker = async () => {
      while (next < total) {
        await this.chunkAsync(next++);
        progress(++done, total);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    const count = this.rowCount;
    const match = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      const row = this.row(i);
      if (row && keep(row)) match[i] = 1;
    }
    return this.filteredBy(match);
  }

  // The same as `filtered`, with the matching rows given (1 in `match`): from the row index,
  // no chunk is fetched.
  filteredBy(match) {
    const head = this.head, ys = head.ys, count = this.rowCount;
    const groupOf = this.index ? this.index.group : null;
    let matching = 0, folded = 0;
    for (let i = 0; i < count; i++) {
      if (match[i]) { matching++; if (!shown(ys[i])) folded++; }
    }
    const newYs = new Float64Array(count).fill(NaN);
    let removed = 0;
    for (let k = 0; k < this.drawnY.length; k++) {
      const i = this.drawnIndex[k];
      if (match[i]) newYs[i] = this.drawnY[k] - removed;
      else removed += this.drawnY[k] - (k ? this.drawnY[k - 1] : head.size.lane_head_height);
    }
    // A phase band spans its kept rows, with the header and bottom margin it had around its own.
    const phases = head.phases.map((phase) => ({ ...phase, y_top: null, y_bottom: null }));
    const span = new Map();
    for (let i = 0; i < count; i++) {
      if (newYs[i] !== newYs[i]) continue; // NaN: not kept
      const group = groupOf ? groupOf[i] : this.row(i).group;
      if (group === null || group === undefined || group < 0) continue;
      const seen = span.get(group);
      if (seen) seen[1] = newYs[i]; else span.set(group, [newYs[i], newYs[i]]);
    }
    for (const [group, [top, bottom]] of span) {
      const phase = head.phases[group];
      const above = (this.yOf(phase.first_row) ?? top) - (phase.y_top ?? top);
      const below = (phase.y_bottom ?? bottom) - (this.yOf(phase.last_row) ?? bottom);
      phases[group].y_top = Math.max(head.size.lane_head_height, top - Math.max(above, 0));
      phases[group].y_bottom = bottom + Math.max(below, 0);
    }
    const filteredHead = {
      ...head, ys: newYs, phases, gaps: [],
      // Fold bands and idle gaps stand between rows that may be gone; drawn only unfiltered.
      folds: head.folds.map((fold) => ({ ...fold, y: null })),
      size: { ...head.size, height: Math.max(head.size.lane_head_height + 40, head.size.height - removed) },
    };
    const source = new LayoutSource(this.api, filteredHead, this.query, this.index);
    source.chunks = this.chunks;
    Object.assign(source, { matching, folded, base: this });
    return source;
  }

  async rowAsync(index) {
    const found = this.row(index);
    if (found) return found;
    const size = this.head.chunk_rows;
    const chunk = this.chunks.get(Math.floor(index / size));
    const rows = await chunk;
    return rows[index - Math.floor(index / size) * size];
  }

  rowOfMessage(messageId) {
    const map = this.head.message_rows;
    if (!map) return messageId >= 0 && messageId < this.rowCount ? messageId : -1;
    return map.indexOf(messageId);
  }

  // Position in the drawn arrays of the first drawn row with y >= top.
  firstDrawnAt(top) {
    let low = 0, high = this.drawnY.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this.drawnY[middle] < top) low = middle + 1; else high = middle;
    }
    return low;
  }

  drawnPosition(index) {
    const y = this.yOf(index);
    if (y === null) return -1;
    return this.firstDrawnAt(y);
  }
}
