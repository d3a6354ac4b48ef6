"""The diagram of real lab captures (captures/lab, `kviz lab run`): the node view with the
kube-proxy DNAT badge, the mesh view with its mTLS lock and "no FIN: kept open".

The dashboard's upload takes a bare pcap, without the `.meta.json` (interface names of a cooked
`-i any` capture) and the inventory (pod and Service names) that a lab run writes beside it;
so these tests store the capture the way a live lab capture is stored (file, meta, inventory on
the row) and analyse it with the runner's own `analyse`. Skipped where the lab cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.test_diagram_view import open_diagram, screenshot  # noqa: F401

MANAGE = Path(__file__).resolve().parents[2] / "manage.py"


def _lab_unavailable() -> str | None:
    try:
        from tests.lab.conftest import lab_unavailable_reason
    except ImportError:
        return "this build has no lab (captures/lab)"
    return lab_unavailable_reason()


def record(scenario: str, out: Path) -> Path:
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    prefix = f"kvb{os.getpid() % 1000}"
    kviz = [sys.executable, str(MANAGE), "kviz", "lab"]
    try:
        done = subprocess.run([*kviz, "run", scenario, "--prefix", prefix, "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run([*kviz, "down", "--prefix", prefix], capture_output=True, timeout=120)
    return out


def store(owner, pcap: Path, inventory: Path, name: str) -> str:
    """A completed capture of `pcap` with its meta file and inventory, analysed."""

    from captures.jobs import runner
    from captures.models import Capture, Status
    from tests.support.stored import store_copy

    capture = Capture.objects.create(
        name=name, owner=owner, target_kind="lab", target_spec={"target": "node/kviz-node"},
        limit_seconds=60, limit_packets=100000, limit_bytes=10**8, status=Status.RUNNING,
        inventory=json.loads(inventory.read_text()))
    meta = json.loads(pcap.with_name(pcap.name + ".meta.json").read_text())
    store_copy(capture, pcap, vantage=meta["vantage"], interfaces=meta["interfaces"])
    result = runner.analyse(capture)
    Capture.objects.filter(id=capture.id).update(status=Status.COMPLETED, **result)
    return str(capture.id)


@pytest.fixture(scope="module")
def node_run(tmp_path_factory):
    return record("node", tmp_path_factory.mktemp("lab-node"))


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
    return record("mesh", tmp_path_factory.mktemp("lab-mesh"))


def test_the_node_view_shows_the_dnat_badge(kviz_server, signed_in_page, make_user, node_run,
                                            screenshot):  # noqa: F811
    owner = make_user()
    capture_id = store(owner, node_run / "node.pcapng", node_run / "inventory.json", "lab-node")
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/")
    heads = diagram.locator(".kd-head").text_content()
    assert "ubuntu" in heads and "nginx" in heads
    badge = diagram.locator(".kd-badge-dnat").first
    badge.wait_for()
    assert badge.text_content().startswith("DNAT ") and " → " in badge.text_content()
    screenshot(page, "diagram-lab-node")


def test_the_mesh_view_shows_the_lock_and_no_fin(kviz_server, signed_in_page, make_user,
                                                 mesh_run, screenshot):  # noqa: F811
    owner = make_user()
    capture_id = store(owner, mesh_run / "mesh-node.pcapng", mesh_run / "inventory.json",
                       "lab-mesh")
    page = signed_in_page(owner)
    open_diagram(page, f"/captures/{capture_id}/")
    # Everything drawn, so every finding is on screen somewhere as we scroll.
    page.uncheck("#diagram .kd-fold-all")
    page.wait_for_selector("#diagram[data-state=ready]")
    texts = page.evaluate("""async () => {
        const s = document.querySelector('#diagram .kd-scroll'); const seen = new Set();
        for (let top = 0; top <= s.scrollHeight; top += s.clientHeight) {
            s.scrollTop = top; await new Promise(r => setTimeout(r, 120));
            document.querySelectorAll('#diagram .kd-badge').forEach(b => seen.add(
                (b.previousElementSibling?.classList.contains('kd-padlock') ? 'LOCK ' : '')
                + b.textContent));
        }
        s.scrollTop = 0; return [...seen]; }""")
    # The lock is a drawn padlock just before the mTLS badge's text, not an emoji.
    assert any(t.startswith("LOCK mTLS") for t in texts), texts
    assert any("no FIN" in t for t in texts), texts
    screenshot(page, "diagram-lab-mesh")


@pytest.fixture(scope="module")
def refused_run(tmp_path_factory):
    return record("fault-closed-port", tmp_path_factory.mktemp("lab-closed-port"))


def test_what_happened_names_the_cause_and_links_its_proof(
        kviz_server, signed_in_page, make_user, refused_run, screenshot):  # noqa: F811
    truth = json.loads((refused_run / "truth.json").read_text())
    backend = truth["backend"]
    owner = make_user()
    capture_id = store(owner, refused_run / "fault-closed-port-node.pcapng",
                       refused_run / "inventory.json", "lab-closed-port")
    page = signed_in_page(owner)
    diagram = open_diagram(page, f"/captures/{capture_id}/")
    box = page.locator("#what-happened")
    cause = box.locator(".cause").first
    assert cause.get_attribute("data-kind") == "refused"
    assert f"{backend['name']} ({backend['ip']}:{backend['port']}) refused" in cause.inner_text()
    assert "Error" in cause.locator(".severity").inner_text()
    # Above the fold: the box and the start of the diagram share the first screen.
    assert box.bounding_box()["y"] < diagram.bounding_box()["y"] < page.viewport_size["height"]
    from tests.browser.conftest import ARTIFACTS

    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "what-happened-page.png"))
    screenshot(page, "what-happened-refused")
    # Its proof: each link selects an arrow of the diagram, badged with the cause.
    link = cause.locator("a.evidence-link").last
    message = link.inner_text().lstrip("#")
    link.click()
    page.wait_for_selector(f"#diagram #m-{message}.kd-selected")
    badges = diagram.locator(f"#m-{message}").text_content()
    assert f"refused by {backend['name']}" in badges
