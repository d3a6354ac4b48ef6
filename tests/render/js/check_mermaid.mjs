// Parses every Mermaid diagram given in a JSON file ({"name": "text", ...}) with the real
// mermaid package and prints {"name": null | "error message"} as JSON. One process for all
// diagrams: mermaid takes about a second to load.
// mermaid.parse() needs a DOM (DOMPurify); jsdom provides one without a browser.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
// A `box` line's colour is checked with `new Option().style` where the DOM has no CSS.supports.
globalThis.Option = dom.window.Option;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

const diagrams = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = {};
for (const [name, text] of Object.entries(diagrams)) {
  try {
    await mermaid.parse(text);
    results[name] = null;
  } catch (error) {
    results[name] = String(error?.message ?? error);
  }
}
process.stdout.write(JSON.stringify(results));
