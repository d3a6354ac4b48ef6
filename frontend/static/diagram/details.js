// The packet details panel: the model's decoded fields for one arrow (from its layout row),
// the frame's bytes and tshark's protocol tree (fetched when the panel opens), and notes.

import { esc, formatT } from "./view.js";

export function renderRowDetails(panel, row, head, options) {
  const lanes = head.lanes;
  const phase = row.group !== null && row.group !== undefined ? head.phases[row.group] : null;
  const fields = [
    ["time", formatT(row.t, 1e-6)],
    ["from", `${lanes[row.from].name} (${row.src})`],
    ["to", `${lanes[row.to].name} (${row.dst})` +
      (row.nat_to !== null && row.nat_to !== undefined ? ` → ${lanes[row.nat_to].name}` : "")],
    ["protocol", row.proto], ["flags", row.flags || "—"], ["payload bytes", row.len ?? "—"],
    ["connection", row.connection ?? "—"], ["phase", phase ? phase.title : row.phase],
    ["frame", row.frame ? `file ${row.frame[0]}, frame ${row.frame[1]}` : "—"],
    ["message", `#${row.message}`],
  ];
  const hops = (row.hop_detail || []).map((hop) =>
    `<tr><td>${esc(hop.interface)}${hop.tunnel ? ` <span class="kd-tunnel">(${esc(hop.underlay?.name || hop.tunnel)})</span>` : ""}</td><td>${esc(hop.direction ?? "")}</td><td>${esc(hop.src)} → ${esc(hop.dst)}</td><td>${esc(formatT(hop.t, 1e-6))}</td></tr>`).join("");
  const badges = (row.badges || []).map((b) =>
    `<li class="kd-badge-${esc(b.kind)}"><b>${esc(b.kind)}</b> ${esc(b.text)}${b.detail ? ` — ${esc(b.detail)}` : ""}</li>`).join("");
  panel.innerHTML = `
    <header><h3>${esc(row.label)}</h3>
      <a class="kd-permalink" href="#m-${row.message}" title="link to this arrow">#m-${row.message}</a>
      <button type="button" class="kd-close" aria-label="close details">×</button></header>
    <dl class="kd-fields">${fields.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>
    ${badges ? `<h4>Findings</h4><ul class="kd-badges">${badges}</ul>` : ""}
    ${hops ? `<h4>Seen at</h4><table class="kd-hops"><tbody>${hops}</tbody></table>` : ""}
    <section class="kd-notes" data-target="message:${row.message}"></section>
    <h4>Frame bytes</h4><pre class="kd-hex">${options.frames ? "loading…" : "not included in this share link"}</pre>
    <h4>Packet details</h4><div class="kd-lines">${options.frames ? "loading…" : "—"}</div>
    <h4>Fields (tshark)</h4><div class="kd-tree">${options.frames ? "loading…" : "—"}</div>`;
}

export function renderPhaseDetails(panel, phase, head) {
  panel.innerHTML = `
    <header><h3>${esc(phase.title)}</h3>
      <button type="button" class="kd-close" aria-label="close details">×</button></header>
    <dl class="kd-fields"><dt>phase</dt><dd>${esc(phase.phase)}</dd>
      <dt>arrows</dt><dd>${esc(phase.rows)}</dd>
      <dt>lanes</dt><dd>${esc(head.lanes[phase.lanes[0]].name)} … ${esc(head.lanes[phase.lanes[1]].name)}</dd></dl>
    <section class="kd-notes" data-target="phase:${phase.id}"></section>`;
}

export async function loadFrame(panel, api, frame) {
  const hex = panel.querySelector(".kd-hex");
  const tree = panel.querySelector(".kd-tree");
  const lines = panel.querySelector(".kd-lines");
  if (!frame) { hex.textContent = "no frame"; tree.textContent = lines.textContent = "—"; return; }
  try {
    const doc = await api.json(`frames/${frame[0]}/${frame[1]}/`);
    hex.textContent = hexDump(doc.hex);
    lines.innerHTML = "";
    lines.appendChild(linesOf(doc.details || [], true));
    tree.innerHTML = "";
    tree.appendChild(treeOf(doc.layers, true));
    tree.dataset.protocols = doc.protocols;
  } catch (error) {
    hex.textContent = `could not load the frame: ${error.message}`;
    tree.textContent = lines.textContent = "—";
  }
}

