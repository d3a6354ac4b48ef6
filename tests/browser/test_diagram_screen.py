"""The diagram on the reader's screen: the whole width of a wide one, nothing wider than a phone's,
filters that leave only the matching arrows, fold toggles worked from the keyboard. Screenshots
at 1920 and 390 px go to test-artifacts/."""

from __future__ import annotations

import pytest

from tests.support.services import wait_for

DNS_HTTP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
EIGHT_CONNS = "dns-http/zeek_dns-search-suffix-nxdomain-then-http11-keepalive-8-conns.pcap"
KEEPALIVE = "keepalive/zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"

# What the reader sees of the drawing: the scroll box, or less when the drawing is narrower.
SEEN_WIDTH = """() => {
  const scroll = document.querySelector('#diagram .kd-scroll');
  const drawing = document.querySelector('#diagram .kd-window').getBoundingClientRect().width;
  return Math.min(scroll.clientWidth, drawing);
}"""


@pytest.fixture
def owner(make_user):
    return make_user()


def open_diagram(page, url: str, width: int, height: int):
    page.set_viewport_size({"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("#diagram[data-state=ready]")
    page.wait_for_selector("#diagram .kd-row")
    return page.locator("#diagram")


def test_it_gives_the_diagram_the_window_and_opens_details_without_narrowing_it(
        kviz_server, signed_in_page, upload_capture, corpus_path, owner, screenshot):
    capture_id = upload_capture(corpus_path(DNS_HTTP), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/", 1920, 1080)
    assert diagram.locator(".kd-scroll").bounding_box()["width"] > 1500
    assert page.evaluate("document.documentElement.scrollWidth") <= 1920
    before = page.evaluate(SEEN_WIDTH)

    diagram.locator(".kd-row", has_text="SYN").first.locator(".kd-hit").click()
    diagram.locator(".kd-details").wait_for(state="visible")
    assert page.evaluate(SEEN_WIDTH) == before
    screenshot(page, "screen-1920-details")

    # Narrower than drawing and details together: the details lie over the drawing.
    page.set_viewport_size({"width": 1000, "height": 900})
    wait_for(lambda: page.evaluate(
        "document.querySelector('#diagram .kd-main').classList.contains('kd-over')"), 5)
    seen = page.evaluate(SEEN_WIDTH)
    page.keyboard.press("Escape")
    assert page.evaluate(SEEN_WIDTH) == seen


def test_it_fits_a_phone(kviz_server, signed_in_page, upload_capture, corpus_path, owner,
                         screenshot):
    capture_id = upload_capture(corpus_path(DNS_HTTP), owner)
    page = signed_in_page(owner)
    for url in ("/", "/captures/new/", f"/captures/{capture_id}/"):
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(url)
        page.wait_for_load_state("load")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
    diagram = open_diagram(page, f"/captures/{capture_id}/", 390, 844)
    diagram.locator(".kd-row", has_text="SYN").first.locator(".kd-hit").click()
    panel = diagram.locator(".kd-details")
    panel.wait_for(state="visible")
    # Readable: the details take the diagram's width, not a sliver beside it.
    assert panel.bounding_box()["width"] >= 300
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "screen-390-details")


def test_it_shows_only_the_arrows_a_filter_matches(
        kviz_server, signed_in_page, upload_capture, corpus_path, owner, screenshot):
    capture_id = upload_capture(corpus_path(EIGHT_CONNS), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/", 1920, 1080)
    total = int(diagram.get_attribute("data-rows"))
    status = diagram.locator(".kd-status")
    assert diagram.locator(".kd-clear-filters").is_hidden()

    connection = diagram.locator('.kd-filter[data-filter="connection"] option').nth(3)
    value = connection.get_attribute("value")
    diagram.locator('.kd-filter[data-filter="connection"]').select_option(value)
    wait_for(lambda: " of " in status.inner_text(), 15)
    matching = int(diagram.get_attribute("data-matching"))
    assert 0 < matching < total
    assert status.inner_text().startswith(f"{matching} of {total} arrows")
    wait_for(lambda: page.evaluate("document.querySelectorAll('#diagram .kd-row').length > 0"), 5)
    assert diagram.locator(".kd-dim").count() == 0
    assert diagram.locator(".kd-row").count() <= matching
    drawn = page.evaluate(
        "[...document.querySelectorAll('#diagram .kd-row')].map(r => +r.dataset.row)")
    connections = page.evaluate(
        "async (rows) => { const s = window.kvizDiagram.source;"
        " return Promise.all(rows.map(async (i) => (await s.rowAsync(i)).connection)); }", drawn)
    assert set(connections) == {int(value)}
    screenshot(page, "screen-1920-filtered")

    diagram.locator(".kd-clear-filters").click()
    wait_for(lambda: status.inner_text().startswith(f"{total} arrows"), 15)
    assert diagram.locator(".kd-clear-filters").is_hidden()


def test_it_folds_and_unfolds_repeats_from_the_keyboard(
        kviz_server, signed_in_page, upload_capture, corpus_path, owner):
    capture_id = upload_capture(corpus_path(KEEPALIVE), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/", 1920, 1080)
    toggle = diagram.locator(".kd-fold [data-toggle-fold]").first
    fold = toggle.get_attribute("data-toggle-fold")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.focus()
    page.keyboard.press("Enter")
    opened = diagram.locator(f'.kd-fold-open [data-toggle-fold="{fold}"]')
    opened.wait_for()
    # The focus stays on the toggle through the redraw, so the next key folds it again.
    wait_for(lambda: page.evaluate(
        f"document.activeElement?.dataset?.toggleFold === '{fold}'"), 5)
    assert opened.get_attribute("aria-expanded") == "true"
    page.keyboard.press(" ")
    diagram.locator(f'.kd-fold [data-toggle-fold="{fold}"]').wait_for()
    assert diagram.get_attribute("data-state") == "ready"

