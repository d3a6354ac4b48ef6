// Lays out layout variants with the browser's own fold.js (frontend/static/diagram), from the
// server's first layout and its row index, and prints them as JSON for
// tests/render/test_browser_fold.py to compare with the server's layouts. Input: a JSON file
// {"fold_js": path, "cases": {name: {"head": path, "index": path, "variants": [{fold, expand,
// collapse}], "filters": [{connection, lane, phase}]}}}.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
// fold.js is an ES module served to browsers as .js; Node wants .mjs outside a "module" package.
const copy = join(tmpdir(), `kviz-fold-${process.pid}.mjs`);
writeFileSync(copy, readFileSync(input.fold_js));
const { readIndex, relayout, matchRows } = await import(pathToFileURL(copy).href);

const out = {};
for (const [name, job] of Object.entries(input.cases)) {
  const head = JSON.parse(readFileSync(job.head, "utf8"));
  const bytes = readFileSync(job.index);
  const index = readIndex(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  out[name] = {
    variants: job.variants.map((choice) => {
      const laid = relayout(index, head, choice);
      return { ...laid, ys: Array.from(laid.ys, (y) => (Number.isNaN(y) ? null : y)),
        shown: Array.from(laid.shown) };
    }),
    filters: (job.filters || []).map((choice) => {
      const { match, count } = matchRows(index, head.phases, choice);
      const rows = [];
      for (let i = 0; i < match.length; i++) if (match[i]) rows.push(i);
      return { count, rows };
    }),
  };
}
process.stdout.write(JSON.stringify(out));
