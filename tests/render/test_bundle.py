"""The postmortem bundle (captures/render/bundle.py) as a reader gets it: unzipped and opened in
headless Chromium with no network and no scripts, every section there, the diagram drawn inline
and as a PNG, the pcap byte for byte; a redacted bundle without the packets and saying so.
Real captures from the corpus; a note and a name that try to be HTML stay text."""

from __future__ import annotations

import json
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.render.bundle import write_bundle
from tests.render.conftest import corpus_path

PCAP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


class Elements(HTMLParser):
    """The tags, event-handler attributes and image sources of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.handlers: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.handlers += [name for name, _value in attrs if name.startswith("on")]
        self.sources += [value for name, value in attrs if tag == "img" and name == "src"]


def model_of(path: Path) -> dict:
    model = analyze_files([CaptureFile(path)], inventory=None)
    try:
        return model.to_dict()
    finally:
        model.close()


def unzip(archive: Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(into)
        top = {name.split("/")[0] for name in opened.namelist()}
    assert len(top) == 1  # one folder, so unzipping never scatters files
    return into / top.pop()


@pytest.fixture
def full_bundle(tmp_path) -> Path:
    pcap = corpus_path(PCAP)
    written = write_bundle(
        tmp_path / "b.zip", model_of(pcap), title=f"checkout {HOSTILE}",
        facts={"target": "upload x.pcap", "filter": "tcp port 80"},
        notes=[{"target": "message:3", "text": f"slow here {HOSTILE}", "author": "ana"}],
        pcaps=[("x.pcap", pcap)], inventory={"schema": "kviz.inventory/1", "pods": [],
                                             "services": [], "nodes": []},
        shares=[{"url": "http://kviz.example/s/abc/", "redacted": False,
                 "created": "2026-01-01T00:00:00+00:00", "expires": "2026-01-08T00:00:00+00:00"}],
        folder="checkout")
    assert written[0] == "checkout/index.html"
    return unzip(tmp_path / "b.zip", tmp_path / "out")


def test_it_holds_every_part_of_a_postmortem(full_bundle):
    names = {p.relative_to(full_bundle).as_posix() for p in full_bundle.rglob("*") if p.is_file()}
    assert names == {"index.html", "diagram.svg", "diagram.png", "diagram.mmd", "diagram.puml",
                     "postmortem.md", "analysis.json", "inventory.json", "pcap/x.pcap",
                     "bundle.json"}
    assert (full_bundle / "pcap/x.pcap").read_bytes() == corpus_path(PCAP).read_bytes()
    assert (full_bundle / "diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((full_bundle / "analysis.json").read_text())["schema"] == "kviz.sequence/1"
    assert (full_bundle / "diagram.mmd").read_text().startswith("sequenceDiagram")
    page = (full_bundle / "index.html").read_text()
    # No script and no handler at all (the hostile text is text), and a policy that would
    # stop a script and every fetch.
    elements = Elements()
    elements.feed(page)
    assert "script" not in elements.tags and not elements.handlers
    assert "x" not in elements.sources  # the hostile <img src=x> stayed text
    assert "default-src 'none'" in page
    for heading in ("What happened", "Capture", "Diagram", "Who is who", "Timing", "Findings",
                    "Notes", "Files", "Share links"):
        assert f">{heading}</h2>" in page or f">{heading}</h3>" in page, heading


def test_it_opens_offline_in_chromium_with_its_images(full_bundle, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    asked: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("request", lambda request: asked.append(request.url))
            page.goto((full_bundle / "index.html").as_uri())
            page.wait_for_load_state("load")
            text = page.inner_text("main")
            assert "What happened" in text and "Who is who" in text
            assert "www.google.com" in text  # the DNS name the capture asked for
            assert HOSTILE in text  # the hostile note and title, shown as typed
            assert page.locator("main img[src='x']").count() == 0
            # The inline SVG is drawn with its lanes, the PNG decoded.
            box = page.locator("#diagram svg").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 200
            page.click("#diagram summary")
            assert page.evaluate("document.querySelector('img.png').naturalWidth") > 300
            assert page.inner_text("#files").count("http://kviz.example/s/abc/") == 1
            page.screenshot(path=str(tmp_path / "bundle.png"))
        finally:
            browser.close()
    # It asked for nothing but its own files.
    assert asked and all(url.startswith(full_bundle.as_uri()) for url in asked), asked


def test_a_redacted_bundle_has_no_packets_and_says_what_it_left_out(tmp_path):
    pcap = corpus_path(PCAP)
    written = write_bundle(tmp_path / "r.zip", model_of(pcap), title="shared",
                           withheld=["the packets: no pcap file, no frame bytes"])
    assert not any("/pcap/" in name or name.endswith("inventory.json") for name in written)
    root = unzip(tmp_path / "r.zip", tmp_path / "out")
    page = (root / "index.html").read_text()
    assert "Withheld from this bundle" in page and "no pcap file" in page
    assert not (root / "pcap").exists()


def test_the_cli_writes_a_bundle_of_its_files(tmp_path):
    import subprocess
    import sys

    pcap = corpus_path(PCAP)
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "incident-postmortem.zip"
    done = subprocess.run([sys.executable, "manage.py", "kviz", "analyze", str(pcap),
                           "--format", "bundle", "--out", str(out)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = unzip(out, tmp_path / "out")
    assert folder.name == "incident"
    assert (folder / "pcap" / pcap.name).read_bytes() == pcap.read_bytes()
    assert json.loads((folder / "analysis.json").read_text())["capture"]["packets"] == 58
    missing = subprocess.run([sys.executable, "manage.py", "kviz", "analyze", str(pcap),
                              "--format", "bundle"], cwd=root, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "--out" in missing.stderr
