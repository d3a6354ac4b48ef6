// Export buttons: every server format as a download, and PNG drawn from the server's SVG on a
// canvas in the browser (the server has no raster renderer, and the browser draws SVG well).

const FORMATS = [["svg", "SVG"], ["mermaid", "Mermaid"], ["plantuml", "PlantUML"],
  ["markdown", "Markdown"], ["layout", "Layout JSON"]];
const MAX_CANVAS_SIDE = 16000; // Chromium refuses larger canvases; scale down to fit

export function exportButtons(container, api, name) {
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
  png.addEventListener("click", () => downloadPng(api, name).catch((error) => {
    png.title = `PNG failed: ${error.message}`;
  }));
  container.appendChild(png);
}

export async function downloadPng(api, name) {
  const response = await fetch(api.url("export/svg"), { credentials: "same-origin" });
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
