"""The interactive diagram on real captures, in headless Chromium: arrows drawn from the
layout, details with tshark's dissection, deep links, keyboard, folding, phases, exports in
every format, notes shown in the share view and the Markdown export. Screenshots of each view
go to test-artifacts/ (light and dark)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from tests.support.services import wait_for

DNS_HTTP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
KEEPALIVE = "keepalive/zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"


@pytest.fixture
def screenshot():
    """The diagram section only (the page around it is the dashboard's), light and dark."""
    from tests.browser.conftest import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, name: str) -> None:
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.locator("#diagram").screenshot(path=str(ARTIFACTS / f"{name}-{scheme}.png"))
        page.emulate_media(color_scheme="light")

    return take


def open_diagram(page, url: str):
    page.goto(url)
    page.wait_for_selector("#diagram[data-state=ready]")
    page.wait_for_selector("#diagram .kd-row")
    return page.locator("#diagram")


@pytest.fixture
def owner(make_user):
    return make_user()


def test_it_draws_arrows_and_shows_a_packets_details_with_its_dissection(
        kviz_server, signed_in_page, upload_capture, corpus_path, owner, screenshot):
    capture_id = upload_capture(corpus_path(DNS_HTTP), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/")
    assert "www.google.com" in diagram.locator(".kd-window").text_content()
    screenshot(page, "diagram-detail")

    # Click the SYN: its fields, the frame's bytes and tshark's protocol tree.
    syn = diagram.locator(".kd-row", has_text="SYN").first
    syn.locator(".kd-hit").click()
    panel = diagram.locator(".kd-details")
    panel.locator(".kd-tree > ul > li > details > summary", has_text=re.compile("^tcp$")).wait_for()
    assert "flags" in panel.locator(".kd-fields").inner_text()
    assert re.match(r"0000  [0-9a-f]{2} ", panel.locator(".kd-hex").inner_text())
    assert "ip" in [s.strip() for s in panel.locator(".kd-tree summary").all_inner_texts()]
    # Wireshark's readable lines, as its packet details pane shows them.
    lines = panel.locator(".kd-lines").inner_text()
    assert re.search(r"Internet Protocol Version 4, Src: [\d.]+, Dst: [\d.]+", lines), lines
    assert re.search(r"Transmission Control Protocol, Src Port: \d+, Dst Port: \d+", lines)
    assert "Flags: 0x002 (SYN)" in panel.locator(".kd-lines").text_content()
    assert re.search(r"#m-\d+$", page.url)
    screenshot(page, "diagram-details")

    # Keyboard: j moves to the next arrow, Esc closes, Enter opens again.
    first = diagram.locator(".kd-selected").get_attribute("data-row")
    page.keyboard.press("j")
    wait_for(lambda: diagram.locator(".kd-selected").get_attribute("data-row") != first, 5)
    assert int(diagram.locator(".kd-selected").get_attribute("data-row")) > int(first)
    page.keyboard.press("Escape")
    assert panel.is_hidden()
    page.keyboard.press("Enter")
    panel.wait_for(state="visible")

    # A deep link to one arrow: scrolled to, highlighted, details open.
    message = diagram.locator(".kd-row").nth(20).get_attribute("id")
    other = signed_in_page(owner)
    other.goto(f"/captures/{capture_id}/#{message}")
    other.wait_for_selector("#diagram[data-deep-linked]")
    other.wait_for_selector(f"#diagram #{message}.kd-selected")
    assert other.locator("#diagram .kd-details").is_visible()
    # A deep link to no arrow says so (a message of another capture, or a mistyped link).
    for broken, said in (("#m-99999999", "message 99999999 is not in this capture"),
                         ("#m-x", "names no message")):
        lost = signed_in_page(owner)
        open_diagram(lost, f"/captures/{capture_id}/{broken}")
        wait_for(lambda page=lost, said=said: said in page.locator(
            "#diagram .kd-status").inner_text(), 10)

    # Collapse a phase and open it again.
    toggle = diagram.locator("[data-toggle-phase]").first
    group = toggle.get_attribute("data-toggle-phase")
    members = diagram.locator(f'.kd-row[data-group="{group}"]')
    assert members.count() > 0
    toggle.click()
    page.wait_for_selector("#diagram .kd-closed")
    assert members.count() == 0
    assert "hidden" in diagram.locator(".kd-closed").text_content()
    screenshot(page, "diagram-phase-closed")
    diagram.locator(".kd-closed [data-toggle-phase]").click()
    # Polled with evaluate: wait_for_function compiles its predicate with eval, which kviz's
    # Content-Security-Policy forbids.
    wait_for(lambda: page.evaluate("document.querySelector('#diagram .kd-closed') === null"), 15)
    wait_for(lambda: members.count() > 0, 5)


def test_it_exports_every_format_and_keeps_notes_in_the_share_view(
        kviz_server, signed_in_page, anonymous_page, upload_capture, corpus_path, owner,
        screenshot, tmp_path):
    capture_id = upload_capture(corpus_path(DNS_HTTP), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/")

    # A note on an arrow: a marker in the diagram, escaped text.
    diagram.locator(".kd-row", has_text="SYN").first.locator(".kd-hit").click()
    page.fill(".kd-note-form textarea", "<i>slow</i> handshake?")
    page.click(".kd-note-form button")
    page.locator(".kd-note-text", has_text="<i>slow</i> handshake?").wait_for()
    page.locator("#diagram .kd-note-marker").first.wait_for()
    screenshot(page, "diagram-note")

    saved = {}
    for fmt in ("svg", "mermaid", "plantuml", "markdown", "layout", "png"):
        with page.expect_download() as download:
            page.click(f"#diagram .kd-export[data-format={fmt}]")
        path = tmp_path / f"export.{fmt}"
        download.value.save_as(path)
        saved[fmt] = path.read_bytes()
    ET.fromstring(saved["svg"])
    assert saved["mermaid"].decode().startswith("sequenceDiagram")
    assert saved["plantuml"].decode().startswith("@startuml")
    markdown = saved["markdown"].decode()
    # Notes are written into it as text: a reader's renderer shows the tags, never applies them.
    assert "```mermaid" in markdown and "&lt;i&gt;slow&lt;/i&gt; handshake?" in markdown
    assert b'"schema":"kviz.layout/1"' in saved["layout"]
    assert saved["png"].startswith(b"\x89PNG\r\n\x1a\n") and len(saved["png"]) > 2000

    # The share view: the diagram, the note read-only.
    from captures.jobs import actions
    from captures.models import Capture

    token = actions.share_capture(owner, Capture.objects.get(id=capture_id))[1]
    shared = anonymous_page()
    view = open_diagram(shared, f"/s/{token}/")
    view.locator(".kd-note-marker").first.wait_for()
    view.locator(".kd-row", has_text="SYN").first.locator(".kd-hit").click()
    view.locator(".kd-note-text", has_text="<i>slow</i> handshake?").wait_for()
    assert view.locator(".kd-note-form").count() == 0
    view.locator(".kd-tree > ul > li > details > summary", has_text=re.compile("^tcp$")).wait_for()
    screenshot(shared, "diagram-share")


def test_it_folds_repeats_and_expands_them(
        kviz_server, signed_in_page, upload_capture, corpus_path, owner, screenshot):
    capture_id = upload_capture(corpus_path(KEEPALIVE), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/")
    band = diagram.locator(".kd-fold").first
    assert "repeated" in band.text_content()
    height = float(page.evaluate("document.querySelector('#diagram .kd-body').style.height"
                                 ".replace('px','')"))
    screenshot(page, "diagram-folded")
    band.locator("[data-toggle-fold]").click()
    wait_for(lambda: page.evaluate(
        f"parseFloat(document.querySelector('#diagram .kd-body').style.height) > {height * 10}"),
        15)
    # The body grows at once; the opened fold's band is drawn with the rows around it.
    diagram.locator(".kd-fold-open").first.wait_for(timeout=15_000)
    # Scroll far down: the rows there are drawn (virtualised, fetched by chunk).
    page.evaluate("(() => { const s = document.querySelector('#diagram .kd-scroll');"
                  " s.scrollTop = s.scrollHeight / 2; })()")
    wait_for(lambda: page.evaluate(
        "document.querySelectorAll('#diagram .kd-row').length > 5 &&"
        " document.querySelectorAll('#diagram .kd-pending').length === 0"), 15)
    screenshot(page, "diagram-expanded-middle")
