"""`kviz analyze` as a user runs it: JSON on stdout, a narrative in text, names from an
inventory, clear errors for what it cannot read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.analysis.conftest import corpus_dir

ROOT = Path(__file__).resolve().parents[2]
CORPUS = corpus_dir() or Path("/nonexistent")
pytestmark = pytest.mark.skipif(corpus_dir() is None, reason="the shared corpus is not beside us")
DNS_HTTP = CORPUS / "dns-http" / "skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
MTLS = CORPUS / "tls" / "zeek_tls12-mutual-tls-client-certificate-sni-alpn.pcap"
KEEPALIVE = CORPUS / "keepalive" / "zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"


def kviz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "kviz", "analyze", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_it_prints_the_versioned_model_as_json():
    done = kviz(str(DNS_HTTP), "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "kviz.sequence/1"
    assert doc["capture"]["packets"] == 58
    assert {c["closed"] for c in doc["connections"]} == {"fin"}
    for message in doc["messages"]:
        assert {"src", "dst", "label", "hops"} <= message.keys()
        assert len(message["hops"]) == 1


def test_it_tells_the_story_in_text_one_step_per_line():
    done = kviz(str(DNS_HTTP), "--format", "text")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    dns = [line for line in lines if "DNS" in line and "A www.google.com →" in line]
    assert dns and dns[0].rstrip().endswith("ms")  # the answer and how long it took
    assert any("GET / (Host www.google.com) → 302" in line for line in lines)
    assert sum("closed by FIN" in line for line in lines) == 2
    # In time order: the lookup comes before the connection that used its answer.
    first_dns = next(i for i, line in enumerate(lines) if "DNS" in line)
    first_tcp = next(i for i, line in enumerate(lines) if "TCP  #0" in line)
    assert first_dns < first_tcp


def test_it_states_the_mtls_evidence_it_saw():
    done = kviz(str(MTLS), "--format", "text")
    assert "mutual TLS (evidence: client-certificate, certificate-request)" in done.stdout


def test_it_says_which_request_lost_its_response_on_a_pooled_connection():
    done = kviz(str(KEEPALIVE), "--format", "text")
    lines = done.stdout.splitlines()
    missing = [line for line in lines if "no response in the capture" in line]
    assert len(missing) == 1 and "request 1:" in missing[0]
    assert any("1000 requests on this connection (pooled)" in line for line in lines)


def test_it_names_participants_from_an_inventory(tmp_path):
    inventory = {
        "schema": "kviz.inventory/1",
        "pods": [{"namespace": "default", "name": "ubuntu", "ips": ["192.168.0.5"]}],
        "services": [{"namespace": "default", "name": "google", "cluster_ips": ["173.194.40.147"],
                      "ports": [{"port": 80, "protocol": "TCP"}]}],
    }
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))
    doc = json.loads(kviz(str(DNS_HTTP), "--inventory", str(path), "--format", "json").stdout)
    named = {p["ip"]: (p["name"], p["kind"]) for p in doc["participants"]}
    assert named["192.168.0.5"] == ("ubuntu", "pod")
    assert named["173.194.40.147"] == ("google", "service")
    # Without an inventory entry, the DNS answer in the capture names the address.
    assert named["216.58.211.67"] == ("www.google.fr", "dns-name")


@pytest.mark.parametrize("content", ["not json", "[1, 2]"])
def test_it_refuses_a_broken_inventory_with_a_clear_message(tmp_path, content):
    path = tmp_path / "inventory.json"
    path.write_text(content)
    done = kviz(str(DNS_HTTP), "--inventory", str(path))
    assert done.returncode != 0
    assert "inventory.json" in done.stderr and "Traceback" not in done.stderr


def test_it_refuses_a_missing_file_with_a_clear_message(tmp_path):
    done = kviz(str(tmp_path / "nope.pcap"))
    assert done.returncode != 0
    assert "nope.pcap: No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


EIGHT_CONNS = (
    CORPUS / "dns-http" / "zeek_dns-search-suffix-nxdomain-then-http11-keepalive-8-conns.pcap"
)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_flow_limit_keeps_the_first_connections_and_flags_the_result_partial(how):
    args, env = [str(EIGHT_CONNS), "--format", "json"], None
    if how == "option":
        args.append("--max-flows=3")
    else:
        env = {**os.environ, "KVIZ_MAX_FLOWS": "3"}
    done = subprocess.run(
        [sys.executable, "manage.py", "kviz", "analyze", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert len(doc["connections"]) == 3
    assert doc["capture"]["partial"] is True
    assert any("more than 3 TCP connections" in w for w in doc["capture"]["warnings"])


def test_a_flow_limit_that_is_not_a_number_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, "manage.py", "kviz", "analyze", str(EIGHT_CONNS)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "KVIZ_MAX_FLOWS": "lots"},
    )
    assert done.returncode == 2
    assert "KVIZ_MAX_FLOWS='lots' is not an integer" in done.stderr


def test_a_document_larger_than_a_pipe_arrives_whole():
    # The command ends its process without tearing the analysis down (exit_now): whatever it
    # buffered must be out before it goes.
    done = kviz(str(KEEPALIVE), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) > 1 << 20
    doc = json.loads(done.stdout)
    assert len(doc["messages"]) == doc["capture"]["messages"] > 4000


def test_a_reader_that_stops_early_gets_one_clear_error_and_a_failed_status():
    with subprocess.Popen(
        [sys.executable, "manage.py", "kviz", "analyze", str(KEEPALIVE), "--format", "json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout.read(100).startswith(b'{"schema":')
        proc.stdout.close()  # as `| head -c 100` does
        error = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 2
    [said] = [line for line in error.splitlines() if "Broken pipe" in line]  # once
    assert said.startswith("kviz analyze: "), error
