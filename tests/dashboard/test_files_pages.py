"""The files of a capture on its pages: where each was taken, a download each, one merged
download, and the parts that could not start with their reason; a share link shows them only
when it is a full one. And the form's path fields, as the view reads them."""

from __future__ import annotations

import html
import re
import struct

import pytest
from django.test import Client

from captures.jobs import actions
from captures.models import Capture, Status, StoredFile
from tests.support.stored import store_copy

pytestmark = pytest.mark.django_db

NOT_GRANTED = "not granted: node captures need the group 'k8s-nodes'"


def tiny_pcap(path, packets: int = 1):
    """A classic pcap of `packets` empty Ethernet frames."""
    frames = b"".join(struct.pack("<IIII", 1_700_000_000 + n, 0, 14, 14) + bytes(14)
                      for n in range(packets))
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + frames)
    return path


@pytest.fixture
def path_capture(django_user_model, settings, tmp_path):
    """A completed path capture: the client pod and its node recorded, the backend's node not
    granted."""
    settings.DATA_DIR = tmp_path / "data"
    owner = django_user_model.objects.create_user("owner")
    capture = Capture.objects.create(
        name="web-path", owner=owner, target_kind="path", status=Status.COMPLETED,
        target_spec={"from": "pod/shop/web", "to": "service/shop/api", "where": "cluster"},
        limit_seconds=60, limit_packets=1000, limit_bytes=10**6)
    for position, (vantage, role, packets) in enumerate(
            (("pod/shop/web", "client pod", 3), ("node/node-1", "client node", 5))):
        store_copy(capture, tiny_pcap(tmp_path / f"{position}.pcap", packets), position,
                   vantage)
        StoredFile.objects.filter(capture=capture, position=position).update(
            role=role, packets=packets)
    StoredFile.objects.create(capture=capture, position=2, role="backend node",
                              vantage="node/node-2", error=NOT_GRANTED)
    return capture


def page_text(response) -> str:
    assert response.status_code == 200
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ",
                                                      response.content.decode())))


def test_it_lists_each_file_with_its_download_and_names_what_was_not_captured(path_capture):
    client = Client()
    client.force_login(path_capture.owner)
    response = client.get(f"/captures/{path_capture.id}/")
    body = response.content.decode()
    text = page_text(response)
    assert "pod/shop/web client pod 3 packets" in text
    assert "node/node-1 client node 5 packets" in text
    assert f"not captured: node/node-2 (backend node) — {NOT_GRANTED}" in text
    pcap = f"/api/captures/{path_capture.id}/pcap"
    assert body.count('class="file-download"') == 2
    assert f'href="{pcap}?file=0"' in body and f'href="{pcap}?file=1"' in body
    assert f'id="download-merged" href="{pcap}"' in body
    assert "Download all (merged pcapng)" in text

    # The live page lists the same files (it shows no packets once the capture has ended).
    live = page_text(client.get(f"/captures/{path_capture.id}/live/"))
    assert f"not captured: node/node-2 (backend node) — {NOT_GRANTED}" in live


def test_a_running_capture_offers_each_file_already(path_capture):
    # A file's index is fixed from its first packet on: what is stored can be downloaded.
    Capture.objects.filter(id=path_capture.id).update(status=Status.RUNNING)
    client = Client()
    client.force_login(path_capture.owner)
    body = client.get(f"/captures/{path_capture.id}/live/").content.decode()
    assert body.count('class="file-download"') == 2


def test_a_full_share_link_shows_the_files_and_a_redacted_one_does_not(path_capture):
    _link, full = actions.share_capture(path_capture.owner, path_capture)
    _link, redacted = actions.share_capture(path_capture.owner, path_capture, redacted=True)
    anonymous = Client()

    response = anonymous.get(f"/s/{full}/")
    body, text = response.content.decode(), page_text(response)
    assert "node/node-1 client node" in text and "not captured: node/node-2" in text
    assert f'href="/api/share/{full}/pcap?file=1"' in body
    assert f'id="download-merged" href="/api/share/{full}/pcap"' in body

    response = anonymous.get(f"/s/{redacted}/")
    body = response.content.decode()
    assert 'id="files"' not in body and "pcap" not in body
    assert "node-1" not in body and "shop/web" not in body


def test_a_plain_upload_of_one_file_lists_nothing_more(settings, django_user_model, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    owner = django_user_model.objects.create_user("owner")
    capture = Capture.objects.create(
        name="one", owner=owner, target_kind="upload", status=Status.COMPLETED,
        target_spec={"file_name": "one.pcap"}, limit_seconds=60, limit_packets=1000,
        limit_bytes=10**6)
    store_copy(capture, tiny_pcap(tmp_path / "one.pcap"))
    client = Client()
    client.force_login(owner)
    body = client.get(f"/captures/{capture.id}/").content.decode()
    assert 'id="files"' not in body and 'id="download-pcap"' in body


@pytest.mark.parametrize(("fields", "expected"), [
    ({"path_from": "pod/shop/web", "path_to": "service/shop/api", "path_where": "cluster"},
     {"kind": "path", "from": "pod/shop/web", "to": "service/shop/api", "where": "cluster"}),
    ({"path_from": " shop/web ", "path_to": "pod/shop/api-0"},  # "pod/" may be left out
     {"kind": "path", "from": "pod/shop/web", "to": "pod/shop/api-0"}),
])
def test_the_form_posts_a_path_target(fields, expected, django_user_model, monkeypatch):
    started = {}

    def start(user, request):
        started.update(request)
        raise actions.ActionError("stop here", 400)

    monkeypatch.setattr(actions, "start_capture", start)
    client = Client()
    client.force_login(django_user_model.objects.create_user("someone"))
    response = client.post("/captures/new/", {"name": "p", "target": "path", **fields})
    assert response.status_code == 400
    assert started["target"] == expected


def test_a_path_without_its_ends_is_refused_with_the_reason(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("someone"))
    response = client.post("/captures/new/", {"name": "p", "target": "path",
                                              "path_from": "pod/default/ubuntu"})
    assert response.status_code == 400
    assert "a path needs the client pod it starts from" in response.content.decode()
