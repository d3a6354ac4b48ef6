"""Postmortems on the dashboard (captures/web/postmortem.py): the bundle of a capture of two
files (a lab run recorded on the client pod and on its node) for its owner, a full and a
redacted share link, and the diff of a healthy and a failing run as page, JSON, Markdown and
text; who may ask for which. Real lab recordings (skipped where the lab cannot run)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from captures.jobs import actions
from captures.models import Note
from tests.analysis.compare_recordings import HEALTHY, record_runs, store_run
from tests.lab.conftest import test_prefix

pytestmark = pytest.mark.django_db
DROP = "fault-drop-after-dnat"
KEYLOG = "CLIENT_RANDOM 0011 deadbeefdeadbeefkeylogsecret"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return record_runs(tmp_path_factory.mktemp("pm"), test_prefix("p"), (DROP,))


@pytest.fixture
def data_dir(tmp_path):
    with override_settings(DATA_DIR=tmp_path):
        yield tmp_path


@pytest.fixture
def users():
    make = get_user_model().objects.create_user
    return {"owner": make("owner-ana7"), "other": make("other-bo7"),
            "staff": make("staff-cy7", is_staff=True)}


@pytest.fixture
def healthy(data_dir, users, runs):
    return store_run(users["owner"], runs, HEALTHY, "checkout healthy")


@pytest.fixture
def failing(data_dir, users, runs):
    capture = store_run(users["owner"], runs, DROP, "checkout failing")
    Note.objects.create(capture=capture, target="message:4", author=users["owner"],
                        text="the SYN dies here")
    # A TLS key log where kviz keeps one (captures/jobs/keylogs.py): never part of a bundle.
    keys = data_dir / "keys" / str(capture.id)
    keys.mkdir(parents=True)
    (keys / "keylog").write_text(KEYLOG + "\n")
    return capture


def client_for(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def bundle_of(answer) -> dict[str, bytes]:
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(answer.streaming_content))) as archive:
        return {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}


def test_the_owner_bundle_holds_every_file_of_the_capture(failing, users):
    files = bundle_of(client_for(users["owner"]).get(f"/api/captures/{failing.id}/bundle"))
    stored = failing.stored_files()
    assert len(stored) == 2
    pcaps = {name: data for name, data in files.items() if name.startswith("pcap/")}
    assert sorted(pcaps) == ["pcap/1-pod-default-ubuntu.pcapng",
                             f"pcap/2-{stored[1].vantage.replace('/', '-')}.pcapng"]
    assert list(pcaps.values()) == [part.file.read_bytes() for part in stored]
    assert json.loads(files["inventory.json"]) == failing.inventory
    assert files["diagram.png"][:4] == b"\x89PNG"
    page = files["index.html"].decode()
    assert "The SYN from ubuntu" in page and "the SYN dies here" in page
    assert "pod/default/ubuntu" in page and "tcp or udp" in page  # the owner sees it all
    # No key log, by name or by content, anywhere in it.
    assert not any("key" in name for name in files)
    assert not any(b"keylogsecret" in data for data in files.values())


def test_only_the_owner_and_staff_get_a_bundle(failing, users):
    url = f"/api/captures/{failing.id}/bundle"
    assert client_for(users["other"]).get(url).status_code == 404
    assert client_for().get(url).status_code == 401
    assert client_for(users["staff"]).get(url).status_code == 200


def test_a_full_link_bundle_has_the_packets_and_the_link(failing, users):
    _link, token = actions.share_capture(users["owner"], failing, False)
    files = bundle_of(client_for().get(f"/api/share/{token}/bundle"))
    assert len([n for n in files if n.startswith("pcap/")]) == 2
    assert f"/s/{token}/" in files["index.html"].decode()


def test_a_redacted_link_bundle_leaves_out_what_the_link_does(failing, users, data_dir):
    _link, token = actions.share_capture(users["owner"], failing, True)
    files = bundle_of(client_for().get(f"/api/share/{token}/bundle"))
    assert not [n for n in files if n.startswith("pcap/") or n == "inventory.json"]
    page = files["index.html"].decode()
    assert "Withheld from this bundle" in page and "The SYN from ubuntu" in page
    node = failing.stored_files()[1].vantage.split("/", 1)[1]
    secrets = ["pod/default/ubuntu", f"node/{node}", node, "cbr0", "veth", "tcp or udp",
               str(settings.DATA_DIR), "capture.pcapng", "capture-2", "owner-ana7", KEYLOG]
    for name, data in files.items():
        text = data.decode("utf-8", "replace")
        leaked = [s for s in secrets if s in text]
        assert not leaked, (name, leaked)


def test_the_diff_api_compares_two_of_the_readers_captures(healthy, failing, users, runs):
    url = f"/api/captures/{healthy.id}/diff/{failing.id}/"
    doc = client_for(users["owner"]).get(url).json()
    assert doc["schema"] == "kviz.diff/1"
    assert doc["a"]["id"] == str(healthy.id) and doc["b"]["label"] == "checkout failing"
    assert "lost" in {f["kind"] for f in doc["findings"]["only_b"]}
    request = next(r for r in doc["requests"] if r["key"]["destination"] == "nginx")
    assert request["status"] == "differs"
    markdown = client_for(users["owner"]).get(url + "?format=markdown")
    assert markdown["Content-Disposition"].endswith('.md"')
    assert "## Findings on one side only" in markdown.content.decode()
    assert "GET nginx:80/: differs" in client_for(users["owner"]).get(
        url + "?format=text").content.decode()
    assert client_for(users["owner"]).get(url + "?format=pdf").status_code == 400
    # Both captures must be the reader's (or the reader staff): else as if missing.
    assert client_for(users["other"]).get(url).status_code == 404
    mine = store_run(users["other"], runs, HEALTHY, "bo's")
    assert client_for(users["other"]).get(
        f"/api/captures/{mine.id}/diff/{failing.id}/").status_code == 404
    assert client_for(users["staff"]).get(url).status_code == 200


def test_the_diff_page_puts_the_two_side_by_side(healthy, failing, users):
    client = client_for(users["owner"])
    detail = client.get(f"/captures/{failing.id}/").content.decode()
    assert 'id="compare-with"' in detail and str(healthy.id) in detail
    assert f"/api/captures/{failing.id}/bundle" in detail
    chosen = client.get(f"/captures/{healthy.id}/diff/", {"with": str(failing.id)})
    assert chosen.status_code == 302
    assert chosen["Location"] == f"/captures/{healthy.id}/diff/{failing.id}/"
    page = client.get(chosen["Location"]).content.decode()
    assert "Only in B: checkout failing" in page and "The SYN from ubuntu" in page
    assert "DNAT to" in page and "never answered" in page
    assert client.get(f"/captures/{healthy.id}/diff/", {"with": "nope"}).status_code == 404
    assert client_for(users["other"]).get(chosen["Location"]).status_code == 404


def test_kviz_diff_takes_two_stored_capture_ids(healthy, failing, capsys):
    from django.core.management import call_command

    call_command("kviz", "diff", str(healthy.id), str(failing.id), "--format", "json")
    doc = json.loads(capsys.readouterr().out)
    assert (doc["a"]["label"], doc["b"]["label"]) == ("checkout healthy", "checkout failing")
    assert "lost" in {f["kind"] for f in doc["findings"]["only_b"]}


def test_a_capture_still_running_has_no_bundle_nor_diff_yet(data_dir, users):
    from captures.models import Capture, Status

    def running(name):
        return Capture.objects.create(name=name, owner=users["owner"], target_kind="local",
                                      target_spec={"interface": "lo"}, limit_seconds=60,
                                      limit_packets=10, limit_bytes=10**6,
                                      status=Status.RUNNING)

    a, b = running("one"), running("two")
    client = client_for(users["owner"])
    answer = client.get(f"/api/captures/{a.id}/bundle")
    assert answer.status_code == 409 and "analysis" in answer.json()["error"]
    answer = client.get(f"/api/captures/{a.id}/diff/{b.id}/")
    assert answer.status_code == 409 and "one has no analysis yet" in answer.json()["error"]
    assert client.get(f"/captures/{a.id}/diff/{b.id}/").status_code == 409
