"""Finding captures: the list (API and page) searches by name, target, owner, status and
finding kind, and pages past 200. The finding kinds come from the analysis: stored by the
worker when an analysis completes, filled in from a stored analysis for older captures."""

from __future__ import annotations

import datetime
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from captures.analysis import CaptureFile, analyze_files
from captures.jobs import findings, retention
from captures.models import Capture, Status, TargetKind

from .conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

REFUSED = "tcp/deepflow_syn-answered-by-rst.pcap"
CLEAN = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def make(owner, name, kind=TargetKind.LAB, spec=None, status=Status.COMPLETED, kinds="",
         minutes_ago=0):
    return Capture.objects.create(
        name=name, owner=owner, target_kind=kind,
        target_spec=spec if spec is not None else {"target": "pod/default/ubuntu"},
        status=status, limit_seconds=1, limit_packets=1, limit_bytes=1, finding_kinds=kinds,
        created=timezone.now() - datetime.timedelta(minutes=minutes_ago))


@pytest.fixture
def several(users):
    alice, bob = users["alice"], users["bob"]
    return {
        "dns": make(alice, "dns-lookup", spec={"target": "pod/kube-system/coredns"},
                    kinds=",dns_retry,lost,", minutes_ago=5),
        "nginx": make(alice, "nginx-slow", spec={"target": "pod/default/nginx-a"},
                      kinds=",retransmission,", minutes_ago=4),
        "node": make(alice, "node-eth0", kind=TargetKind.LOCAL, spec={"interface": "eth0"},
                     status=Status.FAILED, kinds=None, minutes_ago=3),
        "upload": make(alice, "from-prod", kind=TargetKind.UPLOAD,
                       spec={"file_name": "prod-ingress.pcapng"}, kinds=",lost,refused,",
                       minutes_ago=2),
        "bobs": make(bob, "bob-nginx", spec={"target": "pod/default/nginx-b"},
                     kinds=",lost,", minutes_ago=1),
    }


def names(client, query: str = "") -> list[str]:
    answer = client.get(f"/api/captures/{query}")
    assert answer.status_code == 200, answer.content
    return [c["name"] for c in answer.json()["captures"]]


def test_it_finds_by_name_target_status_and_finding(several, alice_client):
    assert names(alice_client) == ["from-prod", "node-eth0", "nginx-slow", "dns-lookup"]
    assert names(alice_client, "?name=NGINX") == ["nginx-slow"]
    assert names(alice_client, "?target=coredns") == ["dns-lookup"]
    assert names(alice_client, "?target=eth0") == ["node-eth0"]
    assert names(alice_client, "?target=upload") == ["from-prod"]  # a target's kind
    assert names(alice_client, "?target=prod-ingress") == ["from-prod"]
    assert names(alice_client, "?status=failed") == ["node-eth0"]
    assert names(alice_client, "?status=failed,completed") == names(alice_client)
    # "Every capture with a lost packet": a kind is matched whole, never a part of another.
    assert names(alice_client, "?finding=lost") == ["from-prod", "dns-lookup"]
    assert names(alice_client, "?finding=retransmission,refused") == ["from-prod",
                                                                       "nginx-slow"]
    assert names(alice_client, "?finding=los") == []
    assert names(alice_client, "?finding=lost&status=completed&q=dns") == ["dns-lookup"]
    # Free text: every word in the name, the target or the owner.
    assert names(alice_client, "?q=nginx") == ["nginx-slow"]
    assert names(alice_client, "?q=pod/default") == ["nginx-slow"]
    assert names(alice_client, "?q=alice+lookup") == ["dns-lookup"]


def test_a_user_finds_only_their_own_and_staff_find_by_owner(several, alice_client, client,
                                                             users):
    assert names(alice_client, "?owner=bob") == []
    assert "bob-nginx" not in names(alice_client, "?q=bob")
    client.force_login(users["root"])
    assert names(client, "?owner=bob") == ["bob-nginx"]
    assert names(client, "?owner=BOB&finding=lost") == ["bob-nginx"]
    assert names(client, "?q=nginx") == ["bob-nginx", "nginx-slow"]
    assert names(client, "?finding=lost") == ["bob-nginx", "from-prod", "dns-lookup"]


def test_it_answers_with_the_findings_and_refuses_a_bad_search(several, alice_client):
    docs = {c["name"]: c for c in alice_client.get("/api/captures/").json()["captures"]}
    assert docs["dns-lookup"]["findings"] == ["dns_retry", "lost"]
    assert docs["node-eth0"]["findings"] is None  # not known yet
    for query, words in (("?status=done", "unknown status 'done'"),
                         ("?finding=Lost!", "is not a finding kind"),
                         ("?page=0", "page must be a positive integer"),
                         ("?per_page=500", "per_page may be at most 200"),
                         ("?pinned=maybe", "pinned must be true or false")):
        answer = alice_client.get(f"/api/captures/{query}")
        assert answer.status_code == 400 and words in answer.json()["error"], query


