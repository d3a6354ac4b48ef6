"""A meshed pod captured on eth0 alone misses its application's traffic to the sidecar (on lo),
and kviz says so; the same traffic captured with `-i any` holds it, and kviz says nothing.

One run of the lab's mesh traffic is recorded at once on the client pod's eth0, on all of its
interfaces, and on the node; a second run, without the sidecar, on the pod's eth0. What the
`-i any` file shows (the app's connections to 127.0.0.1:15001) is the truth the eth0 file's
note is judged against.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captures.adapters.decode import LiveDecoder
from captures.analysis import CaptureFile, analyze_files, happened, narrative
from captures.lab import netns, scenarios
from captures.lab.scenarios import Scenario, Vantage
from captures.render.export import render
from tests.lab.conftest import requires_lab

pytestmark = requires_lab

KIND = "capture_missed_loopback"
POD = "pod/default/ubuntu"
MESHED = Scenario("sidecar-capture", "mesh requests seen on eth0, on every interface, on the node",
                  True, (Vantage("eth0.pcapng", "pod", "eth0", "ubuntu"),
                         Vantage("any.pcapng", "pod", "any", "ubuntu"),
                         Vantage("node.pcapng", "node", "any")), scenarios.mesh_requests)
PLAIN = Scenario("plain-capture", "one request without a sidecar, seen on eth0", False,
                 (Vantage("eth0.pcapng", "pod", "eth0", "ubuntu"),), scenarios.one_head_request)


class Recording:
    def __init__(self, lab, scenario: Scenario, out_dir: Path):
        self.lab, self.out_dir = lab, out_dir
        scenarios.run(lab, scenario, out_dir)
        self.inventory = json.loads((out_dir / "inventory.json").read_text())

    def files(self, *names: str) -> list[CaptureFile]:
        return [CaptureFile.from_path(self.out_dir / name) for name in names]

    def model(self, *names: str, inventory: bool = True):
        return analyze_files(self.files(*names), inventory=self.inventory if inventory else None)

    def analyze(self, *names: str, inventory: bool = True) -> dict:
        return self.model(*names, inventory=inventory).to_dict()


@pytest.fixture(scope="module")
def meshed(lab, tmp_path_factory) -> Recording:
    return Recording(lab, MESHED, tmp_path_factory.mktemp("meshed"))


@pytest.fixture(scope="module")
def plain(lab, tmp_path_factory) -> Recording:
    return Recording(lab, PLAIN, tmp_path_factory.mktemp("plain"))


def notes(doc: dict) -> list[dict]:
    return [a for a in doc["annotations"] if a["kind"] == KIND]


def outbound_redirects(doc: dict) -> list[dict]:
    return [a for a in doc["annotations"] if a["kind"] == "sidecar"
            and a["direction"] == "outbound" and a["port"] == 15001]


# -- the ground truth: what eth0 misses --------------------------------------------------------


def test_the_app_traffic_to_its_sidecar_is_on_lo_only(meshed):
    everything = meshed.analyze("any.pcapng")
    assert len(outbound_redirects(everything)) >= scenarios.MESH_REQUESTS // 2
    on_lo = {hop["interface"] for m in everything["messages"] if m["dst"].endswith(":15001")
             for hop in m["hops"]}
    assert on_lo == {"lo"}
    eth0 = meshed.analyze("eth0.pcapng")
    assert outbound_redirects(eth0) == []
    assert {hop["interface"] for m in eth0["messages"] for hop in m["hops"]} == {"eth0"}


# -- the note ----------------------------------------------------------------------------------


def test_it_says_an_eth0_capture_of_a_meshed_pod_missed_lo(meshed):
    doc = meshed.analyze("eth0.pcapng")
    found = notes(doc)
    assert len(found) == 1, found
    note = found[0]
    assert (note["severity"], note["vantage"], note["mesh"]) == ("note", POD, "istio")
    assert {"istio-mtls", "control-plane"} <= set(note["signs"])
    assert "pod default/ubuntu" in note["text"] and "no lo" in note["text"]
    assert "tcpdump -i any" in note["check"]
    assert "connection" not in note and "connections" not in note  # about the capture
    by_id = {m["id"]: m for m in doc["messages"]}
    assert note["evidence"]
    assert all(by_id[i]["label"].startswith("TLS ClientHello") for i in note["evidence"])
    assert note["places"] == [{"hop": "eth0", "vantage": POD, "interface": "eth0"}]


def test_it_needs_no_inventory_to_see_the_mesh_mutual_tls(meshed):
    found = notes(meshed.analyze("eth0.pcapng", inventory=False))
    assert [n["signs"] for n in found] == [["istio-mtls"]]


def test_it_says_nothing_of_the_same_traffic_captured_on_every_interface(meshed):
    assert notes(meshed.analyze("any.pcapng")) == []
    assert notes(meshed.analyze("any.pcapng", inventory=False)) == []


def test_it_says_nothing_of_a_node_capture(meshed):
    assert notes(meshed.analyze("node.pcapng")) == []


def test_it_names_only_the_pod_when_the_node_was_captured_too(meshed):
    found = notes(meshed.analyze("eth0.pcapng", "node.pcapng"))
    assert [n["vantage"] for n in found] == [POD]
    places = found[0]["places"]
    assert places == [{"hop": f"{POD}:eth0", "vantage": POD, "interface": "eth0"}]


def test_it_says_nothing_of_a_pod_without_a_sidecar(plain):
    assert notes(plain.analyze("eth0.pcapng")) == []


# -- where it is said --------------------------------------------------------------------------


def test_it_is_said_under_what_happened_in_text_markdown_and_the_page(meshed):
    from captures.render.describe import describe

    model = meshed.model("eth0.pcapng")
    doc = model.to_dict()
    sentence = notes(doc)[0]["text"]
    text = "\n".join(narrative.narrate(model))
    assert f"Note: {sentence}" in text
    assert text.index(sentence) < text.index("Also seen:")
    markdown = render("markdown", model)
    happened_part = markdown.split("## What happened", 1)[1].split("\n## ", 1)[0]
    assert "**Note**" in happened_part and "no lo" in happened_part
    page = describe(doc)
    assert [c["kind"] for c in page["causes"] if c["kind"] == KIND] == [KIND]
    # The sidecar's own findings are still listed, not explained away by the note.
    assert any("mutual TLS" in line for line in page["also_seen"])
    assert happened.causes(doc["annotations"])
    assert "no lo captured" in render("svg", model)


def test_a_redacted_share_names_the_pod_neutrally(meshed):
    from captures.web import redaction

    doc = meshed.analyze("eth0.pcapng")
    shown = redaction.sequence(doc, redaction.REDACTED)
    note = notes(shown)[0]
    assert note["vantage"] == "vantage 1"
    assert "default/ubuntu" not in note["text"] and "vantage 1" in note["text"]
    assert note["signs"] == notes(doc)[0]["signs"]
    assert note["places"] == [{"hop": "interface 1", "vantage": "vantage 1",
                               "interface": "interface 1"}]
    assert "default/ubuntu" not in json.dumps(shown["annotations"])
    full = notes(redaction.sequence(doc, redaction.FULL_LINK))[0]
    assert full["vantage"] == POD and full["text"] == notes(doc)[0]["text"]


# -- the live table of an `-i any` pod capture -------------------------------------------------


def test_the_live_rows_name_lo_and_eth0(meshed, lab):
    decoder = LiveDecoder(meshed.out_dir / "any.pcapng",
                          netns.links(lab.plan.pod_ns(lab.plan.client)))
    decoder.writer_done.set()
    decoder.start()
    decoder.join(30)
    rows = decoder.take()
    assert rows and not decoder.error
    assert any(row["info"].startswith("lo ") and row["dst"].endswith(":15001") for row in rows)
    assert any(row["info"].startswith("eth0 ") for row in rows)
    # Neighbour caches are flushed before a run: the pod's first packet waits for ARP.
    assert any(row["proto"] == "arp" for row in rows)
    assert not [row for row in rows if row["proto"] in ("other", "?")]


# -- a pod without a sidecar that talks to another pod's ---------------------------------------


@pytest.mark.parametrize("fault", ["fault-plaintext-to-mtls", "fault-tls-no-client-cert"])
def test_it_says_nothing_of_a_client_reaching_another_pods_sidecar(lab, tmp_path, fault):
    # The client pod has no sidecar here: it speaks to a backend's mTLS port 15006 itself, in
    # plaintext or in TLS with Istio's SNI and ALPN but no certificate (refused). That shows the
    # backend's proxy, not one in the pod that was captured.
    from captures.lab import faults

    faults.run(lab, fault, tmp_path)
    inventory = json.loads((tmp_path / "inventory.json").read_text())
    pod = CaptureFile.from_path(tmp_path / f"{fault}-pod.pcapng")
    node = CaptureFile.from_path(tmp_path / f"{fault}-node.pcapng")
    for files, known in (([pod], inventory), ([pod], None), ([pod, node], inventory)):
        doc = analyze_files(files, inventory=known).to_dict()
        assert [a for a in doc["annotations"] if a["kind"] == "sidecar"], "port 15006 was used"
        assert notes(doc) == []
