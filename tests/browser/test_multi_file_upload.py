"""Several files taken at once, uploaded through the form with where each was taken, listed
on the capture's page with a download each and one merged download."""

from __future__ import annotations

import re

import pytest

from tests.support.services import wait_for

PLACES = {"client": "pod/default/client", "router": "node/router", "server": "pod/default/web"}


@pytest.fixture(scope="module")
def dnat_recording(tmp_path_factory):
    from tests.support.dnat import record_dnat

    return record_dnat(tmp_path_factory.mktemp("form-dnat"), "kvf")


def shoot(page, screenshot, name: str) -> None:
    """The page as a desktop (1920 px) and a phone (390 px) show it."""
    for width, height in ((1920, 1080), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"{name}-{width}")
    page.set_viewport_size({"width": 1280, "height": 720})


def test_it_uploads_several_files_as_one_capture_and_lists_them(
        kviz_server, signed_in_page, make_user, dnat_recording, screenshot, tmp_path):
    chosen = [dnat_recording.client, dnat_recording.router, dnat_recording.server]
    page = signed_in_page(make_user())

    # 1. The form asks, for each chosen file, where it was taken.
    page.goto("/captures/new/")
    page.select_option("#target", "upload")
    page.fill("input[name=name]", "dnat-three-places")
    page.set_input_files("#file", [str(path) for path in chosen])
    fields = page.locator("#file-places input[name=vantage]")
    assert fields.count() == 3
    assert page.locator("#file-places .file-name").all_inner_texts() == [
        "client.pcapng", "router.pcapng", "server.pcapng"]
    for index, path in enumerate(chosen):
        fields.nth(index).fill(PLACES[path.stem])
    shoot(page, screenshot, "new-capture-files")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/captures/[0-9a-f-]+/$"))
    detail_url = page.url

    def analysed():
        page.goto(detail_url)
        return page.locator("#status").inner_text() == "completed"

    wait_for(analysed, 60, interval=0.5, what="the upload to be analysed")

    # 2. The page lists the files in order, where each was taken, with a download each.
    rows = page.locator("#file-list tbody tr.file")
    assert rows.count() == 3
    assert page.locator("#file-list .place").all_inner_texts() == [
        PLACES[path.stem] for path in chosen]
    for index, path in enumerate(chosen):
        link = rows.nth(index).locator("a.file-download")
        assert link.get_attribute("href").endswith(f"/pcap?file={index}")
        assert int(rows.nth(index).locator("[data-field=packets]").inner_text().split()[0]) > 0
        with page.expect_download() as download:
            link.click()
        saved = tmp_path / f"file-{index}.pcapng"
        download.value.save_as(saved)
        assert saved.read_bytes() == path.read_bytes()

    # 3. And one merged pcapng of all three.
    merged = page.locator("#download-merged")
    assert merged.inner_text() == "Download all (merged pcapng)"
    with page.expect_download() as download:
        merged.click()
    assert download.value.suggested_filename == "dnat-three-places-merged.pcapng"
    saved = tmp_path / "merged.pcapng"
    download.value.save_as(saved)
    assert saved.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # a pcapng section header
    assert saved.stat().st_size > max(path.stat().st_size for path in chosen)
    shoot(page, screenshot, "capture-files")
