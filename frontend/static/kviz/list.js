// Capture list: counters, status and progress stay current by polling the JSON API while any
// capture is unfinished (one request every 2 s for the whole list, however many rows).
import { FINAL, formatBytes, getJSON, setBadge } from "./common.js";

const table = document.getElementById("captures");
const POLL_MS = 2000;

function progress(c) {
  // The nearest limit decides: a capture stops at whichever it reaches first.
  if (FINAL.has(c.status)) return 1;
  if (!c.limits || c.target?.kind === "upload") return null;
  const { packets, bytes, elapsed } = c.counters;
  return Math.min(1, Math.max(packets / c.limits.packets, bytes / c.limits.bytes,
                              elapsed / c.limits.seconds));
}

function update(c) {
  const row = table.querySelector(`tr[data-id="${c.id}"]`);
  if (!row) return false;  // a capture started elsewhere: a reload shows it
  row.dataset.status = c.status;
  setBadge(row.querySelector('[data-field="status"]'), c.status);
  row.querySelector('[data-field="packets"]').textContent = c.counters.packets;
  row.querySelector('[data-field="bytes"]').textContent = formatBytes(c.counters.bytes);
  if (c.target?.kind !== "upload") {
    row.querySelector('[data-field="elapsed"]').textContent = `${c.counters.elapsed.toFixed(1)} s`;
  }
  const bar = row.querySelector('[data-field="progress"]');
  const value = progress(c);
  if (bar && FINAL.has(c.status)) bar.remove();  // finished: nothing left in progress
  else if (bar && value === null) bar.removeAttribute("value");
  else if (bar) bar.value = value;
  const link = row.querySelector("a");
  link.href = FINAL.has(c.status) ? `/captures/${c.id}/` : `/captures/${c.id}/live/`;
  return true;
}

async function poll() {
  try {
    const { captures } = await getJSON(table.dataset.api);
    const unknown = captures.some((c) => !update(c) && !FINAL.has(c.status));
    if (unknown) location.reload();
    if (captures.some((c) => !FINAL.has(c.status))) setTimeout(poll, POLL_MS);
  } catch {
    setTimeout(poll, POLL_MS * 2);  // the server restarting: try again, slower
  }
}

if (table) poll();
