// Live view: packets from the capture's WebSocket (docs/api.md, "Live view").
//
// Every event has a seq; we remember the last one and, on every (re)connection, answer the
// server's hello with {"resume_after": lastSeq}, so a dropped socket (a restarted Redis or web
// process, a laptop waking up) resumes with no gap and no repeat. The seqs seen are kept on
// the section as ranges (data-seqs="1-57"), with data-gaps counting holes, for people and tests.
import { FINAL, formatBytes, postJSON, setBadge } from "./common.js";

const root = document.getElementById("live");
const MAX_ROWS = 2000;  // the table keeps the newest rows; the stored pcap keeps them all
const $ = (id) => document.getElementById(id);

const state = { lastSeq: 0, ranges: [], gaps: 0, thinned: 0, status: root?.dataset.status,
                elapsed: Number(root?.dataset.elapsed || 0), elapsedAt: performance.now(),
                retry: 0, socket: null, places: false, seen: 0 };

function noteSeq(seq) {
  if (seq > state.lastSeq + 1 && state.lastSeq > 0) state.gaps += 1;
  const last = state.ranges[state.ranges.length - 1];
  if (last && seq === last[1] + 1) last[1] = seq; else state.ranges.push([seq, seq]);
  state.lastSeq = seq;
  root.dataset.seqs = state.ranges.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(",");
  root.dataset.lastSeq = seq;
  root.dataset.gaps = state.gaps;
}

function showCounters(counters) {
  if (!counters) return;
  // The counters are the recorder's as last saved, which can trail the rows this page
  // already holds (each event counts as seen every row and thinned packet it carried):
  // never show fewer packets than the table has.
  $("live-packets").textContent = Math.max(counters.packets, state.seen);
  $("live-bytes").textContent = formatBytes(counters.bytes);
  state.elapsed = counters.elapsed;
  state.elapsedAt = performance.now();
  $("live-elapsed").textContent = counters.elapsed.toFixed(1);
}

function addRows(rows) {
  const body = $("packet-rows");
  const fragment = document.createDocumentFragment();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.className = `p-${r.proto}`;
    const time = new Date(r.t * 1000).toISOString().slice(11, 23);
    // A capture of several places (a path) says where each packet was seen: `at`, with `n`
    // counted per file. The column shows once a row carries it.
    if (r.at && !state.places) {
      state.places = true;
      $("packets-table").classList.add("with-places");
    }
    for (const [text, cls] of [[r.n, "num"], [time, "num"], [r.at ?? "", "at"], [r.src],
                               [r.dst], [r.proto, "proto"], [r.len, "num"], [r.info]]) {
      const td = document.createElement("td");
      td.textContent = text;  // text, never HTML: packet fields come from the network
      if (cls) td.className = cls;
      tr.append(td);
    }
    fragment.append(tr);
  }
  body.append(fragment);
  while (body.rows.length > MAX_ROWS) body.deleteRow(0);
  const scroller = body.closest(".scroll");
  scroller.scrollTop = scroller.scrollHeight;
}

function showStatus(status, error) {
  state.status = status;
  root.dataset.status = status;
  setBadge($("live-status"), status);
  const stop = $("stop");
  if (stop) stop.disabled = FINAL.has(status) || status === "stopping";
  if (FINAL.has(status)) {
    $("live-done").hidden = false;
    if (error) $("live-done").prepend(`${error}. `);
  }
}

function handle(event) {
  if (event.kind === "hello") {
    showStatus(event.status);
    state.socket.send(JSON.stringify({ resume_after: state.lastSeq }));
    return;
  }
  if (event.kind === "error" || typeof event.seq !== "number") return;
  if (event.seq <= state.lastSeq) return;  // already shown (the server should never resend)
  noteSeq(event.seq);
  if (event.kind === "batch") state.seen += (event.rows || []).length + (event.thinned || 0);
  showCounters(event.counters);
  if (event.kind === "batch") {
    if (event.redacted) $("live-redacted").hidden = false;
    if (event.thinned) {
      state.thinned += event.thinned;
      const note = $("live-thinned");
      note.hidden = false;
      note.textContent = `${state.thinned} packets were left out of this view to keep up; ` +
        "the stored capture has every one of them.";
    }
    addRows(event.rows || []);
  } else if (event.kind === "status") {
    showStatus(event.status, event.error);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${root.dataset.ws}`);
  state.socket = socket;
  $("live-connection").textContent = "connecting…";
  socket.onopen = () => {
    state.retry = 0;
    root.dataset.connections = Number(root.dataset.connections || 0) + 1;
    $("live-connection").textContent = "live";
  };
  socket.onmessage = (message) => handle(JSON.parse(message.data));
  socket.onclose = (closing) => {
    if (FINAL.has(state.status)) { $("live-connection").textContent = "ended"; return; }
    // 4410: the share link was revoked or expired, 4403: refused; neither comes back.
    if (closing.code === 4410 || closing.code === 4403) {
      $("live-connection").textContent = closing.reason || "this link no longer works";
      return;
    }
    // Back off up to 5 s (30 s when the server has too many viewers: 4429); resume_after on
    // the next hello fills whatever we missed.
    const delay = closing.code === 4429 ? 30000 : Math.min(5000, 250 * 2 ** state.retry);
    state.retry += 1;
    $("live-connection").textContent = `reconnecting in ${(delay / 1000).toFixed(1)} s…`;
    setTimeout(connect, delay);
  };
}

function tick() {
  // Between batches (an idle capture sends none) the clock still runs.
  if (state.status === "running") {
    const seconds = state.elapsed + (performance.now() - state.elapsedAt) / 1000;
    $("live-elapsed").textContent = seconds.toFixed(1);
  }
}

if (root) {
  $("stop")?.addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const capture = await postJSON(button.dataset.url);
      showStatus(capture.status);
    } catch (error) {
      button.disabled = false;
      $("live-connection").textContent = `stop failed: ${error.message}`;
    }
  });
  connect();
  setInterval(tick, 500);
}
