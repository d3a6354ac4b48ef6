// Capture page: the share link is shown once, so a click selects all of it for copying.
const shareUrl = document.getElementById("share-url");
shareUrl?.addEventListener("focus", () => shareUrl.select());

// A button that copies it, and says so (or says to copy by hand where the page may not).
const copyButton = document.getElementById("copy-share-url");
const copied = document.getElementById("share-url-copied");
copyButton?.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(shareUrl.value);
    copied.textContent = "Copied.";
  } catch {
    shareUrl.focus();
    copied.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
});
