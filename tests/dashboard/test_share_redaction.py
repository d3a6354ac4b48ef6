"""What a share link shows, answer by answer: every API answer, the page and the WebSocket's
events a link reaches, for a full and a redacted link, checked field by field against the
whitelists of captures.web.redaction. A field the whitelist does not list fails; so does a
server path anywhere, and, for a redacted link, any name of the owner, target, filter, vantage
point or interface. Real captures: uploads from the corpus (with metadata naming a vantage and
interfaces), a DNAT recorded through a router namespace, and a live capture of this host's
loopback (whose vantage names the host)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from captures.web import redaction

from . import live_client
from .conftest import wait_for
from .test_local_capture import free_udp_port, send_datagrams, start_local

pytestmark = pytest.mark.django_db(transaction=True)

@pytest.fixture(scope="module")
def dnat_recording(tmp_path_factory):
    from tests.support.dnat import record_dnat

    return record_dnat(tmp_path_factory.mktemp("share-dnat"), "kvr")


def upload(client, name, data: bytes, meta: dict) -> str:
    response = client.post("/api/captures/", {
        # The file's name says where it was taken, as a user's often does.
        "name": name, "file": SimpleUploadedFile(f"{name}-on-node-secret.pcap", data),
        "meta": json.dumps({"schema": "kviz.capture-meta/1", **meta})})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def finished(client, capture_id) -> dict:
    def final():
        doc = client.get(f"/api/captures/{capture_id}/").json()
        return doc if doc["status"] in ("completed", "failed", "interrupted") else None

    return wait_for(final, 60, what=f"capture {capture_id} to finish")


@pytest.fixture
def captures(worker, alice_client, corpus, dnat_recording):
    """{capture id: its filter} of four finished captures, each with a note."""
    port = free_udp_port()
    ids = {
        upload(alice_client, "two-ifaces", (corpus / "linktype/zeek_pcapng-two-interfaces-dns"
                                            ".pcapng").read_bytes(),
               {"vantage": "node/secret-node-7"}): "",
        upload(alice_client, "cooked", (corpus / "linktype/zeek_sll2-tls13-handshake-sni-alpn-"
                                        "openjdk.pcap").read_bytes(),
               {"vantage": "pod/prod/payments-7f9", "interfaces": {"2": "veth-secret9"}}): "",
        upload(alice_client, "dnat", dnat_recording.router.read_bytes(),
               {"vantage": "node/router-secret",
                "interfaces": {str(k): v for k, v in
                               dnat_recording.router_interfaces.items()}}): "",
    }
    live = start_local(alice_client, "loopback", port, seconds=30)
    wait_for(lambda: alice_client.get(f"/api/captures/{live}/").json()["counters"]["bytes"] > 0,
             15, what="the loopback capture to run")
    send_datagrams(port, 12, 0.5)
    wait_for(lambda: alice_client.get(f"/api/captures/{live}/").json()["counters"]["packets"]
             >= 12, 10, what="12 packets")
    assert alice_client.post(f"/api/captures/{live}/stop/").status_code == 202
    ids[live] = f"udp and dst port {port}"
    for capture_id in ids:
        assert finished(alice_client, capture_id)["status"] == "completed"
        assert alice_client.post(f"/api/captures/{capture_id}/notes/",
                                 {"target": "message:0", "text": "why so slow?"},
                                 content_type="application/json").status_code == 201
    return ids


# -- the table -----------------------------------------------------------------------------------

NOTES = {"notes": [redaction.NOTE]}
TEXT = None  # an export that is not JSON: only the words are checked
# (what, path after /api/share/<token>/, whitelist, redacted link's status)
ANSWERS = [
    ("capture", "", redaction.CAPTURE, 200),
    ("analysis", "analysis", redaction.SEQUENCE, 200),
    ("layout head", "layout/", redaction.LAYOUT, 200),
    ("layout head, unfolded", "layout/?fold=0", redaction.LAYOUT, 200),
    ("layout head, lean", "layout/?fold=1&part=lean", redaction.LAYOUT, 200),
    ("layout rows", "layout/rows/0/", redaction.LAYOUT, 200),
    ("layout rows, unfolded", "layout/rows/0/?fold=0", redaction.LAYOUT, 200),
    ("notes", "notes/", NOTES, 200),
    ("frame", "frames/0/1/", redaction.FRAME, 403),
    ("pcap", "pcap", TEXT, 403),
    ("export layout", "export/layout", redaction.LAYOUT, 200),
    *[(f"export {fmt}", f"export/{fmt}", TEXT, 200)
      for fmt in ("svg", "mermaid", "plantuml", "markdown")],
]
# The owner reads the same paths under /api/captures/<id>/; a full link must show all of it.
SAME_AS_OWNER = {"analysis", "layout head", "layout head, unfolded", "layout head, lean",
                 "layout rows",
                 "layout rows, unfolded", "notes", "export layout"}


def unlisted(value, spec, view: str, at: str = "$") -> list[str]:
    """The fields of `value` that `spec` does not let `view` see."""
    if isinstance(spec, dict) and isinstance(value, dict):
        found = []
        for key, item in value.items():
            rule = spec.get(key)
            if rule is None or (rule == redaction.FULL and view == redaction.REDACTED):
                found.append(f"{at}.{key}")
            elif not isinstance(rule, redaction.Renamed):
                found += unlisted(item, rule, view, f"{at}.{key}")
        return found
    if isinstance(spec, list) and isinstance(value, list):
        return [problem for index, item in enumerate(value)
                for problem in unlisted(item, spec[0], view, f"{at}[{index}]")]
    return []


def server_paths(text: str) -> list[str]:
    roots = {str(settings.DATA_DIR), str(settings.DATA_DIR.resolve())}
    return [root for root in roots if root in text] + \
        re.findall(r"/captures/[0-9a-f-]{36}/", text)


def secrets_of(owner, capture_id, capture_filter) -> set[str]:
    """What the owner sees and a redacted link must not: vantages, interface names, filter."""
    analysis = json.loads(b"".join(owner.get(f"/api/captures/{capture_id}/analysis")
                                   .streaming_content))
    found = {f["vantage"] for f in analysis["capture"]["files"]}
    found |= {hop["interface"] for message in analysis["messages"]
              for hop in message["hops"] if hop["interface"]}
    found |= {hop["interface"] for note in analysis["annotations"]
              for hop in (note.get("from_hop"), note.get("to_hop")) if hop}
    # File names: as uploaded, and as stored (the analysis' warnings name that one).
    found |= {f["path"].rsplit("/", 1)[-1] for f in analysis["capture"]["files"]}
    doc = owner.get(f"/api/captures/{capture_id}/").json()
    found |= {f["file_name"] for f in doc["files"]}
    found |= {doc["owner"], os.uname().nodename, socket.gethostname()}
    return {word for word in found | {capture_filter} if word}


def named(text: str, words: set[str]) -> list[str]:
    return [word for word in words
            if re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w.-])", text)
            or (len(word) > 6 and word in text)]


def strings_of(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("view", [redaction.FULL_LINK, redaction.REDACTED])
def test_a_share_link_shows_only_what_its_whitelist_lists(view, captures, alice_client):
    client = Client()  # anonymous: whoever the link was handed to
    problems: list[str] = []
    live_rows = 0
    for capture_id, capture_filter in captures.items():
        secrets = secrets_of(alice_client, capture_id, capture_filter)
        token = alice_client.post(f"/api/captures/{capture_id}/share/",
                                  {"redacted": view == redaction.REDACTED},
                                  content_type="application/json").json()["token"]
        seen_secrets: set[str] = set()
        for what, path, spec, refused in ANSWERS:
            where = f"{capture_id[:8]} {view} {what}"
            answer = client.get(f"/api/share/{token}/{path}")
            status = refused if view == redaction.REDACTED else 200
            if answer.status_code != status:
                problems.append(f"{where}: {answer.status_code}, not {status}")
                continue
            raw = body(answer)
            text = raw.decode("utf-8", "replace")
            problems += [f"{where}: server path {p}" for p in server_paths(text)]
            if status != 200 or what == "pcap":
                continue
            if spec is not TEXT:
                doc = json.loads(raw)
                text = "\n".join(strings_of(doc))  # as read, not as escaped in JSON
                problems += [f"{where}: {field} is not listed" for field in
                             unlisted(doc, spec, view)]
                if view == redaction.FULL_LINK and what in SAME_AS_OWNER:
                    mine = json.loads(body(alice_client.get(f"/api/captures/{capture_id}/{path}")))
                    if doc != mine:
                        problems.append(f"{where}: differs from the owner's")
            if view == redaction.REDACTED:
                problems += [f"{where}: names {word!r}" for word in named(text, secrets)]
            else:
                seen_secrets |= set(named(text, secrets))
        if view == redaction.FULL_LINK:  # the words looked for are really there to be hidden
            assert seen_secrets >= secrets - {os.uname().nodename, socket.gethostname()}, \
                (capture_id, secrets - seen_secrets)
        capture = client.get(f"/api/share/{token}/").json()
        assert capture["pcap"] is (view == redaction.FULL_LINK)
        problems += check_page(client, token, view, secrets)
        socket_problems, rows = check_socket(token, view, secrets)
        problems += socket_problems
        live_rows += rows
    assert not problems, "\n".join(problems)
    # The loopback capture's packets: shown live to a full link, to a redacted one not at all.
    assert (live_rows > 0) is (view == redaction.FULL_LINK)


def check_page(client, token: str, view: str, secrets: set[str]) -> list[str]:
    page = client.get(f"/s/{token}/")
    where = f"{view} page"
    if page.status_code != 200:
        return [f"{where}: {page.status_code}"]
    context = page.context
    problems = []
    for key, spec in redaction.PAGE.items():
        if key in context and isinstance(spec, dict):
            problems += [f"{where}: {field} is not listed"
                         for field in unlisted(context[key], spec, view, key)]
        if key in context and spec == redaction.FULL and view == redaction.REDACTED:
            problems.append(f"{where}: {key} is shown")
    html = page.content.decode()
    problems += [f"{where}: server path {p}" for p in server_paths(html)]
    if view == redaction.REDACTED:
        problems += [f"{where}: names {word!r}" for word in named(html, secrets)]
    return problems


def check_socket(token: str, view: str, secrets: set[str]) -> tuple[list[str], int]:
    async def events():
        from channels.testing import WebsocketCommunicator

        from kviz.asgi import application

        # Not live_client.connect: the hello is one of the messages to check.
        communicator = WebsocketCommunicator(application, f"/ws/share/{token}/",
                                             headers=live_client.SAME_ORIGIN)
        connected, code = await communicator.connect(timeout=10)
        assert connected, code
        hello = await communicator.receive_json_from(timeout=10)
        await communicator.send_json_to({"resume_after": 0})
        rest = await live_client.events_until(communicator, live_client.is_final, 15)
        await communicator.disconnect()
        return [hello, *rest]

    problems, rows = [], 0
    for event in asyncio.run(events()):
        where = f"{view} ws {event.get('kind')} {event.get('seq')}"
        spec = redaction.EVENTS.get(event["kind"], {"seq": redaction.SHOWN,
                                                    "kind": redaction.SHOWN})
        problems += [f"{where}: {field} is not listed" for field in unlisted(event, spec, view)]
        text = "\n".join(strings_of(event))
        problems += [f"{where}: server path {p}" for p in server_paths(text)]
        if view == redaction.REDACTED:
            problems += [f"{where}: names {word!r}" for word in named(text, secrets)]
        rows += len(event.get("rows") or [])
    return problems, rows
