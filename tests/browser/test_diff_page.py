"""The compare page as a reader uses it: from a failing capture's page, "Compare with…" the
healthy one, then A and B side by side on a 1,920 px screen and one under the other on a
390 px phone, the difference that matters (the SYN lost after the DNAT) on one side only, and
the bundle downloaded from the capture page. Real lab runs (skipped where the lab cannot run);
screenshots in test-artifacts/ (diff-1920-*, diff-390-*)."""

from __future__ import annotations

import re
import zipfile

import pytest

from captures.jobs import actions
from tests.analysis.compare_recordings import HEALTHY, record_runs, store_run
from tests.browser.conftest import ARTIFACTS
from tests.lab.conftest import test_prefix

DROP = "fault-drop-after-dnat"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return record_runs(tmp_path_factory.mktemp("diffpage"), test_prefix("w"), (DROP,))


def test_compare_a_failing_capture_with_a_healthy_one(kviz_server, signed_in_page, make_user,
                                                       anonymous_page, runs, screenshot,
                                                       tmp_path):
    owner = make_user()
    healthy = store_run(owner, runs, HEALTHY, "checkout healthy")
    failing = store_run(owner, runs, DROP, "checkout failing")
    page = signed_in_page(owner)
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(f"/captures/{healthy.id}/")
    page.select_option("#compare-with", str(failing.id))
    page.click("#compare-go")
    page.wait_for_url(f"**/captures/{healthy.id}/diff/{failing.id}/")
    assert "lost" in page.inner_text("#findings-only-b")
    assert page.inner_text("#findings-only-a").strip().endswith("None.")
    item = page.locator(".diff-item", has_text="GET nginx:80/")
    def row(aspect: str):
        return item.locator("tr").filter(
            has=page.locator("td.aspect", has_text=re.compile(f"^{aspect}$")))

    dnat = row("DNAT to")
    assert dnat.get_attribute("class") == "differs"
    assert "nginx-b" in dnat.locator("td.side-a").inner_text()
    assert "10.244" in dnat.locator("td.side-b").inner_text()
    outcome = row("outcome")
    assert outcome.locator("td.side-b").inner_text() == "never answered"
    # Side by side: B's column to the right of A's, on one line.
    a_box = outcome.locator("td.side-a").bounding_box()
    b_box = outcome.locator("td.side-b").bounding_box()
    assert b_box["x"] > a_box["x"] + a_box["width"] - 1 and abs(b_box["y"] - a_box["y"]) < 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 1920
    screenshot(page, "diff-1920")

    # A phone: the page never grows wider than the screen, A's value above B's, labelled.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    a_box = outcome.locator("td.side-a").bounding_box()
    b_box = outcome.locator("td.side-b").bounding_box()
    assert b_box["y"] >= a_box["y"] + a_box["height"] - 1 and b_box["width"] > 250
    screenshot(page, "diff-390")

    # The bundle from the capture page, as a download.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/captures/{failing.id}/")
    page.locator("#postmortem").screenshot(path=str(ARTIFACTS / "postmortem-panel.png"))
    names = download_bundle(page, tmp_path / "bundle.zip")
    assert sum("/pcap/" in name for name in names) == 2
    assert any(name.endswith("/index.html") for name in names)

    # A redacted link's reader gets the redacted bundle from the share page.
    _link, token = actions.share_capture(owner, failing, True)
    reader = anonymous_page()
    reader.goto(f"/s/{token}/")
    names = download_bundle(reader, tmp_path / "redacted.zip")
    assert not [name for name in names if "/pcap/" in name or name.endswith("inventory.json")]
    assert reader.locator("#compare-form").count() == 0  # no other captures to compare with


def download_bundle(page, path) -> list[str]:
    with page.expect_download() as download:
        page.click("#download-bundle")
    download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()
