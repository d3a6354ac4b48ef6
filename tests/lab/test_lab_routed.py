"""The routed fallback (Calico-style /32 links, no bridge): the DNAT is still kube-proxy's."""

from __future__ import annotations

import json

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.lab import Lab, scenarios
from tests.lab.conftest import lab_unavailable_reason, requires_lab, test_prefix

pytestmark = requires_lab


@pytest.fixture(scope="module")
def routed_lab(tmp_path_factory):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(test_prefix("r"), tmp_path_factory.mktemp("routed") / "lab")
    try:
        lab.up(mode="routed")
        yield lab
    finally:
        lab.down()


def test_it_routes_pods_over_point_to_point_links_and_still_dnats(routed_lab, tmp_path):
    lab = routed_lab
    assert lab.status()["mode"] == "routed"
    scenarios.run(lab, "node", tmp_path)
    meta = json.loads((tmp_path / "node.pcapng.meta.json").read_text())
    assert "cbr0" not in meta["interfaces"].values()

    served = [line.split(" pod=")[1].split()[0]
              for pod in lab.plan.backends for line in lab.access_log(pod.name).read_text()
              .splitlines()]
    assert len(served) == 1
    backend = lab.plan.pod(served[0])
    inventory = json.loads((tmp_path / "inventory.json").read_text())
    doc = analyze_files([CaptureFile.from_path(tmp_path / "node.pcapng")],
                        inventory=inventory).to_dict()
    vip = lab.plan.service("nginx").cluster_ip
    dnat = next(a for a in doc["annotations"]
                if a["kind"] == "dnat" and a["before"] == f"{vip}:80")
    assert dnat["after"] == f"{backend.ip}:80"
    # Routed: in on the client's veth, out on the backend's, nothing in between.
    assert dnat["where"] == f"{lab.plan.client.veth} → {backend.veth}"
