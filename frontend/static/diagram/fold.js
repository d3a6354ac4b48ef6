// Folding, unfolding, closing phases and filtering in the browser, from the layout's row index
// (captures/render/rowindex.py: ~40 bytes a row in typed arrays). `relayout` is step 5 of
// captures/render/layout.py (`_place_rows`, `_choose_shown`, `content_right`) over those arrays,
// operation for operation, so it gives the server's numbers for the same choices
// (tests/render/test_browser_fold.py compares them); the server lays out only the first view.

const ROW_PITCH = 28, BADGE_LINE = 14, PHASE_HEADER = 18, GAP_BAND = 30, FOLD_BAND = 34;
const CHAR_WIDTH = 6.4, RIGHT_MARGIN = 220, AXIS_WIDTH = 96;
const TYPES = { f8: Float64Array, i4: Int32Array, u4: Uint32Array, u2: Uint16Array, u1: Uint8Array };

// The index file as {header, count, t, fold, group, ...} over one ArrayBuffer (no copies).
export function readIndex(buffer) {
  const bytes = new Uint8Array(buffer);
  if (String.fromCharCode(...bytes.subarray(0, 4)) !== "KVIX") throw new Error("not a row index");
  const length = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length)));
  const index = { header, count: header.count };
  for (const [name, [type, offset, count]] of Object.entries(header.arrays)) {
    index[name] = new TYPES[type](buffer, offset, count);
  }
  return index;
}

export function formatSeconds(seconds) {
  if (seconds >= 60) return `${Math.floor(seconds / 60)} min ${(seconds % 60).toFixed(0)} s`;
  return seconds >= 1 ? `${seconds.toFixed(1)} s` : `${(seconds * 1000).toFixed(0)} ms`;
}

// The layout of `base` (a head as the server wrote it) with folds and phases chosen anew:
// `fold` (fold repeats at all), `expand` (fold ids drawn in full), `collapse` (phase ids drawn
// as their header). Returns a head like the server's (but `ys` a Float64Array, NaN where the
// server writes null) plus `shown` (per row, bit k set when the row's k-th hop chain or NAT
// finding is written under the arrow).
export function relayout(index, base, { fold = true, expand = [], collapse = [] } = {}) {
  const n = index.count;
  const { t, group: groupOf, fixed, fixed_len: fixedLen, label_len: labelLen } = index;
  const foldOf = index.fold, src = index.src, dst = index.dst;
  const { tok_start: tokStart, tok_kind: tokKind, tok_key: tokKey, tok_val: tokVal,
    tok_len: tokLen } = index;
  const forms = index.header.fold_forms;
  const opened = new Set(expand), closed = new Set(collapse);
  const gapSeconds = index.header.gap_seconds;
  const lanes = base.lanes;
  const folds = base.folds.map((f, id) => {
    const collapsed = Boolean(fold) && !opened.has(f.id);
    const form = forms[id];
    return { ...f, collapsed, y: null, height: 0.0,
      text: collapsed ? form[2] : form[0], band: collapsed ? form[3] : form[1] };
  });
  const phases = base.phases.map((p) => ({ ...p, y_top: null, y_bottom: null }));
  const headed = new Uint8Array(phases.length);
  const hopState = new Int32Array(index.header.keys).fill(-1);
  const noteSeen = new Uint8Array(index.header.notes + 1);
  // NaN for a hidden row (the server's head says null): a typed array, not 100k boxed numbers.
  const ys = new Float64Array(n).fill(NaN);
  const shown = new Uint8Array(n);
  const gaps = [];
  let y = base.size.lane_head_height + 16;
  let previous = null;
  let right = 0.0;
  const pitchToLine = ROW_PITCH * 0.6;
  for (let i = 0; i < n; i++) {
    const fid = foldOf[i];
    const group = fid >= 0 ? folds[fid] : null;
    if (group !== null && group.collapsed && i > group.shown_last_row) {
      if (i === group.shown_last_row + 1) { group.y = y; group.height = FOLD_BAND; y += FOLD_BAND; }
      previous = t[i];
      continue;
    }
    if (previous !== null && t[i] - previous > gapSeconds) {
      const seconds = t[i] - previous;
      gaps.push({ before_row: i, seconds, text: `… ${formatSeconds(seconds)} idle …`, y, height: GAP_BAND });
      y += GAP_BAND;
    }
    previous = t[i];
    const g = groupOf[i];
    const phase = g >= 0 ? phases[g] : null;
    if (phase !== null && !headed[g]) {
      headed[g] = 1;
      phase.y_top = y;
      y += PHASE_HEADER;
      if (closed.has(g)) phase.y_bottom = y;
    }
    if (phase !== null && closed.has(g)) { previous = t[i]; continue; }
    ys[i] = y + pitchToLine;
    // _choose_shown: which badges are written under the arrow.
    let lines = fixed[i], longest = fixedLen[i], bits = 0, bit = 0;
    for (let k = tokStart[i], end = tokStart[i + 1]; k < end; k++) {
      const kind = tokKind[k];
      if (kind === 0) {
        const key = tokKey[k];
        if (hopState[key] !== tokVal[k]) {
          lines++; bits |= 1 << bit;
          if (tokLen[k] > longest) longest = tokLen[k];
        }
        hopState[key] = tokVal[k];
        bit++;
      } else if (kind === 1) {
        if (!noteSeen[tokKey[k]]) {
          noteSeen[tokKey[k]] = 1;
          lines++; bits |= 1 << bit;
          if (tokLen[k] > longest) longest = tokLen[k];
        }
        bit++;
      } else {
        noteSeen[tokKey[k]] = 1;
      }
    }
    shown[i] = bits;
    y += ROW_PITCH + BADGE_LINE * lines;
    if (phase !== null) phase.y_bottom = y;
    if (group !== null && !group.collapsed && i === group.last_row) {
      const top = (ys[group.first_row] || 0.0) - pitchToLine; // (NaN || 0 is 0, as None or 0.0)
      group.y = top;
      group.height = y - top;
    }
    // content_right: how far this row's words reach.
    if (src[i] === dst[i]) {
      let reach = labelLen[i] * CHAR_WIDTH;
      if (lines > 0) reach = Math.max(reach, longest * CHAR_WIDTH * 0.9);
      right = Math.max(right, lanes[src[i]].x + 48 + reach);
    } else if (lines > 0) {
      const middle = (lanes[src[i]].x + lanes[dst[i]].x) / 2;
      right = Math.max(right, middle + longest * CHAR_WIDTH * 0.45);
    }
  }
  let width = Math.max((lanes.length ? lanes[lanes.length - 1].x : AXIS_WIDTH) + RIGHT_MARGIN,
    right + 20);
  for (const group of folds) if (group.collapsed) width = Math.max(width, group.band[1] + 20);
  return {
    ...base, folded: Boolean(fold), ys, phases, folds, gaps,
    size: { ...base.size, width, height: y + 40 },
    expanded: [...opened].sort((a, b) => a - b), collapsed_phases: [...closed].sort((a, b) => a - b),
    options: { ...base.options, fold: Boolean(fold) }, shown,
  };
}

