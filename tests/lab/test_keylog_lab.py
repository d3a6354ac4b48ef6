"""Decryption with key logs the real tools write: curl (SSLKEYLOGFILE) and `openssl s_client
-keylogfile` talk to nginx over TLS 1.2 (AES-GCM with SHA-256 and SHA-384, ChaCha20-Poly1305)
and TLS 1.3 (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305), HTTP/1.1 and HTTP/2, in two
namespaces this test creates; the engine reads inside each connection what tshark reads with
the same key log. Certificates come from the lab's CA (captures/lab/pki.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager

import pytest

from captures.analysis import analyze_files
from captures.lab import pki
from tests.analysis.test_tls_decrypt import engine_requests, tshark_requests
from tests.support import netns

TLS12_CIPHERS = ":".join(["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                          "ECDHE-ECDSA-CHACHA20-POLY1305"])
CLIENT_IP, SERVER_IP, PORT, NAME = "10.77.31.1", "10.77.31.2", 8443, "tls-lab.default.svc"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {ip}:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        location / {{ return 200 "hello from the key log lab\\n"; }}
    }}
}}
"""

# (what, argv after the tool, TLS version, cipher suite id) per connection.
CURL = [
    ("tls12-gcm-http1", ["--tlsv1.2", "--tls-max", "1.2", "--ciphers",
                         "ECDHE-ECDSA-AES128-GCM-SHA256", "--http1.1"], "TLS 1.2"),
    ("tls12-chacha-h2", ["--tlsv1.2", "--tls-max", "1.2", "--ciphers",
                         "ECDHE-ECDSA-CHACHA20-POLY1305", "--http2"], "TLS 1.2"),
    ("tls13-aes128-h2", ["--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256", "--http2"],
     "TLS 1.3"),
    ("tls13-chacha-http1", ["--tlsv1.3", "--tls13-ciphers", "TLS_CHACHA20_POLY1305_SHA256",
                            "--http1.1"], "TLS 1.3"),
]
OPENSSL = [
    ("tls13-aes256-openssl", ["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"], "TLS 1.3"),
    ("tls12-aes256-openssl", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"], "TLS 1.2"),
]


def _needs_tools():
    netns.require_netns()
    for tool in ("nginx", "openssl", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@contextmanager
def nginx_over_tls(work, tag: str):
    """nginx serving TLS 1.2 and 1.3 (HTTP/1.1 and HTTP/2) in a namespace of its own, with a
    certificate from the lab's CA; yields (the client's namespace, the CA certificate)."""
    ca = pki.make_ca(work / "pki")
    server = pki.issue(ca, work / "pki", "server", [pki.spiffe_id("default", "tls-lab")],
                       dns_names=(NAME,))
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / temp).mkdir()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, ip=SERVER_IP, port=PORT, cert=server.cert,
                                      key=server.key, ciphers=TLS12_CIPHERS))
    with netns.paired(f"{tag}{os.getpid() % 10000}", CLIENT_IP, SERVER_IP) as (client, server_ns):
        nginx = subprocess.Popen(["ip", "netns", "exec", server_ns, "nginx", "-c", str(conf),
                                  "-p", str(work)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        try:
            for _ in range(50):
                if f":{PORT}" in netns.run("ss", "-ltn", ns=server_ns):
                    break
                time.sleep(0.1)
            yield client, ca
        finally:
            nginx.kill()
            nginx.wait(timeout=10)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The capture and the key log of six TLS connections, and the paths asked for."""
    _needs_tools()
    work = tmp_path_factory.mktemp("keylog-lab")
    curl_keys, openssl_keys = work / "curl.keys", work / "openssl.keys"
    pcap = work / "tls.pcapng"
    with nginx_over_tls(work, "kl") as (client, ca):
        paths = []
        with netns.capture(client, "c0", pcap):
            for what, argv, _version in CURL:
                paths.append(f"/{what}")
                subprocess.run(
                    ["ip", "netns", "exec", client, "curl", "-sS", "-o", "/dev/null",
                     "--cacert", str(ca.cert), "--resolve", f"{NAME}:{PORT}:{SERVER_IP}",
                     *argv, f"https://{NAME}:{PORT}/{what}"],
                    env={**os.environ, "SSLKEYLOGFILE": str(curl_keys)}, check=True,
                    timeout=20, capture_output=True)
            for what, argv, _version in OPENSSL:
                paths.append(f"/{what}")
                request = f"GET /{what} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n"
                subprocess.run(
                    ["ip", "netns", "exec", client, "openssl", "s_client", "-quiet",
                     "-connect", f"{SERVER_IP}:{PORT}", "-servername", NAME,
                     "-CAfile", str(ca.cert), "-keylogfile", str(openssl_keys), *argv],
                    input=request.encode(), check=True, timeout=20, capture_output=True)
    keylog = work / "all.keys"
    keylog.write_text(curl_keys.read_text() + openssl_keys.read_text())
    return pcap, keylog, curl_keys, openssl_keys, paths


def test_the_tools_wrote_tls12_and_tls13_secrets(recorded):
    _pcap, _keylog, curl_keys, openssl_keys, _paths = recorded
    for keys in (curl_keys, openssl_keys):
        labels = {line.split()[0] for line in keys.read_text().splitlines() if line.strip()}
        assert {"CLIENT_RANDOM", "CLIENT_TRAFFIC_SECRET_0", "SERVER_HANDSHAKE_TRAFFIC_SECRET"
                } <= labels


def test_every_connection_is_decrypted_and_read_as_tshark_reads_it(recorded):
    pcap, keylog, _curl, _openssl, paths = recorded
    model = analyze_files([pcap], keylog=keylog)
    expected = tshark_requests(pcap, keylog)
    assert sorted(engine_requests(model)) == sorted(expected)
    doc = model.to_dict()
    assert sorted(r["target"] for r in doc["http"]) == sorted(paths)
    assert {r["status"] for r in doc["http"]} == {200}
    versions = sorted(c["tls"]["version"] for c in doc["connections"])
    assert versions == sorted(v for *_rest, v in CURL + OPENSSL)
    assert all(c["tls"]["decrypted"] and c["tls"]["decryption"] is None
               for c in doc["connections"])
    assert {r["protocol"] for r in doc["http"]} == {"http/1.1", "h2"}
    # TLS 1.3 sends the chosen ALPN encrypted (EncryptedExtensions): read once decrypted.
    alpn = [c["tls"]["alpn"] for c in doc["connections"]]
    assert alpn == ["http/1.1", "h2", "h2", "http/1.1", None, None]


def test_a_key_log_decrypts_only_the_connections_it_has_keys_for(recorded):
    pcap, _keylog, curl_keys, _openssl, _paths = recorded
    doc = analyze_files([pcap], keylog=curl_keys).to_dict()
    decrypted = [c["tls"]["decrypted"] for c in doc["connections"]]
    assert decrypted == [True] * len(CURL) + [False] * len(OPENSSL)
    assert sorted(r["target"] for r in doc["http"]) == sorted(f"/{w}" for w, *_ in CURL)


def test_a_tls13_key_update_moves_to_the_next_secrets(tmp_path):
    """`openssl s_client`'s K command sends a KeyUpdate asking the peer to update too: the
    records after it, both ways, are protected with the next traffic secrets."""
    _needs_tools()
    keys, pcap = tmp_path / "keys", tmp_path / "update.pcapng"
    with nginx_over_tls(tmp_path, "ku") as (client, ca), netns.capture(client, "c0", pcap):
        session = subprocess.Popen(
            ["ip", "netns", "exec", client, "openssl", "s_client", "-connect",
             f"{SERVER_IP}:{PORT}", "-servername", NAME, "-CAfile", str(ca.cert), "-tls1_3",
             "-keylogfile", str(keys)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in (f"GET /before HTTP/1.1\r\nHost: {NAME}\r\n\r\n", "K\n",
                     f"GET /after HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n"):
            session.stdin.write(line.encode())
            session.stdin.flush()
            time.sleep(0.5)
        session.stdin.close()
        session.wait(timeout=20)
    model = analyze_files([pcap], keylog=keys)
    assert sorted(engine_requests(model)) == sorted(tshark_requests(pcap, keys))
    assert [(r["target"], r["status"]) for r in model.to_dict()["http"]] == [
        ("/before", 200), ("/after", 200)]
    labels = [m["label"] for m in model.to_dict()["messages"]]
    assert labels.count("TLS KeyUpdate (decrypted)") == 2  # each way
