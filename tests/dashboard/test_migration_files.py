"""Captures stored before captures held several files keep their file, vantage and interface
names across the migration (and back)."""

from __future__ import annotations

import json
import shutil

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("captures", "0003_cluster_target_kinds")]
AFTER = [("captures", "0004_storedfile")]


@pytest.fixture
def at_0003(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    yield executor.loader.project_state(BEFORE).apps
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_a_capture_of_one_file_becomes_its_first_stored_file(at_0003, settings, tmp_path,
                                                             corpus):
    settings.DATA_DIR = tmp_path
    apps = at_0003
    user = apps.get_model("auth", "User").objects.create(username="old")
    old = apps.get_model("captures", "Capture").objects.create(
        name="old", owner_id=user.id, target_kind="lab", target_spec={"target": "node/n"},
        limit_seconds=1, limit_packets=1, limit_bytes=1, packets=58, bytes=25607,
        pcap_path="captures/old/capture.pcap")
    stored = tmp_path / "captures" / "old" / "capture.pcap"
    stored.parent.mkdir(parents=True)
    shutil.copy(corpus / "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap", stored)
    stored.with_name("capture.pcap.meta.json").write_text(json.dumps(
        {"schema": "kviz.capture-meta/1", "vantage": "node/n", "interfaces": {"2": "eth0"}}))

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    apps = executor.loader.project_state(AFTER).apps
    [moved] = apps.get_model("captures", "StoredFile").objects.filter(capture_id=old.id)
    assert (moved.position, moved.path, moved.vantage, moved.interfaces, moved.packets) == (
        0, "captures/old/capture.pcap", "node/n", {"2": "eth0"}, 58)

    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)  # and back: the path returns to the capture's row
    apps = executor.loader.project_state(BEFORE).apps
    assert apps.get_model("captures", "Capture").objects.get(id=old.id).pcap_path == \
        "captures/old/capture.pcap"
