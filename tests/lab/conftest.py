"""Lab fixtures: a real lab (namespaces, iptables, dumpcap) under a test-only prefix.

Lab tests need root and `ip netns`; CI runs them as root. Anywhere else they are skipped with
the reason, never failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from captures.lab import Lab

LAB_TOOLS = ("ip", "iptables-restore", "dumpcap", "dnsmasq", "nginx", "openssl", "curl")


def lab_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, iptables)"
    missing = [tool for tool in LAB_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"lab tests need {', '.join(missing)} (scripts/setup.sh installs them)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable here: {probe.stderr.strip()}"
    return None


requires_lab = pytest.mark.skipif(lab_unavailable_reason() is not None,
                                  reason=lab_unavailable_reason() or "")


def test_prefix(tag: str = "") -> str:
    """A prefix no developer's own lab uses, distinct per test process."""
    return f"kvt{tag}{os.getpid() % 1000}"


test_prefix.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory):
    # Named "lab" so a test can point settings.DATA_DIR at its parent for the Django adapter.
    return tmp_path_factory.mktemp("data") / "lab"


@pytest.fixture(scope="module")
def lab(lab_root):
    """A bridge-mode lab, up for the whole module and always torn down."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(test_prefix(), lab_root)
    try:
        lab.up(sidecar_enabled=False)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def path_recording(tmp_path_factory):
    """The `path` scenario (captures/lab/path.py) recorded once on a two-node lab of the
    module's own: (lab, the folder with the captures, inventory.json and truth.json). The lab
    is torn down when the module is done."""
    from captures.lab import path

    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(test_prefix("d"), tmp_path_factory.mktemp("pathlab") / "lab", nodes=2)
    try:
        lab.up()
        out = tmp_path_factory.mktemp("pathrun")
        path.run(lab, out)
        yield lab, out
    finally:
        lab.down()