export function hexDump(hex) {
  const lines = [];
  for (let offset = 0; offset < hex.length / 2; offset += 16) {
    const bytes = [];
    let ascii = "";
    for (let i = offset; i < Math.min(offset + 16, hex.length / 2); i++) {
      const pair = hex.slice(i * 2, i * 2 + 2);
      bytes.push(pair);
      const code = parseInt(pair, 16);
      ascii += code >= 32 && code < 127 ? String.fromCharCode(code) : ".";
    }
    lines.push(`${offset.toString(16).padStart(4, "0")}  ${bytes.join(" ").padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

// Wireshark's packet details ("Internet Protocol Version 4, Src: …") as nested <details>:
// each protocol's line, open but for the Frame; what it holds, closed. Text, never HTML.
function linesOf(nodes, top) {
  const list = document.createElement("ul");
  list.className = top ? "kd-layers" : "kd-subtree";
  for (const node of nodes) {
    const item = document.createElement("li");
    if (node.children && node.children.length) {
      const details = document.createElement("details");
      if (top) details.open = !node.text.startsWith("Frame ");
      const summary = document.createElement("summary");
      summary.textContent = node.text;
      details.append(summary, linesOf(node.children, false));
      item.appendChild(details);
    } else {
      item.textContent = node.text;
    }
    list.appendChild(item);
  }
  return list;
}

// tshark's JSON tree as nested <details>: layers open at the top, their subtrees closed.
function treeOf(value, top) {
  const list = document.createElement("ul");
  list.className = top ? "kd-layers" : "kd-subtree";
  for (const [key, child] of Object.entries(value)) {
    const item = document.createElement("li");
    if (child && typeof child === "object") {
      const details = document.createElement("details");
      if (top) details.open = key !== "frame";
      const summary = document.createElement("summary");
      summary.textContent = key;
      details.append(summary, treeOf(child, false));
      item.appendChild(details);
    } else {
      const name = document.createElement("span");
      name.className = "kd-field-name";
      name.textContent = key;
      item.append(name, document.createTextNode(`: ${child}`));
    }
    list.appendChild(item);
  }
  return list;
}

// Notes for one target: the list (text always through textContent: notes are user input),
// and, unless read-only, a small form and delete buttons.
export function renderNotes(section, notes, options) {
  const target = section.dataset.target;
  const mine = notes.filter((n) => n.target === target);
  section.innerHTML = "<h4>Notes</h4>";
  const list = document.createElement("ul");
  list.className = "kd-note-list";
  for (const note of mine) {
    const item = document.createElement("li");
    item.className = "kd-note";
    const who = document.createElement("b");
    who.textContent = note.author || "note";
    const text = document.createElement("span");
    text.className = "kd-note-text";
    text.textContent = note.text;
    item.append(who, document.createTextNode(" "), text);
    if (!options.readOnly && (options.staff || note.author === options.user)) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "kd-note-delete link";
      remove.textContent = "delete";
      remove.addEventListener("click", () => options.onDelete(note));
      item.append(" ", remove);
    }
    list.appendChild(item);
  }
  if (!mine.length) list.innerHTML = '<li class="muted">none</li>';
  section.appendChild(list);
  if (options.readOnly) return;
  const form = document.createElement("form");
  form.className = "kd-note-form";
  form.innerHTML = '<textarea name="text" maxlength="2000" rows="2" placeholder="Add a note…" aria-label="note text"></textarea><button type="submit">Add note</button>';
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = form.elements.text.value.trim();
    if (text) options.onAdd(target, text);
  });
  // Keys typed into the note must not move the selection.
  form.addEventListener("keydown", (event) => event.stopPropagation());
  section.appendChild(form);
}
