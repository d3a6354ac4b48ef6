// New capture: show the fields that fit the chosen target, filter the target list, ask where
// each uploaded file was taken, and offer a path's ends for the place it runs in.
const $ = (id) => document.getElementById(id);
const select = $("target");
const search = $("target-search");
const upload = $("upload-fields");
const live = $("live-fields");
const path = $("path-fields");  // absent when no path can be captured
const submit = $("submit");
const file = $("file");
const places = $("file-places");

const SUBMIT = { upload: "Upload and analyse", path: "Start path capture" };

function show(fieldset, shown) {
  if (!fieldset) return;
  fieldset.hidden = !shown;
  // A hidden fieldset is disabled too, so nothing in it is sent: files chosen before switching
  // to a live target would otherwise turn the capture into an upload.
  fieldset.disabled = !shown;
}

function sync() {
  const kind = select.value === "upload" || select.value === "path" ? select.value : "live";
  show(upload, kind === "upload");
  show(path, kind === "path");
  show(live, kind !== "upload");
  for (const id of ["path-from", "path-to"]) if ($(id)) $(id).required = kind === "path";
  submit.textContent = SUBMIT[kind] ?? "Start capture";
}

function listPlaces() {
  // One "taken at" field per chosen file, in the files' order: the server pairs the n-th
  // `vantage` with the n-th `file`.
  places.replaceChildren();
  for (const chosen of file.files) {
    const item = $("file-place").content.firstElementChild.cloneNode(true);
    item.querySelector(".file-name").textContent = chosen.name;
    item.querySelector(".vantage").setAttribute("aria-label", `${chosen.name} taken at`);
    places.append(item);
  }
  places.hidden = file.files.length === 0;
}

function syncWhere() {
  // Each place has its own pods and Services to suggest.
  const where = $("path-where").value;
  $("path-from").setAttribute("list", `path-from-${where}`);
  $("path-to").setAttribute("list", `path-to-${where}`);
}

search.addEventListener("input", () => {
  const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const option of select.options) {
    option.hidden = !words.every((w) => option.textContent.toLowerCase().includes(w));
  }
});
select.addEventListener("change", sync);
file.addEventListener("change", listPlaces);
if (path) {
  $("path-where").addEventListener("change", syncWhere);
  syncWhere();
}
if (select.selectedIndex < 0) select.value = "upload";
sync();
listPlaces();
