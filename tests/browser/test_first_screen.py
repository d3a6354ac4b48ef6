"""A big capture's page opens on its diagram's first screen while the worker lays out the rest,
says so, and shows the whole diagram in its place once it is laid out, without a reload.

The state between the worker's announcement and the end of its layout is made here as the
worker makes it (the analysis run again, then captures.jobs.diagram_cache.begin_first, holding
the layout's lock), with the first screen set to a few messages of a corpus capture, so the
test decides when it ends."""

from __future__ import annotations

from captures.models import Capture
from tests.browser.test_multi_file_upload import shoot
from tests.dashboard.test_first_screen import FIRST_SCREEN, hold_first_screen
from tests.support.services import wait_for

EIGHT_CONNS = "dns-http/zeek_dns-search-suffix-nxdomain-then-http11-keepalive-8-conns.pcap"


def test_the_page_shows_the_first_screen_then_the_whole_diagram(
        kviz_server, signed_in_page, upload_capture, corpus_path, make_user, screenshot):
    owner = make_user()
    capture = Capture.objects.get(id=upload_capture(corpus_path(EIGHT_CONNS), owner))
    total = capture.summary["messages"]
    assert total > FIRST_SCREEN
    pending = hold_first_screen(capture)  # as between the worker's announcement and its end
    try:
        page = signed_in_page(owner)
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(f"/captures/{capture.id}/")
        diagram = page.locator("#diagram")
        page.wait_for_selector("#diagram[data-state=ready] .kd-row")
        status = diagram.locator(".kd-status")
        shown = int(diagram.get_attribute("data-rows"))
        assert 0 < shown <= FIRST_SCREEN
        assert status.inner_text().startswith(
            f"the first {shown} of {total} arrows (the rest is being laid out…)")
        assert diagram.get_attribute("data-first-paint")  # the first screen is the first paint
        shoot(page, screenshot, "first-screen")
        # It keeps asking while the worker lays out; the answer is the first screen again.
        page.wait_for_timeout(2500)
        assert int(diagram.get_attribute("data-rows")) == shown
    finally:
        pending.finish()
    wait_for(lambda: int(diagram.get_attribute("data-rows")) > shown, 15,
             what="the whole diagram in place of the first screen")
    wait_for(lambda: "being laid out" not in status.inner_text(), 5, what="the status")
    assert status.inner_text().startswith(f"{diagram.get_attribute('data-rows')} arrows")
    # The whole layout, drawn: its last arrow can be scrolled to.
    page.evaluate("document.querySelector('#diagram .kd-scroll').scrollTop = 1e9")
    wait_for(lambda: page.locator("#diagram .kd-row").count() > 0, 5, what="rows at the end")
    shoot(page, screenshot, "first-screen-then-whole")
