"""A capture of several files: uploaded together with a meta each, stored byte for byte,
analysed as one path, each file and one merged pcapng downloadable, frames of any file."""

from __future__ import annotations

import heapq
import json
import subprocess
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from captures.models import Capture

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def dnat_recording(tmp_path_factory):
    from tests.support.dnat import record_dnat

    return record_dnat(tmp_path_factory.mktemp("multi-dnat"), "kvm")


def parts(recording) -> list[tuple]:
    """(file, meta) for the client pod, the router node and the server pod."""
    router_names = {str(k): v for k, v in recording.router_interfaces.items()}
    return [
        (recording.client, {"vantage": "pod/default/client", "interfaces": {}}),
        (recording.router, {"vantage": "node/router", "interfaces": router_names}),
        (recording.server, {"vantage": "pod/default/web", "interfaces": {}}),
    ]


def upload(client, chosen, name="path-upload", metas=True):
    body = {"name": name,
            "file": [SimpleUploadedFile(path.name, path.read_bytes()) for path, _ in chosen]}
    if metas:
        body["meta"] = [json.dumps({"schema": "kviz.capture-meta/1", **meta})
                        for _, meta in chosen]
    return client.post("/api/captures/", body)


def finished(client, capture_id) -> dict:
    return wait_for(lambda: (lambda d: d if d["status"] in ("completed", "failed") else None)(
        client.get(f"/api/captures/{capture_id}/").json()), 60, what="the analysis")


def tshark_fields(path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def test_several_files_are_one_capture_analysed_as_one_path(worker, alice_client,
                                                           dnat_recording, tmp_path):
    from tests.support.dnat import SERVER, VIP

    chosen = parts(dnat_recording)
    response = upload(alice_client, chosen)
    assert response.status_code == 201, response.content
    done = finished(alice_client, response.json()["id"])
    assert done["status"] == "completed", done
    capture_id = done["id"]
    assert [(f["index"], f["vantage"]) for f in done["files"]] == [
        (0, "pod/default/client"), (1, "node/router"), (2, "pod/default/web")]

    for index, (path, _meta) in enumerate(chosen):  # each file, byte for byte
        got = alice_client.get(f"/api/captures/{capture_id}/pcap?file={index}")
        assert got.status_code == 200
        assert b"".join(got.streaming_content) == path.read_bytes()
    assert alice_client.get(f"/api/captures/{capture_id}/pcap?file=3").status_code == 404

    document = json.loads(b"".join(
        alice_client.get(f"/api/captures/{capture_id}/analysis").streaming_content))
    assert document["capture"]["packets"] == sum(f["packets"] for f in done["files"])
    syn = next(m for m in document["messages"]
               if m["proto"] == "tcp" and m.get("label", "").startswith("SYN")
               and m["dst"].startswith(VIP))
    # A hop of a capture of several files names "<vantage>:<interface>".
    seen_at = [hop["interface"].split(":")[0] for hop in syn["hops"]]
    # The same SYN, seen leaving the client, crossing the router, reaching the server.
    assert seen_at[0] == "pod/default/client" and seen_at[-1] == "pod/default/web"
    assert "node/router" in seen_at
    assert any(hop["dst"].startswith(SERVER) for hop in syn["hops"])  # DNAT on the router
    dnat = next(a for a in document["annotations"] if a["kind"] == "dnat")
    assert "node/router" in dnat["where"] and dnat["where"].index("r0") < dnat["where"].index("r1")

    # A frame of the router's file (file 1) is dissected from that file.
    frame = alice_client.get(f"/api/captures/{capture_id}/frames/1/1/")
    assert frame.status_code == 200, frame.content
    originals = tshark_fields(dnat_recording.router, "frame.protocols")
    assert frame.json()["protocols"] == originals[0][0]


def test_the_merged_download_keeps_every_packet_its_time_and_its_place(
        worker, alice_client, dnat_recording, tmp_path):
    chosen = parts(dnat_recording)
    done = finished(alice_client, upload(alice_client, chosen, "merged").json()["id"])
    merged = tmp_path / "merged.pcapng"
    response = alice_client.get(f"/api/captures/{done['id']}/pcap")
    assert response.status_code == 200
    assert 'filename="merged-merged.pcapng"' in response["Content-Disposition"]
    merged.write_bytes(b"".join(response.streaming_content))

    rows = tshark_fields(merged, "frame.time_epoch", "frame.interface_name", "frame.len",
                         "frame.cap_len")
    expected = []
    for path, meta in chosen:
        for epoch, length, cap in tshark_fields(path, "frame.time_epoch", "frame.len",
                                                "frame.cap_len"):
            expected.append((epoch, length, cap, meta["vantage"]))
    assert len(rows) == len(expected)
    # Every packet once, to the nanosecond tshark prints, with its lengths.
    assert sorted((r[0], r[2], r[3]) for r in rows) == sorted(e[:3] for e in expected)
    # Merged as mergecap merges: always the earliest next packet of any file, each file's own
    # order kept. (A capture of several interfaces may hold a packet stamped a few hundred ns
    # before the one it follows: the router's did once; it is not reordered.)
    per_file: dict[str, list] = {}
    for epoch, _length, _cap, vantage in expected:
        per_file.setdefault(vantage, []).append((epoch, vantage))
    in_time_order = list(heapq.merge(*per_file.values(), key=lambda row: Decimal(row[0])))
    assert [(r[0], r[1].split(" ")[0]) for r in rows] == in_time_order
    names = {r[1] for r in rows}
    # An interface per place and interface: the router's cooked capture names r0 and r1.
    assert {"pod/default/client", "pod/default/web"} <= {n.split(" ")[0] for n in names}
    assert {"node/router r0", "node/router r1"} <= names


def test_metas_must_pair_with_files(alice_client, dnat_recording):
    chosen = parts(dnat_recording)
    body = {"name": "unpaired", "file": [SimpleUploadedFile(p.name, p.read_bytes())
                                         for p, _ in chosen],
            "meta": [json.dumps({"schema": "kviz.capture-meta/1"})]}
    response = alice_client.post("/api/captures/", body)
    assert response.status_code == 400
    assert "one `meta` per `file`" in response.json()["error"]
    assert not Capture.objects.exists()


def test_one_bad_file_refuses_the_whole_upload_and_keeps_nothing(alice_client, dnat_recording,
                                                                 settings):
    chosen = parts(dnat_recording)
    stored = settings.DATA_DIR / "captures"
    before = set(stored.iterdir()) if stored.exists() else set()
    body = {"name": "one-bad", "file": [
        SimpleUploadedFile("client.pcapng", chosen[0][0].read_bytes()),
        SimpleUploadedFile("notes.txt", b"not a capture at all\n" * 4)]}
    response = alice_client.post("/api/captures/", body)
    assert response.status_code == 415
    assert "notes.txt" in response.json()["error"]
    assert not Capture.objects.exists()
    assert (set(stored.iterdir()) if stored.exists() else set()) == before


def test_too_many_files_are_refused(alice_client, dnat_recording, settings):
    settings.KVIZ_MAX_CAPTURE_FILES = 2
    response = upload(alice_client, parts(dnat_recording), "too-many")
    assert response.status_code == 400
    assert "at most 2 files" in response.json()["error"]
