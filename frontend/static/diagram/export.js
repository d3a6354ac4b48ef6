// Export buttons: every server format as a download, and PNG drawn from the server's SVG on a
// canvas in the browser (the server has no raster renderer, and the browser draws SVG well).

const FORMATS = [["svg", "SVG"], ["mermaid", "Mermaid"], ["plantuml", "PlantUML"],
  ["markdown", "Markdown"], ["layout", "Layout JSON"]];
const MAX_CANVAS_SIDE = 16000; // Chromium refuses larger canvases; scale down to fit
// Past this many arrows one picture stops being read (~60,000 px tall): the page says so and
// offers the folded or a filtered one. Mermaid's own limit is per diagram (captures/render).
export const LONG_ARROWS = 2000;
const MERMAID_ARROWS = 400;

// 12345 -> "12,345" (toLocaleString loads the locale data: ~100 ms on a page's first call)
export function thousands(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }

export function exportButtons(container, api, name) {
  let svgQuery = "";
  for (const [format, label] of FORMATS) {
    const link = document.createElement("a");
    link.className = "button kd-export";
    link.dataset.format = format;
    link.href = api.url(`export/${format}`);
    link.setAttribute("download", "");
    link.textContent = label;
    container.appendChild(link);
  }
  const png = document.createElement("button");
  png.type = "button";
  png.className = "kd-export";
  png.dataset.format = "png";
  png.textContent = "PNG";
  png.addEventListener("click", () => downloadPng(api, name, svgQuery).catch((error) => {
    png.title = `PNG failed: ${error.message}`;
  }));
  container.appendChild(png);
  const note = document.createElement("p");
  note.className = "kd-export-note";
  note.setAttribute("role", "status");
  note.hidden = true;
  container.after(note);
  // The SVG and PNG draw what the page shows (folded or not, the filters); `view` says how
  // many arrows that is, and how many the folded view has, to say when it is too long.
  return {
    update(view) {
      const params = new URLSearchParams({ fold: view.fold ? "1" : "0" });
      for (const [key, value] of Object.entries(view.choice || {})) if (value) params.set(key, value);
      svgQuery = "?" + params.toString();
      container.querySelector('[data-format="svg"]').href = api.url(`export/svg${svgQuery}`);
      const parts = Math.ceil(view.foldedArrows / MERMAID_ARROWS);
      const mermaid = container.querySelector('[data-format="mermaid"]');
      mermaid.href = api.url("export/mermaid");
      const words = [];
      if (view.arrows > LONG_ARROWS) {
        words.push(`This view draws ${thousands(view.arrows)} arrows ` +
          `(${thousands(Math.round(view.height / 1000))} k px tall): too long to read as one picture.`);
        if (!view.fold && view.foldedArrows < view.arrows) {
          words.push(`<a href="${api.url("export/svg?fold=1")}" download>Export the folded one</a> ` +
            `(${thousands(view.foldedArrows)} arrows)` + (view.filtered ? "" : ","));
        }
        if (!view.filtered) {
          const offered = !view.fold && view.foldedArrows < view.arrows; // the folded export, above
          words.push(`${offered ? "or choose" : "Choose"} a connection, participant or phase above: ` +
            "the SVG then draws only those arrows.");
        }
      }
      if (parts > 1) {
        const links = [];
        for (let part = 1; part <= Math.min(parts, 12); part++) {
          links.push(`<a href="${api.url(`export/mermaid?part=${part}`)}" download>${part}</a>`);
        }
        words.push(`Mermaid draws at most ${MERMAID_ARROWS} arrows a diagram: the folded diagram is ` +
          `${parts} Mermaid parts (${links.join(" ")}${parts > 12 ? " …" : ""}); the Markdown export holds them all.`);
      }
      note.innerHTML = words.join(" ");
      note.hidden = words.length === 0;
    },
  };
}

export async function downloadPng(api, name, query = "") {
  const response = await fetch(api.url("export/svg" + query), { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${response.status}`);
  const text = await response.text();
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = doc.documentElement;
  const width = parseFloat(svg.getAttribute("width")) || 800;
  const height = parseFloat(svg.getAttribute("height")) || 600;
  const scale = Math.min(2, MAX_CANVAS_SIDE / width, MAX_CANVAS_SIDE / height);
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  try {
    const image = new Image();
    await new Promise((resolve, reject) => {
      image.onload = resolve;
      image.onerror = () => reject(new Error("the SVG could not be drawn"));
      image.src = url;
    });
    const canvas = document.createElement("canvas");
    canvas.width = Math.ceil(width * scale);
    canvas.height = Math.ceil(height * scale);
    const context = canvas.getContext("2d");
    context.fillStyle = "#ffffff"; // the SVG's own background may be transparent
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${name}.png`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } finally {
    URL.revokeObjectURL(url);
  }
}
