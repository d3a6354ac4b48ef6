"""A lab capture started from the form, watched live in the browser, stopped from the page."""

from __future__ import annotations

import re

from tests.support.services import wait_for

POD = "lab:pod/default/ubuntu"


def seqs_are_contiguous(page) -> str:
    live = page.locator("#live")
    assert live.get_attribute("data-gaps") == "0", live.get_attribute("data-seqs")
    seqs = live.get_attribute("data-seqs")
    assert re.fullmatch(r"1-\d+", seqs), f"seqs seen: {seqs}"
    return seqs


def start_from_form(page, name: str, server: str = "") -> None:
    """Start a capture of the lab pod from the form of `server` (default: the suite's)."""
    page.goto(f"{server}/captures/new/")
    page.fill("#target-search", "ubuntu")
    page.select_option("#target", POD)
    page.fill("input[name=name]", name)
    page.fill("input[name=filter]", "tcp port 80 or udp port 53")
    page.fill("input[name=limit_seconds]", "120")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/captures/[0-9a-f-]+/live/$"))


def counter(page) -> int:
    return int(page.locator("#live-packets").inner_text())


def test_it_streams_a_lab_capture_and_stops_it(
        kviz_server, signed_in_page, make_user, lab_traffic, screenshot):
    page = signed_in_page(make_user(host=True))
    start_from_form(page, "lab-live")
    wait_for(lambda: page.locator("#live-status").inner_text() == "running", 20,
             what="the capture to run")
    lab_traffic()
    first = wait_for(lambda: counter(page), 20, what="packets in the live counter")
    wait_for(lambda: counter(page) > first, 10, what="the counter to rise")
    wait_for(lambda: page.locator("#packet-rows tr").count() >= 10, 10, what="packet rows")
    rows = page.locator("#packet-rows").inner_text()
    assert ":80" in rows and "dns" in rows
    # The counter never trails the table (rows and counters arrive together; the counters
    # are the recorder's as last saved), sampled in one go in the page.
    for _ in range(5):
        shown, listed = page.evaluate(
            "[Number(document.getElementById('live-packets').textContent),"
            " document.querySelectorAll('#packet-rows tr').length]")
        assert shown >= listed, (shown, listed)
        page.wait_for_timeout(200)
    screenshot(page, "live-view")

    page.click("#stop")
    wait_for(lambda: page.locator("#live-status").inner_text() == "completed", 20,
             what="the capture to complete")
    assert page.locator("#stop").is_disabled()
    assert not page.locator("#live-done").is_hidden()
    seqs_are_contiguous(page)
    screenshot(page, "live-view-completed")

    page.click("#live-done a")
    assert page.locator("#status").inner_text() == "completed"
    # One vantage point (the pod): the Service by name, its DNS lookup, connections closed,
    # in the analysis' details (folded under "What happened", so the diagram shows first).
    assert page.locator("#what-happened").is_visible()
    assert not page.locator("#dns").is_visible()
    page.click("#analysis-details > summary")
    assert "nginx" in page.locator("#dns").inner_text()
    assert "closed by FIN" in page.locator("#connections").inner_text()
