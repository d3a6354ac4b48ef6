"""The diff of two captures on real lab runs of one request: curl http://nginx/ from the client
pod, recorded on its eth0 and on the node, once healthy (kube-proxy's DNAT pinned to nginx-b)
and once per fault; and openssl s_client to a backend's mTLS-only port with and without its
client certificate. What the diff says differs is checked against what the lab did (truth.json:
the pinned backend, the drop rule's counters); what the lab did not change must read the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from captures.analysis.compare import compare
from captures.render import diff as diff_render
from tests.analysis.compare_recordings import HEALTHY, HEALTHY_MTLS, analysed, record_runs
from tests.lab.conftest import requires_lab, test_prefix

pytestmark = requires_lab
ROOT = Path(__file__).resolve().parents[2]
DROP, DNS_LOST, NO_CERT = "fault-drop-after-dnat", "fault-dns-lost", "fault-tls-no-client-cert"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return record_runs(tmp_path_factory.mktemp("compare"), test_prefix("c"),
                       (DROP, DNS_LOST, NO_CERT))


@pytest.fixture(scope="module")
def models(runs) -> dict[str, dict]:
    return {stem: analysed(runs, stem) for stem in (HEALTHY, DROP, DNS_LOST, HEALTHY_MTLS,
                                                    NO_CERT)}


def truth(runs: Path, stem: str) -> dict:
    return json.loads((runs / stem / "truth.json").read_text())


def the_request(doc: dict) -> dict:
    found = [r for r in doc["requests"] if r["key"]["destination"] == "nginx"]
    assert len(found) == 1, [r["title"] for r in doc["requests"]]
    return found[0]


def row(item: dict, aspect: str) -> dict:
    found = [r for r in item["rows"] if r["aspect"] == aspect]
    assert len(found) == 1, [r["aspect"] for r in item["rows"]]
    return found[0]


def hops(value: str) -> list[str]:
    return [hop.split(" (")[0] for hop in value.split(" → ")]


def test_a_syn_dropped_after_the_dnat_shows_where_the_failing_run_stopped(runs, models):
    doc = compare(models[HEALTHY], models[DROP], "healthy", "failing")
    healthy, failing = truth(runs, HEALTHY), truth(runs, DROP)
    request = the_request(doc)
    # Paired although the failing run never sent its GET: same Service, same port.
    assert request["status"] == "differs" and request["a"] and request["b"]
    assert request["title"] == "GET nginx:80/"
    assert row(request, "outcome")["a"].startswith("answered")
    assert row(request, "outcome")["b"] == "never answered"
    assert row(request, "request")["a"] == "GET / → 200"
    assert row(request, "request")["b"] == "none read"
    # The DNAT targets the lab pinned: nginx-b when healthy, nginx-a when failing.
    dnat = row(request, "DNAT to")
    assert dnat["differs"] and healthy["backend"]["name"] in dnat["a"]
    assert failing["backend"]["ip"] in dnat["b"]
    # The failing SYN went the healthy one's way and stopped on the node after the DNAT,
    # before the backend's interface: its hops are the start of the healthy ones.
    a, b = hops(row(request, "hops of the first packet")["a"]), \
        hops(row(request, "hops of the first packet")["b"])
    assert len(b) < len(a) and b == a[:len(b)]
    assert b[-1].startswith(f"node/{failing['lab']['node']}:")
    assert row(request, "last seen at")["differs"]
    # Nothing ever came back on the failing side.
    reply = row(request, "hops of the first reply")
    assert reply["b"] == "—" and hops(reply["a"])[-1] == "pod/default/ubuntu:eth0"
    # Lost on one side only, with the retransmissions the drop rule counted.
    lost = row(request, "lost")
    assert lost["a"] == "none" and lost["b"].startswith("Error: The SYN")
    dropped = failing["drop_rule"]["packets_after"] - failing["drop_rule"]["packets_before"]
    assert row(request, "retransmissions")["b"] == str(dropped - 1)
    assert row(request, "closed by")["a"] == "FIN"
    assert row(request, "closed by")["b"] == "no FIN: kept open"
    assert {f["kind"] for f in doc["findings"]["only_b"]} >= {"lost", "retransmission"}
    assert doc["findings"]["only_a"] == []
    # The lab changed nothing about the lookups: they read the same.
    # (How long each took is the lab's timing: a millisecond against a tenth of one, on a
    # loaded machine, reads as a difference, and says nothing about the lab.)
    assert doc["dns"] and all(item["a"] and item["b"] for item in doc["dns"])
    assert [(item["title"], row["aspect"], row["a"], row["b"]) for item in doc["dns"]
            for row in item["rows"] if row["differs"] and row["aspect"] != "time"] == []


def test_a_lost_dns_query_is_a_second_ask_and_five_seconds_on_one_side(runs, models):
    doc = compare(models[HEALTHY], models[DNS_LOST], "healthy", "failing")
    lookup = next(item for item in doc["dns"] if item["key"]["type"] == "A"
                  and item["status"] != "only_b")
    assert lookup["key"]["name"].startswith("nginx.")
    assert lookup["status"] == "differs"
    assert row(lookup, "asked")["a"] == "1 time(s)" and row(lookup, "asked")["b"] == "2 time(s)"
    waited = row(lookup, "time")
    assert waited["differs"] and float(waited["b"].split()[0]) >= 4500
    assert not row(lookup, "answers")["differs"] and not row(lookup, "rcode")["differs"]
    assert [f["kind"] for f in doc["findings"]["only_b"]] == ["dns_retry"]
    assert doc["findings"]["only_a"] == []
    # The HTTP request itself went through in both.
    request = the_request(doc)
    assert not row(request, "outcome")["differs"] and not row(request, "request")["differs"]
    # Swapped, the same difference is on the other side.
    swapped = compare(models[DNS_LOST], models[HEALTHY])
    assert [f["kind"] for f in swapped["findings"]["only_a"]] == ["dns_retry"]


def test_mutual_tls_without_a_client_certificate_is_refused_on_one_side(runs, models):
    doc = compare(models[HEALTHY_MTLS], models[NO_CERT], "with a certificate", "without")
    server = truth(runs, NO_CERT)["server"]
    tls12, tls13 = doc["requests"]  # the TLS 1.2 attempt, then the TLS 1.3 one, both runs
    for request in (tls12, tls13):
        assert request["title"] == f"TCP {server['name']}:{server['port']}"
        assert request["status"] == "differs" and request["a"] and request["b"]
        assert row(request, "mTLS")["a"].startswith("mTLS (")
        assert row(request, "mTLS")["b"] == "none seen"
        assert row(request, "tls_rejected")["a"] == "none"
        assert row(request, "tls_rejected")["b"].startswith("Error: ")
    # TLS 1.2 shows why in the clear: the certificate asked for and not sent, the alert.
    tls = row(tls12, "TLS")
    assert tls["a"].startswith("TLS 1.2") and tls["a"].endswith("client certificate")
    assert "no client certificate seen" in tls["b"] and "alert handshake_failure" in tls["b"]
    assert "TLS 1.3" in row(tls13, "tls_rejected")["b"]
    assert {"tls_rejected", "tls_alert"} <= {f["kind"] for f in doc["findings"]["only_b"]}


def test_a_capture_compared_with_itself_differs_in_nothing(models):
    doc = compare(models[DROP], models[DROP])
    assert doc["summary"]["differs"] == doc["summary"]["only_a"] == doc["summary"]["only_b"] == 0
    assert doc["findings"]["only_a"] == doc["findings"]["only_b"] == []
    assert "The same in both: TCP nginx:80" in diff_render.render_text(doc)


def test_the_text_and_markdown_say_the_same_differences(models):
    doc = compare(models[HEALTHY], models[DROP], "healthy", "failing")
    text = diff_render.render_text(doc)
    assert "Findings only in B:" in text and "GET nginx:80/: differs" in text
    assert "≠ path DNAT to" in text
    markdown = diff_render.render_markdown(doc)
    assert "## Findings on one side only" in markdown
    assert "| **≠** | path | DNAT to |" in markdown
    assert "| B | Error: The SYN" in markdown


def kviz_diff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "kviz", "diff", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_kviz_diff_reads_two_recorded_folders(runs):
    done = kviz_diff(str(runs / HEALTHY), str(runs / DROP))
    assert done.returncode == 0, done.stderr
    assert "GET nginx:80/: differs" in done.stdout and "Error: The SYN" in done.stdout
    files = ",".join(str(p) for p in sorted((runs / DNS_LOST).glob("*.pcapng")))
    done = kviz_diff(str(runs / HEALTHY), files, "--inventory-b",
                     str(runs / DNS_LOST / "inventory.json"), "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "kviz.diff/1"
    assert [f["kind"] for f in doc["findings"]["only_b"]] == ["dns_retry"]
    missing = kviz_diff(str(runs / HEALTHY), str(runs / "nothing-here.pcap"))
    assert missing.returncode != 0 and "no such file" in missing.stderr
