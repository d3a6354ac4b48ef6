"""The diagram's waits that grow with a capture, done in the browser: after the first layout,
folding, unfolding, closing phases and filtering ask the server for nothing (the row index,
frontend/static/diagram/fold.js); the SVG export draws the page's view; a view too long for one
picture says so and offers the folded or a filtered one; a Mermaid export past Mermaid's limit
comes in parts. Screenshots at 1920 and 390 px go to test-artifacts/."""

from __future__ import annotations

import pytest

from tests.support.services import wait_for

KEEPALIVE = "keepalive/zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"
EIGHT_CONNS = "dns-http/zeek_dns-search-suffix-nxdomain-then-http11-keepalive-8-conns.pcap"


@pytest.fixture
def owner(make_user):
    return make_user()


def open_diagram(page, url: str, width: int, height: int):
    page.set_viewport_size({"width": width, "height": height})
    page.goto(url)
    try:
        page.wait_for_selector("#diagram[data-state=ready]", timeout=30000)
    except Exception as exc:  # say what the page said
        raise AssertionError(page.locator("#diagram .kd-status").inner_text()) from exc
    page.wait_for_selector("#diagram .kd-row")
    return page.locator("#diagram")


def layout_requests(page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url)
            if "/layout/" in request.url else None)
    return seen


def test_it_folds_unfolds_and_filters_without_asking_the_server(
        kviz_server, signed_in_page, upload_capture, corpus_path, owner, screenshot):
    capture_id = upload_capture(corpus_path(KEEPALIVE), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/", 1920, 1080)
    # the row index follows the first screen
    wait_for(lambda: page.evaluate("Boolean(window.kvizDiagram.origin?.index)"), 10)
    folded_rows = int(page.evaluate("window.kvizDiagram.source.drawnY.length"))
    seen = layout_requests(page)

    toggle = diagram.locator(".kd-fold [data-toggle-fold]").first
    fold = toggle.get_attribute("data-toggle-fold")
    toggle.click()
    diagram.locator(".kd-fold-open").first.wait_for()
    assert int(page.evaluate("window.kvizDiagram.source.drawnY.length")) > folded_rows
    # What the page laid out is what the server lays out for the same choice.
    mine = page.evaluate("""() => { const h = window.kvizDiagram.source.head;
      return {ys: Array.from(h.ys, (y) => (Number.isNaN(y) ? null : y)), height: h.size.height,
              width: h.size.width, phases: h.phases.map((p) => [p.y_top, p.y_bottom]),
              folds: h.folds.map((f) => [f.collapsed, f.y, f.height, f.text])}; }""")
    server = page.request.get(f"/api/captures/{capture_id}/layout/?fold=1&expand={fold}").json()
    assert mine["ys"] == server["ys"]
    assert (mine["height"], mine["width"]) == (server["size"]["height"], server["size"]["width"])
    assert mine["phases"] == [[p["y_top"], p["y_bottom"]] for p in server["phases"]]
    assert mine["folds"] == [[f["collapsed"], f["y"], f["height"], f["text"]]
                             for f in server["folds"]]
    diagram.locator(".kd-fold-open [data-toggle-fold]").first.click()
    diagram.locator(".kd-fold").first.wait_for()
    assert int(page.evaluate("window.kvizDiagram.source.drawnY.length")) == folded_rows

    # Everything drawn: the SVG would be too long to read, and the page says so.
    diagram.locator(".kd-fold-all").uncheck()
    wait_for(lambda: int(page.evaluate("window.kvizDiagram.source.drawnY.length")) > 2000, 10)
    note = diagram.locator(".kd-export-note")
    note.wait_for(state="visible")
    assert "too long to read" in note.inner_text()
    assert "Export the folded one" in note.inner_text()
    assert "fold=0" in diagram.locator('.kd-export[data-format="svg"]').get_attribute("href")
    screenshot(page, "scale-1920-unfolded-note")

    # A filter: only the rows of a phase, counted, from the index.
    diagram.locator('.kd-filter[data-filter="phase"]').select_option("handshake")
    wait_for(lambda: page.evaluate("window.kvizDiagram.source.matching !== undefined"), 10)
    assert diagram.get_attribute("data-matching") == str(
        page.evaluate("window.kvizDiagram.source.matching"))
    assert int(diagram.get_attribute("data-matching")) < 10
    href = diagram.locator('.kd-export[data-format="svg"]').get_attribute("href")
    assert "phase=handshake" in href
    # only the first layout and its index were fetched; row chunks for the screen only
    assert not [url for url in seen if "/layout/?" in url or url.endswith("/layout/")], seen
    assert len([url for url in seen if "/layout/rows/" in url]) <= 3, seen

    # The SVG link downloads what the page shows.
    svg = page.request.get(href)
    assert svg.ok and svg.headers["x-kviz-arrows"] == diagram.get_attribute("data-matching")
    assert svg.text().startswith("<svg")


def test_it_offers_mermaid_parts_and_fits_a_phone(
        kviz_server, signed_in_page, upload_capture, corpus_path, owner, screenshot):
    capture_id = upload_capture(corpus_path(KEEPALIVE), owner)
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/", 390, 844)
    # The folded diagram of this capture fits one Mermaid diagram: no note.
    assert diagram.locator(".kd-export-note").is_hidden()
    diagram.locator(".kd-fold-all").uncheck()
    wait_for(lambda: int(page.evaluate("window.kvizDiagram.source.drawnY.length")) > 2000, 10)
    diagram.locator(".kd-export-note").wait_for(state="visible")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "scale-390-unfolded-note")
    answer = page.request.get(f"/api/captures/{capture_id}/export/mermaid?part=1")
    assert answer.ok and answer.headers["x-kviz-parts"] == "1"
