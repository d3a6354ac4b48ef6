"""The diagram cache built from a stored analysis a message at a time: the same variant as from
the whole model document, for the owner (no server paths) and for a redacted link (the same
neutral names throughout), whatever order the document's keys come in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captures.jobs import diagram_cache
from captures.web import redaction
from tests.support.stored import stored_analysis

from .conftest import corpus_params

MULTI_HOP = "k8s/deepflow_istio-sidecar-inbound-127.0.0.6-to-productpage-9080.pcap"


def variant_files(directory: Path) -> dict:
    return {path.name: path.read_bytes() if path.suffix == ".bin" else json.loads(
        path.read_text()) for path in sorted(directory.iterdir())}


def both_ways(analysis: Path, tmp_path: Path, view: str) -> tuple[dict, dict]:
    whole = redaction.sequence(json.loads(analysis.read_text()), view)
    built = {}
    for name, model in (("whole", whole), ("streamed", diagram_cache.StoredModel(
            analysis, redaction.sequence_parts(view)))):
        directory = tmp_path / f"{view}-{name}"
        directory.mkdir()
        diagram_cache._write_variant(directory, model, True, [], [])
        built[name] = variant_files(directory)
    return built["whole"], built["streamed"]


@pytest.mark.parametrize("path", corpus_params("k8s") + corpus_params("overlay"))
def test_it_builds_the_same_variant_from_the_stored_analysis_as_from_the_model(
        path, tmp_path, settings):
    settings.DATA_DIR = tmp_path / "data"
    analysis = stored_analysis([path], tmp_path / "analysis.json")
    for view in (redaction.OWNER, redaction.REDACTED):
        whole, streamed = both_ways(analysis, tmp_path, view)
        assert streamed == whole, view


def test_the_owners_variant_names_no_server_path(tmp_path, settings, corpus):
    settings.DATA_DIR = tmp_path / "data"
    analysis = stored_analysis([corpus / MULTI_HOP], tmp_path / "analysis.json")
    assert str(settings.DATA_DIR) in analysis.read_text()  # what there is to leave out
    directory = tmp_path / "owner"
    directory.mkdir()
    diagram_cache._write_variant(directory, diagram_cache.StoredModel(
        analysis, diagram_cache.OWNER_PREPARE), True, [], [])
    for path in directory.iterdir():
        assert str(settings.DATA_DIR) not in path.read_bytes().decode("utf-8", "replace")
    head = json.loads((directory / "head.json").read_text())
    assert head["capture"]["files"][0]["path"] == Path(MULTI_HOP).name


def test_a_document_with_its_messages_first_is_read_whole(tmp_path, settings, corpus):
    settings.DATA_DIR = tmp_path / "data"
    analysis = stored_analysis([corpus / MULTI_HOP], tmp_path / "analysis.json")
    model = json.loads(analysis.read_text())
    reordered = tmp_path / "reordered.json"
    reordered.write_text(json.dumps({"messages": model.pop("messages"), **model}))
    whole, _ = both_ways(analysis, tmp_path, redaction.OWNER)
    directory = tmp_path / "reordered"
    directory.mkdir()
    diagram_cache._write_variant(directory, diagram_cache.StoredModel(
        reordered, diagram_cache.OWNER_PREPARE), True, [], [])
    assert variant_files(directory) == whole


@pytest.fixture
def corpus():
    from tests.analysis.conftest import corpus_dir

    root = corpus_dir()
    if root is None:
        pytest.skip("no capture corpus found")
    return root
