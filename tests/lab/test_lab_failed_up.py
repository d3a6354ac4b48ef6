"""A failed `up` removes everything it had made: no namespace, no /etc/netns file, no state."""

from __future__ import annotations

from pathlib import Path

import pytest

from captures.lab import Lab, netns, workloads
from tests.lab.conftest import requires_lab, test_prefix

pytestmark = requires_lab


def test_it_tears_down_what_a_failed_up_had_built(tmp_path, monkeypatch):
    lab = Lab(test_prefix("f"), tmp_path / "lab")

    def broken_istiod(plan, state_dir):
        # By now namespaces, links, rules, certificates, resolv.conf files and four
        # processes exist.
        assert Path("/etc/netns", plan.pod_ns(plan.client), "resolv.conf").exists()
        raise workloads.WorkloadFailed("istiod/meshproxy-istiod did not start (test)")

    monkeypatch.setattr(workloads, "start_istiod", broken_istiod)
    try:
        with pytest.raises(workloads.WorkloadFailed):
            lab.up()
        assert not [ns for ns in netns.list_namespaces() if ns.startswith(f"{lab.prefix}-")]
        assert not any(Path("/etc/netns", ns).exists() for ns in lab.plan.namespaces)
        assert not lab.state_dir.exists()
        assert lab.status()["status"] == "down"
    finally:
        lab.down()
