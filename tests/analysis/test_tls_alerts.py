"""TLS handshakes that fail, as mutual TLS misconfigurations do: openssl s_server and
s_client on a namespace's loopback, certificates from the lab's own CA (captures.lab.pki).

* The server requires a client certificate (TLS 1.2, `-Verify 1`) and the client has none:
  the server ends the handshake with a fatal alert.
* The client checks the server's certificate against another CA: it refuses it with a fatal
  alert (unknown_ca).

Both alerts travel in the clear (before ChangeCipherSpec). tshark's reading names them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captures.analysis import analyze_files
from captures.analysis.words import finding
from captures.lab import pki
from tests.support.netns import capture, namespaces, require_netns, run
from tests.support.tshark import fields

NEEDS_CLIENT_CERT, ANY_CLIENT = 8443, 8444


@pytest.fixture(scope="module")
def failed_handshakes(tmp_path_factory):
    require_netns()
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    root = tmp_path_factory.mktemp("tlsalert")
    ca = pki.make_ca(root / "ca")
    other_ca = pki.make_ca(root / "other-ca")
    server = pki.issue(ca, root / "ca", "server", [], ("server.kviz.test",))
    path = root / "alerts.pcapng"
    ns = f"kvta{os.getpid() % 100000}"
    with namespaces(ns):
        servers = []
        try:
            for port, extra in ((NEEDS_CLIENT_CERT, ["-Verify", "1"]), (ANY_CLIENT, [])):
                servers.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, "openssl", "s_server", "-quiet", "-tls1_2",
                     "-accept", f"127.0.0.1:{port}", "-cert", str(server.cert),
                     "-key", str(server.key), "-CAfile", str(ca.cert), "-naccept", "1", *extra],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                listening = run("ss", "-ltn", ns=ns)
                if f":{NEEDS_CLIENT_CERT} " in listening and f":{ANY_CLIENT} " in listening:
                    break
                time.sleep(0.1)
            with capture(ns, "lo", path):
                for port, ca_file in ((NEEDS_CLIENT_CERT, ca.cert), (ANY_CLIENT, other_ca.cert)):
                    subprocess.run(
                        ["ip", "netns", "exec", ns, "openssl", "s_client", "-tls1_2",
                         "-connect", f"127.0.0.1:{port}", "-servername", "server.kviz.test",
                         "-CAfile", str(ca_file), "-verify_return_error"],
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        finally:
            for process in servers:
                process.kill()
                process.wait()
    return path


def tshark_alerts(path) -> list[tuple[int, int, str]]:
    """(source port, destination port, description) of each fatal alert tshark reads."""
    rows = fields(path, "tls.alert_message.level == 2", "tcp.srcport", "tcp.dstport",
                  "tls.alert_message.desc")
    return [(int(a), int(b), desc) for a, b, desc in rows]


TLS_ALERT_CODES = {"40": "handshake_failure", "48": "unknown_ca", "116": "certificate_required",
                   "42": "bad_certificate", "46": "certificate_unknown"}


@pytest.mark.timeout(120)
def test_failed_handshakes_name_who_sent_which_fatal_alert(failed_handshakes):
    alerts = tshark_alerts(failed_handshakes)
    assert len(alerts) == 2
    doc = analyze_files([failed_handshakes]).to_dict()
    notes = [a for a in doc["annotations"] if a["kind"] == "tls_alert"]
    assert len(notes) == 2
    connections = {c["id"]: c for c in doc["connections"]}
    found = {}
    for note in notes:
        conn = connections[note["connection"]]
        found[int(conn["server"].rsplit(":", 1)[1])] = (note["by"], note["description"])
        assert doc["annotations"].index(note) in conn["annotations"]
        alert = conn["tls"]["alerts"][0]
        assert alert["level"] == "fatal" and alert["description"] == note["description"]
    expected = {}
    for sport, dport, desc in alerts:
        server_port = sport if sport in (NEEDS_CLIENT_CERT, ANY_CLIENT) else dport
        expected[server_port] = (f"127.0.0.1:{sport}", TLS_ALERT_CODES.get(desc, desc))
    assert found == expected
    # The server refused the certificate-less client; the client refused the unknown CA.
    assert found[NEEDS_CLIENT_CERT][0] == f"127.0.0.1:{NEEDS_CLIENT_CERT}"
    assert found[ANY_CLIENT][1] == "unknown_ca"
    sentence = finding(next(n for n in notes if n["description"] == "unknown_ca"))
    assert "does not trust the authority" in sentence
    labels = [m["label"] for m in doc["messages"] if "Alert (fatal" in m["label"]]
    assert len(labels) == 2
    text = subprocess.run(
        [sys.executable, "manage.py", "kviz", "analyze", str(failed_handshakes),
         "--format", "text"], capture_output=True, text=True, timeout=60, check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert sum("ended the TLS handshake with a fatal alert" in line
               for line in text.splitlines()) == 2
