"""What is made from a stored analysis (the view's analysis, the layout variants) never passes
for current once the analysis changed, however late it was written: a reader who fetched the
capture while the worker re-analysed it (its key log deleted) kept the decrypted document."""

from __future__ import annotations

import json
import shutil

from captures.jobs import diagram_cache, keylogs, runner
from captures.models import Capture, Status
from tests.support.stored import store_copy

SAMPLE = "tls/zeek_tls12-sni-alpn-http11-decryptable"


def analysed(capture: Capture) -> None:
    result = runner.analyse(capture)
    Capture.objects.filter(id=capture.id).update(**result)
    capture.refresh_from_db()


def http_of(client, capture_id) -> list:
    answer = client.get(f"/api/captures/{capture_id}/analysis")
    assert answer.status_code == 200
    return json.loads(b"".join(answer.streaming_content))["http"]


def test_a_file_made_from_the_old_analysis_and_written_after_the_new_one_is_made_again(
        users, alice_client, corpus, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    capture = Capture.objects.create(
        name="late-writer", owner=users["alice"], target_kind="upload",
        status=Status.COMPLETED, target_spec={"filename": "tls.pcap"},
        limit_seconds=60, limit_packets=1000, limit_bytes=10**8)
    store_copy(capture, corpus / f"{SAMPLE}.pcap")
    keylogs.store(capture.id, (corpus / f"{SAMPLE}.keylog").read_bytes(), push=False)
    analysed(capture)
    assert http_of(alice_client, capture.id), "the key log decrypts the requests"
    shown = capture.directory / "analysis.owner.json"
    decrypted = shown.read_bytes()
    variant = diagram_cache.ensure_first(capture)
    old_variant = tmp_path / "old-variant"
    shutil.copytree(variant, old_variant)

    keylogs.delete(capture.id)
    analysed(capture)  # the re-analysis stores the document without the decrypted requests
    # ... and then a reader's request that read the old document finishes writing: files made
    # from the old analysis, written after the new one was stored.
    shown.write_bytes(decrypted)
    shutil.rmtree(variant)
    shutil.copytree(old_variant, variant)
    assert shown.stat().st_mtime >= capture.analysis_file.stat().st_mtime  # the race's mark

    assert http_of(alice_client, capture.id) == []
    assert not diagram_cache.is_fresh(variant, capture.analysis_file)
    assert diagram_cache.ensure_first(capture) == variant
    assert diagram_cache.is_fresh(variant, capture.analysis_file)
    rows = json.loads((variant / "rows-0.json").read_text())["rows"]
    assert not any("decrypted" in row["label"] for row in rows)
    old_rows = json.loads((old_variant / "rows-0.json").read_text())["rows"]
    assert any(row["label"] == "decrypted GET /" for row in old_rows)  # what had to go
