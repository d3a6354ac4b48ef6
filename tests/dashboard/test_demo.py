"""`kviz demo --lab`: a lab scenario recorded at several places loads as one capture of all its
files, each with where it was taken; the two-node path scenario leaves the lab as it found it.

The lab here is this module's own (its own prefix), so the suite's lab is never rebuilt."""

from __future__ import annotations

import json
import os

import pytest

from captures.models import Capture

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class Lines:
    def __init__(self):
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


def run_demo(owner, out_dir, only, corpus) -> tuple[int, Lines, Lines]:
    from captures.cli import demo

    out, err = Lines(), Lines()
    code = demo.run({"owner": owner.get_username(), "corpus": corpus, "lab": True,
                     "only": only, "out": out_dir}, out, err)
    return code, out, err


@pytest.fixture
def demo_lab(settings, service_settings, tmp_path):
    """This test's lab, up with one node, as `kviz demo` finds it (KVIZ_LAB_PREFIX)."""
    from tests.lab.conftest import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from captures.sources import lab

    settings.KVIZ_LAB_PREFIX = f"kvdm{os.getpid() % 1000}"
    the_lab = lab.get_lab()
    try:
        the_lab.up(sidecar_enabled=False)
        yield the_lab
    finally:
        lab.get_lab().down()


def analysed(capture_id) -> Capture:
    return wait_for(lambda: (lambda c: c if c.is_terminal else None)(
        Capture.objects.get(id=capture_id)), 120, what="the demo capture's analysis")


def test_the_mesh_and_the_path_load_as_one_capture_each_and_the_lab_is_put_back(
        worker, demo_lab, django_user_model, tmp_path):
    owner = django_user_model.objects.create_user("demo-owner")
    corpus = tmp_path / "no-corpus"
    corpus.mkdir()
    code, out, err = run_demo(owner, tmp_path / "demo", ["mesh", "path"], corpus)
    assert code == 0, err.lines
    assert err.lines == []

    # 1. The mesh: the node's and the client pod's files, one capture, named where taken.
    mesh = Capture.objects.get(owner=owner, name="lab-mesh")
    node = f"node/{demo_lab.plan.nodes[0].name}"
    assert [(f.file_name, f.vantage) for f in mesh.files.all()] == [
        ("mesh-node.pcapng", node), ("mesh-pod.pcapng", "pod/default/ubuntu")]
    assert all(f.interfaces for f in mesh.files.all())  # names of the cooked captures' indexes
    assert mesh.inventory and mesh.inventory["pods"]
    mesh = analysed(mesh.id)
    assert mesh.status == "completed", mesh.error
    analysis = json.loads(mesh.analysis_file.read_text())
    assert [f["vantage"] for f in analysis["capture"]["files"]] == [node, "pod/default/ubuntu"]
    assert all(f.packets > 0 for f in mesh.files.all())

    # 2. The path: every hop of the two-node scenario, client first, one capture.
    path = Capture.objects.get(owner=owner, name="lab-path")
    assert [f.file_name for f in path.files.all()] == [
        "path-client.pcapng", "path-node-1.pcapng", "path-node-2.pcapng",
        "path-nginx-a.pcapng", "path-nginx-b.pcapng", "path-outside.pcapng"]
    assert path.files.all()[0].vantage == "pod/default/ubuntu"
    assert path.inventory and len(path.inventory["nodes"]) == 2
    path = analysed(path.id)
    assert path.status == "completed", path.error

    # 3. The lab is back as it was: up, one node.
    from captures.sources import lab

    again = lab.get_lab()
    assert again.plan.node_count == 1 and again.is_up()

    # 4. Nothing twice: recorded files are reused, loaded captures skipped.
    code, out, err = run_demo(owner, tmp_path / "demo", ["mesh", "path"], corpus)
    assert code == 0 and not any(line.startswith("recording") for line in out.lines)
    assert out.lines[-1].startswith("kviz demo: 0 captures added")
    assert Capture.objects.filter(owner=owner).count() == 2
