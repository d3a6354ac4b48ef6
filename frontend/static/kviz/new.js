// New capture: show the fields that fit the chosen target, and filter the target list.
const select = document.getElementById("target");
const search = document.getElementById("target-search");
const upload = document.getElementById("upload-fields");
const live = document.getElementById("live-fields");
const submit = document.getElementById("submit");

function sync() {
  const isUpload = select.value === "upload";
  upload.hidden = !isUpload;
  live.hidden = isUpload;
  submit.textContent = isUpload ? "Upload and analyse" : "Start capture";
}

search.addEventListener("input", () => {
  const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const option of select.options) {
    option.hidden = !words.every((w) => option.textContent.toLowerCase().includes(w));
  }
});
select.addEventListener("change", sync);
if (select.selectedIndex < 0) select.value = "upload";
sync();
