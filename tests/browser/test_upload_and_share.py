"""Upload a real capture through the browser, read its analysis, share it and download it."""

from __future__ import annotations

import re

from tests.support.services import wait_for

CAPTURE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def test_it_uploads_shares_and_downloads_a_capture(
        kviz_server, anonymous_page, make_user, corpus_path, screenshot, tmp_path):
    original = corpus_path(CAPTURE)
    user = make_user("alice")

    # 1. Anonymous: the dashboard sends us to the sign-in page; sign in there.
    page = anonymous_page()
    page.goto("/")
    assert "/login/" in page.url
    screenshot(page, "login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", user.raw_password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))

    # 2. Upload through the new-capture form.
    page.goto("/captures/new/")
    page.select_option("#target", "upload")
    page.fill("input[name=name]", "skydive-dns-http")
    page.set_input_files("#file", str(original))
    screenshot(page, "new-capture")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/captures/[0-9a-f-]+/$"))
    detail_url = page.url

    # 3. The analysis is stored by the worker; the page shows it once reloaded.
    def analysed():
        response = page.goto(detail_url)
        assert response.status == 200, page.content()[:3000]
        return page.locator("#status").inner_text() == "completed"

    wait_for(analysed, 30, interval=0.5, what="the upload to be analysed")
    assert page.locator("#packets").inner_text() == "58"
    # A healthy capture: nothing broke; the details are one click away.
    assert "Nothing broke" in page.locator("#what-happened").inner_text()
    page.click("#analysis-details > summary")
    dns = page.locator("#dns").inner_text()
    assert "DNS A www.google.com → 173.194.40.147" in dns
    connections = page.locator("#connections").inner_text()
    assert "closed by FIN" in connections
    screenshot(page, "capture-detail")

    # 4. The pcap from the page's own link is the uploaded file, byte for byte.
    with page.expect_download() as download:
        page.click("#download-pcap")
    saved = tmp_path / "owner.pcap"
    download.value.save_as(saved)
    assert saved.read_bytes() == original.read_bytes()

    # 5. Share it; a browser with no session sees the same analysis.
    page.click("#create-share")
    share_url = page.locator("#share-url").input_value()
    assert "/s/" in share_url
    # The link is listed by the end of its token, to tell it from others of its kind; the
    # Copy button copies it (or, where the clipboard is refused, selects it and says so).
    token = share_url.rstrip("/").rsplit("/", 1)[1]
    assert page.locator("#share-links td.mono").first.inner_text() == f"…{token[-4:]}"
    page.click("#copy-share-url")
    for _ in range(50):
        said = page.locator("#share-url-copied").inner_text()
        if said:
            break
        page.wait_for_timeout(100)
    assert said in ("Copied.", "Selected: press Ctrl+C (⌘C) to copy."), said
    screenshot(page, "capture-detail-shared")
    stranger = anonymous_page()
    response = stranger.goto(share_url)
    assert response.status == 200
    assert "shared, read-only" in stranger.locator("h1").inner_text()
    stranger.click("#analysis-details > summary")
    assert stranger.locator("#dns").inner_text() == dns
    assert stranger.locator("#connections").inner_text() == connections
    assert stranger.locator("#diagram").count() == 1
    with stranger.expect_download() as download:
        stranger.click("#download-pcap")
    shared = tmp_path / "shared.pcap"
    download.value.save_as(shared)
    assert shared.read_bytes() == original.read_bytes()
    screenshot(stranger, "share")

    # 6. The list shows it completed, with its packet count.
    page.goto("/")
    row = page.locator("#captures tbody tr").first
    assert row.locator('[data-field="status"]').inner_text() == "completed"
    assert row.locator('[data-field="packets"]').inner_text() == "58"
    screenshot(page, "capture-list")
