"""A DNS answer too big for UDP: the server sets TC and glibc's resolver asks again over TCP.

dnsmasq in a namespace holds 40 A records for one name; `getent` asks for it with the
resolver pointed at that dnsmasq (a private mount namespace gives it its own resolv.conf, so
nothing of the host changes). tshark's reading of the capture is the reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from captures.analysis import analyze_files
from tests.support.netns import capture, namespaces, require_netns, run
from tests.support.tshark import fields

DNS_SERVER = "10.199.4.1"
NAME = "big.kviz.test"
RECORDS = 40


@pytest.fixture(scope="module")
def truncated_capture(tmp_path_factory):
    require_netns()
    for tool in ("dnsmasq", "unshare", "getent"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    root = tmp_path_factory.mktemp("dnstc")
    (root / "resolv.conf").write_text(f"nameserver {DNS_SERVER}\n")
    path = root / "dns.pcapng"
    ns = f"kvdt{os.getpid() % 100000}"
    records = [f"--host-record={NAME},10.77.0.{i}" for i in range(1, RECORDS + 1)]
    with namespaces(ns):
        run("ip", "addr", "add", f"{DNS_SERVER}/32", "dev", "lo", ns=ns)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
             f"--listen-address={DNS_SERVER}", "--bind-interfaces", "--port=53",
             f"--pid-file={root / 'dnsmasq.pid'}", *records],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):  # until it listens, at most 5 s
                if ":53 " in run("ss", "-lun", ns=ns):
                    break
                time.sleep(0.1)
            with capture(ns, "lo", path):
                answer = run("unshare", "-m", "sh", "-c",
                             f"mount --bind {root / 'resolv.conf'} /etc/resolv.conf && "
                             f"getent ahostsv4 {NAME}", ns=ns)
        finally:
            server.kill()
            server.wait()
    assert len({line.split()[0] for line in answer.splitlines()}) == RECORDS
    return path


@pytest.mark.timeout(120)
def test_a_truncated_answer_is_flagged_and_its_retry_over_tcp_seen(truncated_capture):
    doc = analyze_files([truncated_capture]).to_dict()
    cut = fields(truncated_capture, "dns.flags.response == 1 && dns.flags.truncated == 1 && udp",
                 "dns.count.answers")
    whole = fields(truncated_capture, "dns.flags.response == 1 && tcp", "dns.count.answers")
    assert cut and whole

    (over_udp,) = [e for e in doc["dns"] if e["transport"] == "udp"]
    (over_tcp,) = [e for e in doc["dns"] if e["transport"] == "tcp"]
    assert over_udp["truncated"] is True and len(over_udp["answers"]) == int(cut[0][0])
    assert over_tcp["truncated"] is False and len(over_tcp["answers"]) == int(whole[0][0])
    assert len(over_tcp["answers"]) == RECORDS
    (note,) = [a for a in doc["annotations"] if a["kind"] == "dns_truncated"]
    assert note == {"kind": "dns_truncated", "name": NAME, "count": 1, "retried_over_tcp": 1}
    labels = [m["label"] for m in doc["messages"] if m["phase"] == "dns"]
    assert sum(label.endswith("(truncated)") for label in labels) == len(cut)