def test_it_pages_past_200(users, alice_client):
    alice = users["alice"]
    now = timezone.now()
    Capture.objects.bulk_create([
        Capture(name=f"c{index:03d}", owner=alice, target_kind=TargetKind.LAB,
                target_spec={"target": "pod/default/ubuntu"}, status=Status.COMPLETED,
                limit_seconds=1, limit_packets=1, limit_bytes=1,
                created=now - datetime.timedelta(seconds=index))
        for index in range(450)])
    first = alice_client.get("/api/captures/").json()
    assert (first["count"], first["pages"], first["page"]) == (450, 3, 1)
    assert len(first["captures"]) == 200 and first["previous"] is None
    assert first["next"] == "/api/captures/?page=2"
    seen = [c["name"] for c in first["captures"]]
    following = first["next"]
    while following:
        answer = alice_client.get(following).json()
        seen += [c["name"] for c in answer["captures"]]
        following = answer["next"]
    assert answer["page"] == 3 and len(answer["captures"]) == 50
    assert answer["previous"] == "/api/captures/?page=2"
    assert seen == [f"c{index:03d}" for index in range(450)]  # newest first, none twice
    small = alice_client.get("/api/captures/?per_page=20&page=3&q=c0").json()
    assert small["captures"][0]["name"] == "c040"
    assert small["next"] == "/api/captures/?q=c0&page=4&per_page=20"
    assert alice_client.get("/api/captures/?page=9").json()["captures"] == []


def test_the_page_searches_and_shows_next_and_previous(users, alice_client):
    alice = users["alice"]
    Capture.objects.bulk_create([
        Capture(name=f"p{index:03d}", owner=alice, target_kind=TargetKind.LAB,
                target_spec={}, status=Status.COMPLETED, limit_seconds=1, limit_packets=1,
                limit_bytes=1, finding_kinds=",lost," if index % 2 else "",
                created=timezone.now() - datetime.timedelta(seconds=index))
        for index in range(120)])
    page = alice_client.get("/?finding=lost&page=2").content.decode()
    assert "60 captures match; page 2 of 2" in page
    assert 'href="/?finding=lost"' in page and 'id="page-previous"' in page
    assert 'id="page-next"' not in page
    # The list keeps its rows current from the same page of the API.
    assert 'data-api="/api/captures/?finding=lost&amp;page=2&amp;per_page=50"' in page
    bad = alice_client.get("/?status=nope")
    assert bad.status_code == 400 and "unknown status" in bad.content.decode()


def test_the_worker_stores_the_finding_kinds_of_an_analysis(worker, alice_client, corpus):
    ids = {}
    for name, path in (("refused", REFUSED), ("clean", CLEAN)):
        answer = alice_client.post("/api/captures/", {"name": name, "file": SimpleUploadedFile(
            "x.pcap", (corpus / path).read_bytes())})
        assert answer.status_code == 201, answer.content
        ids[name] = answer.json()["id"]
    for capture_id in ids.values():
        wait_for(lambda i=capture_id: Capture.objects.get(id=i).status == Status.COMPLETED, 60,
                 what="the analysis")
    model = analyze_files([CaptureFile(corpus / REFUSED)])
    expected = findings.encode(model.annotations)
    model.close()
    assert "refused" in findings.decode(expected)
    assert Capture.objects.get(id=ids["refused"]).finding_kinds == expected
    assert "refused" not in (Capture.objects.get(id=ids["clean"]).finding_kinds or "")
    assert names(alice_client, "?finding=refused&q=refused") == ["refused"]


def test_older_captures_get_their_kinds_from_the_stored_analysis(users, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    capture = make(users["alice"], "analysed-before", kinds=None)
    capture.directory.mkdir(parents=True)
    # As SequenceModel.write_json writes it: the annotations before the DNS and the messages,
    # and a participant whose name says "annotations" must not confuse the reader.
    doc = {"schema": "kviz.sequence/1", "capture": {},
           "participants": [{"name": '"annotations":[{"kind":"fake"}]'}],
           "connections": [], "http": [],
           "annotations": [{"kind": "lost"}, {"kind": "retransmission"}, {"kind": "lost"},
                           {"kind": "Not A Kind"}],
           "dns": [], "messages": [{"n": i} for i in range(30000)]}
    (capture.directory / "analysis.json").write_text(json.dumps(doc, separators=(",", ":")))
    Capture.objects.filter(id=capture.id).update(
        analysis_path=f"captures/{capture.id}/analysis.json")
    missing = make(users["alice"], "file-gone", kinds=None)
    Capture.objects.filter(id=missing.id).update(analysis_path="captures/gone/analysis.json")
    settings.KVIZ_RETENTION_DAYS = 30
    assert retention.cleanup()["findings_filled"] == 1
    assert Capture.objects.get(id=capture.id).finding_kinds == ",lost,retransmission,"
    assert Capture.objects.get(id=missing.id).finding_kinds is None  # tried again later
