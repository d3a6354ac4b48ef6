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

  url(path) { return this.base + path; }
}

// One layout variant (fold / expanded folds / closed phases): its head at once, its rows in
// chunks as they scroll into view. Rows are never re-derived here; only fetched and cached.
export class LayoutSource {
  constructor(api, head, query) {
    this.api = api;
    this.head = head;
    this.query = query;
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

  static async load(api, fold, expanded, collapsed) {
    const query = LayoutSource.query(fold, expanded, collapsed);
    return new LayoutSource(api, await api.json("layout/" + query), query);
  }

  // Drawn rows (y not null) as two typed arrays, in y order, for binary search by scroll
  // position: 100k rows cost ~1 MB here instead of 100k objects.
  indexDrawn() {
    const ys = this.head.ys;
    let count = 0;
    for (let i = 0; i < ys.length; i++) if (ys[i] !== null) count++;
    this.drawnY = new Float64Array(count);
    this.drawnIndex = new Int32Array(count);
    let k = 0;
    for (let i = 0; i < ys.length; i++) {
      if (ys[i] !== null) { this.drawnY[k] = ys[i]; this.drawnIndex[k] = i; k++; }
    }
  }

  get rowCount() { return this.head.row_count; }

  row(index) {
    const size = this.head.chunk_rows;
    const number = Math.floor(index / size);
    const chunk = this.chunks.get(number);
    if (Array.isArray(chunk)) return chunk[index - number * size] || null;
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
    const head = this.head, ys = head.ys, count = this.rowCount;
    const match = new Uint8Array(count);
    let matching = 0, folded = 0;
    for (let i = 0; i < count; i++) {
      const row = this.row(i);
      if (row && keep(row)) { match[i] = 1; matching++; if (ys[i] === null) folded++; }
    }
    const newYs = new Array(count).fill(null);
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
      const group = newYs[i] === null ? null : this.row(i).group;
      if (group === null || group === undefined) continue;
      const seen = span.get(group);
      if (seen) seen[1] = newYs[i]; else span.set(group, [newYs[i], newYs[i]]);
    }
    for (const [group, [top, bottom]] of span) {
      const phase = head.phases[group];
      const above = (ys[phase.first_row] ?? top) - (phase.y_top ?? top);
      const below = (phase.y_bottom ?? bottom) - (ys[phase.last_row] ?? bottom);
      phases[group].y_top = Math.max(head.size.lane_head_height, top - Math.max(above, 0));
      phases[group].y_bottom = bottom + Math.max(below, 0);
    }
    const filteredHead = {
      ...head, ys: newYs, phases, gaps: [],
      // Fold bands and idle gaps stand between rows that may be gone; drawn only unfiltered.
      folds: head.folds.map((fold) => ({ ...fold, y: null })),
      size: { ...head.size, height: Math.max(head.size.lane_head_height + 40, head.size.height - removed) },
    };
    const source = new LayoutSource(this.api, filteredHead, this.query);
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
    const y = this.head.ys[index];
    if (y === null || y === undefined) return -1;
    return this.firstDrawnAt(y);
  }
}
