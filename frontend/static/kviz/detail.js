// Capture page: the share link is shown once, so a click selects all of it for copying.
const shareUrl = document.getElementById("share-url");
shareUrl?.addEventListener("focus", () => shareUrl.select());
