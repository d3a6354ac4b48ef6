"""The diagram endpoints' permissions and answers: layout chunks, one frame's dissection,
exports, notes. An owner, a teammate (another user: 404), staff, and share links (read-only;
a redacted link refuses frames and the pcap alike). Real capture from the corpus, real tshark."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from captures.jobs import actions, runner
from captures.models import Capture, Status
from tests.render.conftest import corpus_path
from tests.support.stored import store_copy

PCAP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(tmp_path):
    with override_settings(DATA_DIR=tmp_path):
        yield tmp_path


@pytest.fixture
def users():
    make = get_user_model().objects.create_user
    return {"owner": make("ana", password="pw"), "other": make("bo", password="pw"),
            "staff": make("cy", password="pw", is_staff=True)}


@pytest.fixture
def capture(data_dir, users):
    source = corpus_path(PCAP)
    row = Capture.objects.create(name="dns-http", owner=users["owner"], target_kind="upload",
                                 target_spec={"file_name": "x.pcap"}, limit_seconds=1,
                                 limit_packets=1, limit_bytes=1, status=Status.COMPLETED)
    store_copy(row, source)
    for key, value in runner.analyse(row).items():
        setattr(row, key, value)
    row.save()
    return row


def client_for(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def share_token(capture, users, redacted: bool) -> str:
    return actions.share_capture(users["owner"], capture, redacted)[1]


def body_of(answer) -> dict:
    return json.loads(b"".join(answer.streaming_content) if answer.streaming else answer.content)


def test_it_serves_the_layout_head_and_row_chunks_to_the_owner(capture, users):
    client = client_for(users["owner"])
    head = body_of(client.get(f"/api/captures/{capture.id}/layout/"))
    assert head["schema"] == "kviz.layout/1"
    assert head["row_count"] == len(head["ys"]) > 0
    chunk = body_of(client.get(f"/api/captures/{capture.id}/layout/rows/0/"))
    assert chunk["start"] == 0 and chunk["rows"][0]["frame"][0] == 0
    assert client.get(f"/api/captures/{capture.id}/layout/rows/99/").status_code == 404
    # A closed phase keeps its header; its own rows take no room.
    closed = body_of(client.get(f"/api/captures/{capture.id}/layout/?collapse=0"))
    assert closed["collapsed_phases"] == [0]
    in_phase = [row["index"] for row in chunk["rows"] if row["group"] == 0]
    assert in_phase and all(closed["ys"][i] is None for i in in_phase)
    assert all(head["ys"][i] is not None for i in in_phase)
    assert client.get(f"/api/captures/{capture.id}/layout/?expand=x").status_code == 400


def test_it_dissects_one_frame_for_the_owner_and_hides_it_from_others(capture, users):
    url = f"/api/captures/{capture.id}/frames/0/3/"
    answer = client_for(users["owner"]).get(url)
    assert answer.status_code == 200
    doc = body_of(answer)
    assert doc["protocols"].endswith(":dns") and "dns" in doc["layers"]
    assert doc["hex"].startswith(doc["hex"][:12]) and len(doc["hex"]) == 2 * 74
    assert client_for(users["staff"]).get(url).status_code == 200
    assert client_for(users["other"]).get(url).status_code == 404
    assert Client().get(url).status_code == 401
    assert client_for(users["owner"]).get(f"/api/captures/{capture.id}/frames/0/9999/"
                                          ).status_code == 404
    assert client_for(users["owner"]).get(f"/api/captures/{capture.id}/frames/1/3/"
                                          ).status_code == 404


@pytest.mark.parametrize("fmt", ["svg", "mermaid", "plantuml", "markdown", "layout"])
def test_it_exports_each_format_to_the_owner_only(capture, users, fmt):
    url = f"/api/captures/{capture.id}/export/{fmt}"
    answer = client_for(users["owner"]).get(url)
    assert answer.status_code == 200
    body = (b"".join(answer.streaming_content) if answer.streaming else answer.content).decode()
    assert "attachment" in answer["Content-Disposition"]
    if fmt == "svg":
        ET.fromstring(body)
    elif fmt == "mermaid":
        assert body.startswith("sequenceDiagram")
    elif fmt == "plantuml":
        assert body.startswith("@startuml")
    elif fmt == "markdown":
        assert "```mermaid" in body
    else:
        assert json.loads(body)["schema"] == "kviz.layout/1"
    assert client_for(users["other"]).get(url).status_code == 404
    assert Client().get(url).status_code == 401


def test_it_serves_the_row_index_and_exports_the_pages_view(capture, users):
    from captures.render.rowindex import read_index

    client = client_for(users["owner"])
    head = body_of(client.get(f"/api/captures/{capture.id}/layout/"))
    answer = client.get(f"/api/captures/{capture.id}/layout/?fold=1&part=index")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/octet-stream"
    index = read_index(b"".join(answer.streaming_content))
    assert index["header"]["count"] == head["row_count"]
    # The SVG of a filtered view draws only its arrows, streamed.
    connection = max(c["id"] for c in head["connections"])
    svg = client.get(f"/api/captures/{capture.id}/export/svg?fold=0&connection={connection}")
    assert svg.streaming and svg.status_code == 200
    root = ET.fromstring(b"".join(svg.streaming_content))
    assert int(svg["X-Kviz-Arrows"]) == index["conn"].count(connection)
    assert float(root.get("height")) < head["size"]["height"]
    whole = client.get(f"/api/captures/{capture.id}/export/svg")
    assert int(whole["X-Kviz-Arrows"]) == sum(y is not None for y in head["ys"])
    assert client.get(f"/api/captures/{capture.id}/export/svg?phase=nope").status_code == 400
    assert client.get(f"/api/captures/{capture.id}/export/svg?lane=x").status_code == 400
    mermaid = client.get(f"/api/captures/{capture.id}/export/mermaid?part=1")
    assert mermaid.status_code == 200 and mermaid["X-Kviz-Parts"] == "1"
    assert client.get(f"/api/captures/{capture.id}/export/mermaid?part=0").status_code == 400
    for redacted in (False, True):
        token = share_token(capture, users, redacted=redacted)
        shared = Client().get(f"/api/share/{token}/export/svg?fold=0")
        assert shared.status_code == 200
        ET.fromstring(b"".join(shared.streaming_content))
        assert Client().get(f"/api/share/{token}/layout/?part=index").status_code == 200


def test_a_share_link_reads_but_a_redacted_one_refuses_packets(capture, users):
    open_token = share_token(capture, users, redacted=False)
    redacted = share_token(capture, users, redacted=True)
    anonymous = Client()
    assert anonymous.get(f"/api/share/{open_token}/frames/0/3/").status_code == 200
    assert anonymous.get(f"/api/share/{redacted}/frames/0/3/").status_code == 403
    assert anonymous.get(f"/api/share/{redacted}/pcap").status_code == 403
    for token in (open_token, redacted):
        assert anonymous.get(f"/api/share/{token}/layout/").status_code == 200
        assert anonymous.get(f"/api/share/{token}/export/mermaid").status_code == 200
        # read-only: no note may be added or removed through a share link
        assert anonymous.post(f"/api/share/{token}/notes/", {"target": "message:1",
                                                               "text": "x"}).status_code == 405
    assert anonymous.get("/api/share/not-a-token/layout/").status_code == 404


def test_notes_are_added_listed_exported_and_deleted_by_their_author(capture, users):
    owner, staff = client_for(users["owner"]), client_for(users["staff"])
    url = f"/api/captures/{capture.id}/notes/"
    created = owner.post(url, {"target": "message:3", "text": "<b>why</b> no answer?"},
                         content_type="application/json")
    assert created.status_code == 201
    note = created.json()
    assert note["author"] == "ana" and note["text"] == "<b>why</b> no answer?"
    staff_note = staff.post(url, {"target": "phase:0", "text": "slow DNS"},
                            content_type="application/json").json()
    bad = [{"target": "row:1", "text": "x"}, {"target": "message:1", "text": ""},
           {"target": "message:1", "text": "x" * 2001}, ["not", "an", "object"]]
    for body in bad:
        assert owner.post(url, body, content_type="application/json").status_code == 400
    assert client_for(users["other"]).get(url).status_code == 404
    markdown = owner.get(f"/api/captures/{capture.id}/export/markdown").content.decode()
    assert "why" in markdown and "slow DNS" in markdown
    token = share_token(capture, users, redacted=True)
    shared = Client().get(f"/api/share/{token}/notes/").json()["notes"]
    assert [n["text"] for n in shared] == ["<b>why</b> no answer?", "slow DNS"]
    assert all(n["author"] is None for n in shared)  # redacted: no names
    # The owner may not delete staff's note; staff may delete anyone's; the author their own.
    assert owner.delete(f"{url}{staff_note['id']}/").status_code == 403
    assert staff.delete(f"{url}{note['id']}/").status_code == 200
    assert owner.delete(f"{url}{note['id']}/").status_code == 404
    assert [n["text"] for n in owner.get(url).json()["notes"]] == ["slow DNS"]
