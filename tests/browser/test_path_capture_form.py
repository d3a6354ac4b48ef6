"""A path captured from the form in the lab: the client pod, its node and every pod behind the
Service recorded at once, each packet's place in the live table, each file on the page."""

from __future__ import annotations

import re

from tests.browser.test_multi_file_upload import shoot
from tests.support.services import wait_for


def test_it_captures_a_path_from_the_form_and_lists_every_place(
        kviz_server, signed_in_page, make_user, lab, lab_traffic, screenshot):
    node = f"node/{lab.plan.nodes[0].name}"
    page = signed_in_page(make_user(host=True))

    # 1. The form: a path from the lab's client pod to the nginx Service.
    page.goto("/captures/new/")
    page.select_option("#target", "path")
    assert page.locator("#path-fields").is_visible()
    assert not page.locator("#upload-fields").is_visible()
    assert page.locator("#live-fields").is_visible()  # a filter and limits, as for any target
    page.select_option("#path-where", "lab")
    assert page.locator("#path-from").get_attribute("list") == "path-from-lab"
    suggested = page.locator("#path-from-lab option").evaluate_all(
        "options => options.map(o => o.value)")
    assert "pod/default/ubuntu" in suggested
    page.fill("input[name=name]", "lab-path")
    page.fill("#path-from", "pod/default/ubuntu")
    page.fill("#path-to", "service/default/nginx")
    page.fill("input[name=filter]", "tcp port 80")
    page.fill("input[name=limit_seconds]", "120")
    assert page.locator("#submit").inner_text() == "Start path capture"
    shoot(page, screenshot, "new-capture-path")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/captures/[0-9a-f-]+/live/$"))
    live_url = page.url

    # 2. Live: the rows say where each packet was seen.
    wait_for(lambda: page.locator("#live-status").inner_text() == "running", 30,
             what="the path capture to run")
    lab_traffic()
    # Each place's rows come as its own capture reads them: wait until both have come.
    wait_for(lambda: {"pod/default/ubuntu", node} <= set(
        page.locator("#packet-rows td.at").all_inner_texts()), 30,
        what="rows seen at the client pod and at its node")
    assert "with-places" in page.locator("#packets-table").get_attribute("class")
    assert page.locator("#packets-table th.at").is_visible()
    page.click("#stop")
    wait_for(lambda: page.locator("#live-status").inner_text() == "completed", 60,
             what="the path capture to complete")
    page.goto(live_url)  # the page as it is after the end: its files, downloadable
    assert page.locator("#file-list a.file-download").count() == 4
    shoot(page, screenshot, "live-path")

    # 3. The capture's page: one file per place, with its role and a download; one merged.
    page.click("#live-done a")
    assert page.locator("#status").inner_text() == "completed"
    rows = page.locator("#file-list tbody tr.file")
    places = dict(zip(page.locator("#file-list .place").all_inner_texts(),
                      page.locator("#file-list td.role").all_inner_texts(), strict=True))
    # One node in this lab: the client's node is the backends' too, recorded once.
    assert places == {"pod/default/ubuntu": "client pod", node: "client node",
                      "pod/default/nginx-a": "backend pod",
                      "pod/default/nginx-b": "backend pod"}, places
    for index in range(rows.count()):
        assert rows.nth(index).locator("a.file-download").get_attribute(
            "href").endswith(f"/pcap?file={index}")
    # Places open at once, so their order is the order they opened in: read each by its place.
    # The client pod and its node saw the request; one backend of the two served it.
    counts = dict(zip(page.locator("#file-list .place").all_inner_texts(),
                      [int(text.split()[0]) for text in
                       rows.locator("[data-field=packets]").all_inner_texts()], strict=True))
    assert counts["pod/default/ubuntu"] > 0 and counts[node] > 0, counts
    assert counts["pod/default/nginx-a"] + counts["pod/default/nginx-b"] > 0, counts
    assert page.locator("#download-merged").is_visible()
    assert page.locator("#file-list tr.not-captured").count() == 0
    assert "path pod/default/ubuntu → service/default/nginx (lab)" in page.locator(
        "#facts").inner_text()
    shoot(page, screenshot, "capture-path")
