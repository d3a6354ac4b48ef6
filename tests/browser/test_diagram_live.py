"""The diagram of a running lab capture: provisional arrows appended between per-IP lanes as the
live batches arrive (frontend/static/diagram/live.js), then, once the capture is stopped and
analysed, the real layout in their place, without a page reload."""

from __future__ import annotations

import re

from tests.browser.test_live_capture import start_from_form
from tests.support.services import wait_for

# Every provisional arrow drawn, as [row index, its line's x1, x2, its tooltip].
DRAWN = """() => [...document.querySelectorAll('#diagram .kd-row.kd-provisional')].map(g => {
    const line = g.querySelector('line.kd-arrow');
    return [Number(g.dataset.row), line ? Number(line.getAttribute('x1')) : null,
            line ? Number(line.getAttribute('x2')) : null, g.querySelector('title').textContent];
})"""
# Whether the newest arrow is drawn and the view has scrolled to keep it in sight.
AT_TAIL = """() => { const root = document.querySelector('#diagram');
    const scroll = root.querySelector('.kd-scroll'), n = Number(root.dataset.rows || 0);
    const last = root.querySelector(`.kd-row[data-row="${n - 1}"] line.kd-arrow, ` +
                                    `.kd-row[data-row="${n - 1}"] path.kd-arrow`);
    if (!last || scroll.scrollTop === 0) return false;
    const box = last.getBoundingClientRect(), view = scroll.getBoundingClientRect();
    return box.top >= view.top && box.bottom <= view.bottom; }"""
# Lane name -> its x, from the header.
LANES = """() => Object.fromEntries([...document.querySelectorAll('#diagram .kd-head .kd-lane')]
    .map(g => [g.querySelector('.kd-lane-name').textContent,
               Number(g.querySelector('rect').getAttribute('x')) +
               Number(g.querySelector('rect').getAttribute('width')) / 2]))"""


def ip_of(endpoint: str) -> str:
    if endpoint.startswith("["):
        return endpoint[1:endpoint.index("]")]
    host, _, port = endpoint.rpartition(":")
    return host if host and port.isdigit() and ":" not in host else endpoint


def rows(diagram) -> int:
    return int(diagram.get_attribute("data-rows") or 0)


def test_the_diagram_grows_live_then_becomes_the_analysed_layout(
        kviz_server, signed_in_page, make_user, lab, lab_traffic, screenshot):
    page = signed_in_page(make_user(host=True))
    start_from_form(page, "lab-diagram-live")
    diagram = page.locator("#diagram")
    # The live page carries the diagram, and a running capture puts it in live mode.
    page.wait_for_selector("#diagram[data-state=live]", timeout=10_000)
    wait_for(lambda: page.locator("#live-status").inner_text() == "running", 20,
             what="the capture to run")
    page.evaluate("window.kvizSamePage = true")  # gone if anything reloads the page
    # The detail page of a running capture carries the same diagram, live as well.
    detail = page.context.new_page()
    detail.goto(page.url.removesuffix("live/"))
    detail.wait_for_selector("#diagram[data-state=live]", timeout=10_000)
    lab_traffic(0.3)

    # Provisional arrows appear, and their count rises while the capture runs.
    page.wait_for_selector("#diagram .kd-row.kd-provisional", timeout=20_000)
    first = wait_for(lambda: rows(diagram), 10, what="arrows counted on the diagram")
    wait_for(lambda: rows(diagram) >= first + 10, 20, what="the provisional arrows to grow")
    assert re.fullmatch(r"live: \d+ provisional arrows.*",
                        diagram.locator(".kd-status").inner_text())
    assert diagram.get_attribute("data-state") == "live"
    # A view left at the bottom follows the newest arrows down.
    wait_for(lambda: page.evaluate(AT_TAIL), 10, what="the newest arrow in sight")
    detail.wait_for_selector("#diagram .kd-row.kd-provisional", timeout=10_000)

    # Lanes are named by IP (marked provisional) and every arrow runs between its src and dst.
    lanes = page.evaluate(LANES)
    client, service = lab.plan.client.ip, lab.plan.service("nginx").cluster_ip
    assert client in lanes and service in lanes, lanes
    assert all(re.fullmatch(r"[0-9a-f.:]+", name) for name in lanes), lanes
    # A frame with no IP packet (ARP: a row without src and dst) gets no arrow and no lane.
    added = page.evaluate("""() => { const live = window.kvizDiagram.source;
        const before = live.rowCount, lanes = live.add({thinned: 0, rows: [{n: 0, t: 0,
            src: "", dst: "", proto: "arp", len: 42, info: "arp frame"}]});
        return [lanes, live.rowCount - before, live.notIp]; }""")
    assert added == [False, 0, 1]
    facts = diagram.locator(".kd-head .kd-lane-facts").all_text_contents()
    assert facts and set(facts) == {"provisional"}, facts
    drawn = page.evaluate(DRAWN)
    assert drawn
    to_service = 0
    for _index, x1, x2, title in drawn:
        src, dst = title.splitlines()[1].split(" → ")
        if ip_of(src) != ip_of(dst):
            want = (lanes[ip_of(src)], lanes[ip_of(dst)])
            assert abs(x1 - want[0]) < 0.01 and abs(x2 - want[1]) < 0.01, (title, lanes)
        to_service += ip_of(src) == client and ip_of(dst) == service
    assert to_service, drawn
    # The drawn window is a run of consecutive arrows, in arrival order.
    indexes = [index for index, *_ in drawn]
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    screenshot(page, "diagram-live")

    # Stop: the capture completes, is analysed, and the diagram swaps in the real layout.
    live_rows = rows(diagram)
    page.click("#stop")
    page.wait_for_selector("#diagram[data-state=ready]", timeout=30_000)
    assert page.evaluate("window.kvizSamePage") is True, "the page was reloaded"
    wait_for(lambda: page.locator("#live-status").inner_text() == "completed", 10,
             what="the live view to say completed")
    # The new source is drawn on the next animation frame, its rows as their chunk arrives.
    wait_for(lambda: diagram.locator(".kd-row.kd-provisional").count() == 0, 5,
             what="the provisional arrows to go")
    page.wait_for_selector("#diagram .kd-row", timeout=5_000)
    assert "provisional" not in diagram.locator(".kd-status").inner_text()
    assert re.match(r"\d+ arrows", diagram.locator(".kd-status").inner_text())
    assert page.evaluate("window.kvizDiagram.source.head.provisional") in (None, False)
    # From its top, as a reload would show it, not at the live view's scroll offset.
    assert page.evaluate("document.querySelector('#diagram .kd-scroll').scrollTop") == 0
    # Names from the inventory instead of bare IPs, and the analysis' phases and folds.
    heads = diagram.locator(".kd-head").text_content()
    assert "ubuntu" in heads and "nginx" in heads, heads
    assert "provisional" not in heads
    assert diagram.locator(".kd-phase").count() > 0
    phases = diagram.locator(".kd-phase-title").all_text_contents()
    assert any("handshake" in text.lower() for text in phases), phases
    assert rows(diagram) >= live_rows * 0.5  # same traffic, now as analysed arrows
    screenshot(page, "diagram-live-analysed")
    # The detail page switched too, to the same layout.
    detail.wait_for_selector("#diagram[data-state=ready]", timeout=15_000)
    wait_for(lambda: detail.locator("#diagram .kd-row.kd-provisional").count() == 0, 5,
             what="the provisional arrows to go from the detail page")
    assert detail.locator("#diagram").get_attribute("data-rows") == str(rows(diagram))
    assert detail.locator("#diagram .kd-phase").count() > 0
