"""What the browser shows for bad input: a refused upload, someone else's capture, dead links."""

from __future__ import annotations

import datetime

CAPTURE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def test_a_non_pcap_upload_shows_an_error_and_creates_nothing(
        kviz_server, signed_in_page, make_user, screenshot, tmp_path):
    from captures.models import Capture

    user = make_user()
    not_a_capture = tmp_path / "notes.pcap"  # the name says pcap; the content does not
    not_a_capture.write_text("GET / HTTP/1.1\r\nHost: example\r\n\r\n" * 20)
    page = signed_in_page(user)
    page.goto("/captures/new/")
    page.select_option("#target", "upload")
    page.fill("input[name=name]", "not-a-pcap")
    page.set_input_files("#file", str(not_a_capture))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#submit")
    assert answer.value.status == 415
    error = page.locator("#form-error").inner_text()
    assert "pcap" in error.lower(), error
    screenshot(page, "new-capture-error")
    assert not Capture.objects.filter(owner=user).exists()


def test_another_users_capture_is_not_found(
        kviz_server, signed_in_page, make_user, upload_capture, corpus_path, screenshot):
    owner, stranger = make_user(), make_user()
    capture_id = upload_capture(corpus_path(CAPTURE), user=owner)
    page = signed_in_page(stranger)
    for path in (f"/captures/{capture_id}/", f"/captures/{capture_id}/live/"):
        response = page.goto(path)
        assert response.status == 404, path
        assert "Not found" in page.locator("h1").inner_text()
    screenshot(page, "not-found")
    page.goto("/")
    assert capture_id not in page.content()


def test_expired_and_revoked_share_links_show_a_clear_page(
        kviz_server, signed_in_page, anonymous_page, make_user, upload_capture, corpus_path,
        screenshot):
    from django.utils import timezone

    from captures.jobs import actions
    from captures.models import Capture, ShareLink

    owner = make_user()
    capture = Capture.objects.get(id=upload_capture(corpus_path(CAPTURE), user=owner))
    expired, expired_token = actions.share_capture(owner, capture, days=1)
    ShareLink.objects.filter(id=expired.id).update(
        expires=timezone.now() - datetime.timedelta(minutes=1))

    # Revoke through the owner's page, as a user would.
    page = signed_in_page(owner)
    page.goto(f"/captures/{capture.id}/")
    page.click("#create-share")
    revoked_url = page.locator("#share-url").input_value()
    page.locator("#share-links tr", has_text="active").locator("button").click()
    assert "revoked" in page.locator("#share-links").inner_text()

    stranger = anonymous_page()
    for url, status, words in ((f"/s/{expired_token}/", 410, "expired"),
                               (revoked_url, 410, "revoked"),
                               ("/s/not-a-token/", 404, "no such share link")):
        response = stranger.goto(url)
        assert response.status == status, url
        assert words in stranger.locator("#share-gone").inner_text()
    screenshot(stranger, "share-gone")