// A chunk's row with its badges' `shown` as `bits` (relayout's) says: the row a drawing needs.
export function withShown(row, bits) {
  let bit = 0, changed = false;
  const badges = (row.badges || []).map((badge) => {
    let shown = badge.text;
    if (badge.kind === "hops") { shown = bits & (1 << bit) ? `via ${badge.text}` : null; bit++; }
    else if (badge.annotation !== null && (badge.kind === "dnat" || badge.kind === "snat")) {
      shown = bits & (1 << bit) ? badge.text : null; bit++;
    }
    if (shown !== badge.shown) changed = true;
    return shown === badge.shown ? badge : { ...badge, shown };
  });
  return changed ? { ...row, badges } : row;
}

// Rows matching a filter ({connection: "" | "none" | id, lane: "" | index, phase: "" | kind})
// as a Uint8Array of 0/1 and their count: a scan of the index, no row fetched.
export function matchRows(index, phases, { connection = "", lane = "", phase = "" }) {
  const n = index.count, match = new Uint8Array(n);
  const conn = index.conn, src = index.src, dst = index.dst, nat = index.nat, group = index.group;
  const wantConn = connection === "" ? null : connection === "none" ? -1 : Number(connection);
  const wantLane = lane === "" ? null : Number(lane);
  let phaseOk = null;
  if (phase) phaseOk = Uint8Array.from(phases, (p) => (p.phase === phase ? 1 : 0));
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (wantConn !== null && conn[i] !== wantConn) continue;
    if (wantLane !== null && src[i] !== wantLane && dst[i] !== wantLane && nat[i] !== wantLane) continue;
    if (phaseOk !== null && !(group[i] >= 0 && phaseOk[group[i]])) continue;
    match[i] = 1;
    count++;
  }
  return { match, count };
}
