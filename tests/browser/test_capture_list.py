"""The capture list in Chromium: pages past the first with next and previous, a search by text
and by finding kind (a real upload analysed by the worker, plus many rows), pin and unpin."""

from __future__ import annotations

import datetime
import re

from django.utils import timezone

REFUSED = "tcp/deepflow_syn-answered-by-rst.pcap"


def test_it_pages_searches_and_pins(kviz_server, signed_in_page, make_user, upload_capture,
                                    corpus_path, screenshot):
    from captures.models import Capture, Status, TargetKind

    user = make_user("carol")
    now = timezone.now()
    Capture.objects.bulk_create([
        Capture(name=f"cap-{index:03d}", owner=user, target_kind=TargetKind.LAB,
                target_spec={"target": "pod/default/ubuntu" if index % 3 else "node/lab"},
                status=Status.COMPLETED if index % 5 else Status.FAILED,
                limit_seconds=60, limit_packets=1000, limit_bytes=10**6, bytes=1000 + index,
                packets=index, finding_kinds=",lost,retransmission," if index % 4 == 0 else "",
                created=now - datetime.timedelta(minutes=index + 1),
                finished=now - datetime.timedelta(minutes=index))
        for index in range(130)])
    upload_capture(corpus_path(REFUSED), user=user, name="refused-syn")

    page = signed_in_page(user)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/")
    assert "131 captures; page 1 of 3" in page.locator("#list-count").inner_text()
    assert page.locator("#captures tbody tr").count() == 50
    assert page.locator("#captures tbody tr").first.locator("a").inner_text() == "refused-syn"
    assert page.locator("#page-previous").count() == 0

    # 1. Next and previous.
    page.click("#page-next")
    page.wait_for_url(re.compile(r"/\?page=2$"))
    assert page.locator("#page-number").inner_text() == "Page 2 of 3"
    assert page.locator("#captures tbody tr").first.locator("a").inner_text() == "cap-049"
    page.click("#page-next")
    assert page.locator("#captures tbody tr").count() == 31
    assert page.locator("#page-next").count() == 0
    page.click("#page-previous")
    page.wait_for_url(re.compile(r"/\?page=2$"))
    screenshot(page, "capture-list-page-2")

    # 2. Every capture with a lost packet: the finding filter, then with words too.
    page.goto("/")
    page.select_option("select[name=finding]", "lost")
    page.click("#search button[type=submit]")
    page.wait_for_url(re.compile(r"finding=lost"))
    assert "33 captures match" in page.locator("#list-count").inner_text()
    findings = page.locator("#captures [data-field=findings]").all_inner_texts()
    assert len(findings) == 33 and all("lost" in text for text in findings)
    page.fill("input[name=q]", "node/lab")
    page.click("#search button[type=submit]")
    names = page.locator("#captures tbody tr a").all_inner_texts()
    assert names and all(int(n[4:]) % 12 == 0 for n in names), names  # index % 3 and % 4

    # 3. The real upload, found by what its analysis found.
    page.goto("/")
    page.fill("input[name=q]", "refused")
    page.select_option("select[name=finding]", "refused")
    page.click("#search button[type=submit]")
    page.wait_for_url(re.compile(r"finding=refused"))
    row = page.locator("#captures tbody tr")
    assert row.count() == 1 and row.locator("a").inner_text() == "refused-syn"
    assert "refused" in row.locator("[data-field=findings]").inner_text()
    screenshot(page, "capture-list-search")

    # 4. Pin it from the list: the page comes back to the same search, saying so.
    row.get_by_role("button", name="Pin refused-syn").click()
    page.wait_for_url(re.compile(r"finding=refused"))
    assert "refused-syn is pinned" in page.locator(".messages").inner_text()
    assert page.locator("#captures tbody tr .badge.pinned").count() == 1
    assert Capture.objects.get(name="refused-syn").pinned
    page.goto("/?pinned=true")
    assert page.locator("#captures tbody tr a").all_inner_texts() == ["refused-syn"]
    screenshot(page, "capture-list-pinned")
    page.get_by_role("button", name="Unpin refused-syn").click()
    page.wait_for_url(re.compile(r"pinned=true"))
    assert not Capture.objects.get(name="refused-syn").pinned
    assert page.locator("#no-match").is_visible()

    # 5. A search that makes no sense says so, on the page.
    page.goto("/?status=done")
    assert "unknown status" in page.locator("#search-error").inner_text()
