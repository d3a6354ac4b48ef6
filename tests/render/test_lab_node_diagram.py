"""The lab's captures drawn: every scenario's Mermaid parses with the mermaid package, and the
node view has names from its inventory, the kube-proxy DNAT badge on the SYN to the nginx VIP,
and the arrow carried on to the pod that served it.

Uses `python manage.py kviz lab run` (captures/lab); skipped where the lab cannot run (not root,
lab tools missing, or a build without the lab)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.render import build_layout, render_markdown, render_mermaid, render_svg

from .conftest import mermaid_errors

MANAGE = Path(__file__).resolve().parents[2] / "manage.py"


def _lab_unavailable() -> str | None:
    try:
        from tests.lab.conftest import lab_unavailable_reason
    except ImportError:
        return "this build has no lab (captures/lab)"
    return lab_unavailable_reason()


@pytest.fixture(scope="module")
def lab_recordings(tmp_path_factory) -> dict[str, Path]:
    """Each lab scenario recorded once: scenario → its output folder."""
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    prefix = f"kvr{os.getpid() % 1000}"
    kviz = [sys.executable, str(MANAGE), "kviz", "lab"]
    folders = {}
    try:
        for scenario in ("pod", "node", "mesh"):
            out = tmp_path_factory.mktemp(f"lab{scenario}")
            done = subprocess.run([*kviz, "run", scenario, "--prefix", prefix, "--out", str(out)],
                                  capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, done.stderr
            folders[scenario] = out
    finally:
        subprocess.run([*kviz, "down", "--prefix", prefix], capture_output=True, timeout=120)
    return folders


@pytest.fixture(scope="module")
def node_capture(lab_recordings):
    out = lab_recordings["node"]
    inventory = json.loads((out / "inventory.json").read_text(encoding="utf-8"))
    return CaptureFile.from_path(out / "node.pcapng"), inventory


def test_every_lab_capture_s_mermaid_parses_with_the_mermaid_package(lab_recordings, tmp_path):
    diagrams = {}
    for scenario, out in lab_recordings.items():
        inventory = json.loads((out / "inventory.json").read_text(encoding="utf-8"))
        for path in sorted(out.glob("*.pcapng")):
            model = analyze_files([CaptureFile.from_path(path)], inventory)
            try:
                diagrams[f"{scenario}/{path.name}"] = render_mermaid(build_layout(model))
            finally:
                model.close()
    assert len(diagrams) == 4  # pod, node, and the mesh's node and pod views
    errors = mermaid_errors(diagrams, tmp_path)
    assert not errors, json.dumps(errors, indent=1)


def test_it_draws_the_node_view_with_names_and_the_dnat(node_capture):
    capture, inventory = node_capture
    model = analyze_files([capture], inventory)
    try:
        layout = build_layout(model)
        doc_annotations = list(model.annotations)
    finally:
        model.close()
    svg = render_svg(layout)
    texts = ["".join(t.itertext()) for t in ET.fromstring(svg).iter(
        "{http://www.w3.org/2000/svg}text")]
    names = {lane.name for lane in layout.lanes}
    assert {"ubuntu", "nginx"} <= names
    dnat = next(a for a in doc_annotations if a["kind"] == "dnat" and a["before"].endswith(":80"))
    assert any(t.startswith(f"DNAT {dnat['before']} → {dnat['after']} at ") for t in texts)
    syn = next(row for row in layout.rows if row.flags == "S" and row.dst == dnat["before"])
    assert layout.lanes[syn.nat_lane].ip == dnat["after"].rsplit(":", 1)[0]
    assert "sequenceDiagram" in render_mermaid(layout)
    ubuntu = next(p for p in inventory["pods"] if p["name"] == "ubuntu")
    assert f"| `{ubuntu['ips'][0]}` | ubuntu | pod |" in render_markdown(layout)


def test_a_sidecar_s_replies_are_drawn_where_the_syn_went(lab_recordings):
    """Inside a meshed pod the app's SYN goes to 127.0.0.1:15001 (REDIRECT) while the replies
    carry the address the app meant: both are drawn on the sidecar's lifeline."""
    out = lab_recordings["mesh"]
    inventory = json.loads((out / "inventory.json").read_text(encoding="utf-8"))
    doc = analyze_files([CaptureFile.from_path(out / "mesh-pod.pcapng")],
                        inventory=inventory).to_dict()
    redirects = {a["connection"]: a for a in doc["annotations"]
                 if a["kind"] == "dnat" and a.get("mechanism") == "redirect"}
    assert redirects, "the mesh scenario's pod capture shows no REDIRECT"
    layout = build_layout(doc, fold=False)
    lane_ip = {lane.index: lane.ip for lane in layout.lanes}
    ends: dict[int, set] = {}
    for row in layout.rows:
        if row.connection in redirects:
            ends.setdefault(row.connection, set()).add(
                frozenset((lane_ip[row.src_lane], lane_ip[row.dst_lane])))
    for conn, pairs in ends.items():
        sidecar = redirects[conn]["after"].rsplit(":", 1)[0]
        assert len(pairs) == 1 and sidecar in next(iter(pairs)), (conn, pairs)
    meant = {a["before"].rsplit(":", 1)[0] for a in redirects.values()}
    assert not meant & {lane.ip for lane in layout.lanes}  # no lifeline for the VIP alone
