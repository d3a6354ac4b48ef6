"""Deleting captures in Chromium: from the list (its row's Delete, a confirmation page, Cancel,
then Delete for real: back on the same search with a message, the files gone) and from a pinned
capture's page (the browser will not send the form until "although it is pinned" is ticked).
The HTTP side (CSRF, who may, a capture still recording) is tests/dashboard/test_delete_page.py."""

from __future__ import annotations

import re

REFUSED = "tcp/deepflow_syn-answered-by-rst.pcap"
DNS_HTTP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def test_it_deletes_from_the_list_after_asking(kviz_server, signed_in_page, make_user,
                                               upload_capture, corpus_path, screenshot):
    from captures.models import Capture

    user = make_user("dora")
    keep_id = upload_capture(corpus_path(DNS_HTTP), user=user, name="keep-me")
    doomed_id = upload_capture(corpus_path(REFUSED), user=user, name="delete-me")
    doomed = Capture.objects.get(id=doomed_id)
    assert doomed.directory.is_dir()

    page = signed_in_page(user)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/?q=me")
    row = page.locator(f'#captures tr[data-id="{doomed_id}"]')

    # 1. The row's Delete asks first; Cancel comes back to the same search, nothing deleted.
    row.get_by_role("button", name="Delete delete-me").click()
    page.wait_for_url(re.compile(rf"/captures/{doomed_id}/delete/"))
    assert page.locator("h1").inner_text() == "Delete delete-me?"
    assert "1 capture file" in page.locator("#delete-what").inner_text()
    assert page.locator("#pinned-warning").count() == 0
    screenshot(page, "capture-delete-confirm")
    page.click("#cancel-delete")
    page.wait_for_url(re.compile(r"/\?q=me$"))
    assert Capture.objects.filter(id=doomed_id).exists()

    # 2. Delete for real: a POST with the page's CSRF token, then the list, saying so.
    row.get_by_role("button", name="Delete delete-me").click()
    page.click("#confirm-delete")
    page.wait_for_url(re.compile(r"/\?q=me$"))
    assert "Deleted delete-me" in page.locator(".messages").inner_text()
    assert page.locator(f'#captures tr[data-id="{doomed_id}"]').count() == 0
    assert page.locator(f'#captures tr[data-id="{keep_id}"]').count() == 1
    assert not Capture.objects.filter(id=doomed_id).exists()
    assert not doomed.directory.exists()
    screenshot(page, "capture-delete-done")


def test_a_pinned_capture_is_deleted_only_when_that_is_ticked(kviz_server, signed_in_page,
                                                             make_user, upload_capture,
                                                             corpus_path, screenshot):
    from captures.models import Capture

    user = make_user("erin")
    capture_id = upload_capture(corpus_path(REFUSED), user=user, name="pinned-one")
    Capture.objects.filter(id=capture_id).update(pinned=True)
    page = signed_in_page(user)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/captures/{capture_id}/")
    page.click("#delete-capture")
    page.wait_for_url(re.compile(rf"/captures/{capture_id}/delete/"))
    assert "This capture is pinned" in page.locator("#pinned-warning").inner_text()
    screenshot(page, "capture-delete-pinned")

    # The button alone: the browser refuses to send the form (the tick is required).
    page.click("#confirm-delete")
    assert page.evaluate("document.getElementById('pinned-too').validity.valueMissing")
    assert page.url.endswith(f"/captures/{capture_id}/delete/")
    assert Capture.objects.filter(id=capture_id).exists()

    page.check("#pinned-too")
    page.click("#confirm-delete")
    page.wait_for_url(re.compile(r"/$"))
    assert "Deleted pinned-one" in page.locator(".messages").inner_text()
    assert not Capture.objects.filter(id=capture_id).exists()
