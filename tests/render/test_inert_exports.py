"""Exports are inert: text that came from packets or an inventory never becomes markup.

The traffic is real: dumpcap records loopback while this module's servers and clients talk on
addresses of their own (127.77.0.0/24), carrying hostile strings in an HTTP request's path, Host
and reason phrase, in a DNS query name (answered, so the name becomes a participant's), in TLS
ClientHellos' SNI (`openssl s_client -servername`) and in the inventory's pod and service names.
Then each format is read the way a victim's tool would read it:

- Markdown: rendered by `marked` (it passes raw HTML through) in headless Chromium;
- PlantUML: searched for anything the preprocessor or creole would act on;
- Mermaid: parsed by the real `mermaid` package under Node;
- SVG: parsed as XML.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from captures.render import markdown, plantuml
from captures.render.export import render

from .conftest import JS

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "[[javascript:alert(1)]]",
    '%getenv("HOME")',
    "<img:http://127.0.0.1:1/x.png>",
    "[x](javascript:alert(1))",
    "<img/src/onerror=alert(1)>",  # the same without spaces, for the request line's path
]
DIRECTIVES = ['!include /etc/passwd', "!define X <img:http://127.0.0.1:1/d.png>"]
CLIENT, DNS_SERVER, WEB, TLS_SERVER = "127.77.0.1", "127.77.0.2", "127.77.0.3", "127.77.0.4"
INVENTORY = {
    "pods": [{"name": HOSTILE[0], "namespace": HOSTILE[4], "ip": CLIENT}],
    "services": [{"name": HOSTILE[1] + " " + HOSTILE[2], "namespace": DIRECTIVES[0],
                  "cluster_ip": TLS_SERVER}],
}
NOTES = [{"target": "capture", "author": HOSTILE[0], "text": " ".join(HOSTILE + DIRECTIVES)}]
DEADLINE = 30.0  # seconds for all the traffic; every loop below also stops at a count
CHROMIUM = "/usr/bin/chromium"
# As tests/browser/conftest.py launches it: without the background-networking flags Chromium
# keeps dialing out, and this machine's closed network refuses it.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


# --- the traffic -------------------------------------------------------------------------

def _listener(kind: int, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    if kind == socket.SOCK_STREAM:
        sock.listen(16)
    sock.settimeout(1.0)
    return sock


def _serve(sock: socket.socket, count: int, answer, stop: float) -> None:
    """Answer `count` requests (TCP connections or UDP datagrams), or stop at `stop`."""
    done = 0
    while done < count and time.monotonic() < stop:
        try:
            if sock.type == socket.SOCK_DGRAM:
                data, peer = sock.recvfrom(4096)
                sock.sendto(answer(data), peer)
            else:
                conn, _ = sock.accept()
                with conn:
                    conn.settimeout(3.0)
                    data = b""
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                        if data[:1] == b"\x16":  # a TLS ClientHello: seen, hang up
                            break
                    reply = answer(data)
                    if reply:
                        conn.sendall(reply)
        except (TimeoutError, ConnectionError):
            continue
        done += 1
    sock.close()


def _dns_name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def _dns_answer(query: bytes) -> bytes:
    """An A answer (WEB) to any query: header with QR/RD/RA, the question, one record."""
    question = query[12:]
    return (query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question
            + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(WEB))


def _http_answer(request: bytes) -> bytes:
    host = re.search(rb"\r\nHost: ([^\r\n]*)", request)
    reason = host.group(1) if host else b"OK"
    return b"HTTP/1.1 404 " + reason + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _traffic(stop: float) -> None:
    # 1. DNS: one query per hostile string; the first answer names WEB.
    for n, text in enumerate(HOSTILE):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((CLIENT, 0))
            sock.settimeout(2.0)
            query = (struct.pack("!HHHHHH", 0x4B00 + n, 0x0100, 1, 0, 0, 0)
                     + _dns_name([text.encode(), b"kviz", b"test"]) + struct.pack("!HH", 1, 1))
            sock.sendto(query, (DNS_SERVER, 53))
            sock.recvfrom(4096)
    # 2. HTTP: one connection per string, in the path (no spaces there), the Host and (sent
    #    back by the server) the reason phrase.
    for text in HOSTILE:
        with socket.create_connection((WEB, 80), timeout=3.0, source_address=(CLIENT, 0)) as s:
            path = "/" + text.replace(" ", "/")
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {text}\r\n\r\n".encode())
            while time.monotonic() < stop and s.recv(4096):
                pass
    # 3. TLS: a ClientHello per string, in the SNI.
    for text in HOSTILE[:5]:
        subprocess.run(["openssl", "s_client", "-connect", f"{TLS_SERVER}:443",
                        "-servername", text, "-bind", f"{CLIENT}:0"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10)


def _record(pcap: Path) -> None:
    stop = time.monotonic() + DEADLINE
    servers = [
        threading.Thread(target=_serve, daemon=True, args=(
            _listener(socket.SOCK_DGRAM, (DNS_SERVER, 53)), len(HOSTILE), _dns_answer, stop)),
        threading.Thread(target=_serve, daemon=True, args=(
            _listener(socket.SOCK_STREAM, (WEB, 80)), len(HOSTILE), _http_answer, stop)),
        threading.Thread(target=_serve, daemon=True, args=(
            _listener(socket.SOCK_STREAM, (TLS_SERVER, 443)), 5, lambda data: b"", stop)),
    ]
    dumpcap = subprocess.Popen(
        ["dumpcap", "-q", "-i", "lo", "-P", "-w", str(pcap), "-a", "duration:60",
         "-f", "net 127.77.0.0/24"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # dumpcap says "File: ..." once it captures; nothing before that would be recorded.
        ready = ""
        while "File:" not in ready and time.monotonic() < stop:
            line = dumpcap.stderr.readline()
            if not line:
                break
            ready += line
        assert "File:" in ready, ready
        for thread in servers:
            thread.start()
        _traffic(stop)
        for thread in servers:
            thread.join(timeout=max(0.0, stop - time.monotonic()))
        time.sleep(0.5)  # the last packets through the kernel's buffer
    finally:
        dumpcap.send_signal(signal.SIGTERM)
        dumpcap.wait(timeout=15)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if shutil.which("dumpcap") is None or shutil.which("openssl") is None:
        pytest.skip("dumpcap and openssl are needed to record the hostile traffic")
    pcap = tmp_path_factory.mktemp("hostile") / "hostile.pcap"
    try:
        _record(pcap)
    except PermissionError as exc:
        pytest.skip(f"cannot capture on loopback or bind ports 53/80/443 here: {exc}")
    from captures.analysis import CaptureFile, analyze_files

    found = analyze_files([CaptureFile(str(pcap))], inventory=INVENTORY).to_dict()
    # The hostile strings reached the model, or every check below would prove nothing.
    names = {p["ip"]: p.get("name") for p in found["participants"]}
    assert names[WEB] == HOSTILE[0] + ".kviz.test"
    assert names[CLIENT] == HOSTILE[0]
    assert {r["target"] for r in found["http"]} == {"/" + t.replace(" ", "/") for t in HOSTILE}
    assert {r["host"] for r in found["http"]} == set(HOSTILE)
    snis = {(c.get("tls") or {}).get("sni") for c in found["connections"]}
    assert set(HOSTILE[:5]) <= snis
    assert {d["name"] for d in found["dns"]} == {t + ".kviz.test" for t in HOSTILE}
    return found


def _export(fmt: str, model: dict) -> str:
    return render(fmt, model, title=" ".join(HOSTILE), notes=NOTES,
                  facts={"target": HOSTILE[0], "filter": " ".join(DIRECTIVES)})


# --- Markdown in a browser ---------------------------------------------------------------

@pytest.fixture(scope="module")
def page_of():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (./scripts/setup.sh installs Debian's)")
    marked = JS / "node_modules" / "marked" / "lib" / "marked.umd.js"
    assert marked.is_file(), "the marked package is missing: run `npm ci --prefix tests/render/js`"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)

        def render_markdown_in_chromium(text: str) -> dict:
            """Markdown → HTML by marked, into a page's DOM; what ran and what was asked for."""
            page = browser.new_page()
            seen = {"dialogs": [], "requests": []}
            page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message),
                                              dialog.dismiss()))

            def route(r):
                if r.request.url == "http://kviz.test/":
                    r.fulfill(content_type="text/html",
                              body="<!doctype html><html><body><main id=doc></main></body></html>")
                else:
                    seen["requests"].append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto("http://kviz.test/")
            page.add_script_tag(path=str(marked))
            page.evaluate("md => { document.getElementById('doc').innerHTML = "
                          "marked.parse(md, {gfm: true}); }", text)
            page.wait_for_timeout(500)  # an onerror or an image load would have happened
            seen["tags"] = page.evaluate(
                "() => [...document.querySelectorAll('#doc *')].map(e => e.localName)")
            seen["attributes"] = page.evaluate(
                "() => [...document.querySelectorAll('#doc *')]"
                ".flatMap(e => [...e.attributes].map(a => a.name))")
            seen["text"] = page.inner_text("#doc")
            page.close()
            return seen

        yield render_markdown_in_chromium
        browser.close()


def test_it_would_catch_a_script_in_markdown(page_of):
    """The detector works: the raw string, rendered the same way, runs and fetches."""
    seen = page_of(f"{HOSTILE[0]} {HOSTILE[4]} {HOSTILE[3][1:-1]}")
    assert seen["dialogs"] == ["1"]
    assert "img" in seen["tags"] and "a" in seen["tags"]


def test_it_renders_the_markdown_export_as_text_only(model, page_of):
    text = _export("markdown", model)
    seen = page_of(text)
    assert seen["dialogs"] == []
    assert seen["requests"] == []
    # Only the elements kviz's own Markdown makes; not an attribute among them.
    assert set(seen["tags"]) <= {"h1", "h2", "h3", "p", "ul", "li", "strong", "code", "pre",
                                 "table", "thead", "tbody", "tr", "th", "td"}, seen["tags"]
    assert seen["attributes"] == [] or set(seen["attributes"]) <= {"class", "align"}
    # Readable: each string shows as it was sent.
    for hostile in [*HOSTILE, *DIRECTIVES]:
        assert hostile in seen["text"], hostile


def test_it_keeps_markdown_syntax_from_packets_out_of_the_source(model):
    text = _export("markdown", model)
    body = text.split("```mermaid", 1)[0] + text.split("```", 2)[2]
    for construct in ("<img", "](", "[[", "http://", "`<", "&lt;img src=x onerror=alert(1)&gt;|"):
        assert construct not in body, construct
    assert markdown.escape(HOSTILE[0]) in body


# --- PlantUML ----------------------------------------------------------------------------

def test_it_leaves_plantuml_nothing_to_preprocess_link_or_draw(model):
    text = _export("plantuml", model)
    lines = text.splitlines()
    assert lines[0] == "@startuml" and lines[-1] == "@enduml"
    assert not re.search(r"%[A-Za-z_]", text)  # %getenv, %load_json, %date...
    assert not re.search(r"![A-Za-z]", text)  # !include, !define, !procedure...
    assert not re.search(r"\$[A-Za-z_]", text)
    for construct in ("[[", "]]", "<img", "<", "{{", "**", "//"):
        assert construct not in text, construct
    # Present, in the escaped form: the strings were there to neutralise.
    assert plantuml.escape('%getenv("HOME")') == "&#37;getenv(&#34;HOME&#34;)"
    for hostile in [*HOSTILE, DIRECTIVES[0]]:  # the rest are Markdown's facts and notes
        assert plantuml.escape(hostile) in text, hostile


# --- Mermaid -----------------------------------------------------------------------------

_MERMAID_DB = """
import { JSDOM } from "jsdom";
const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false, securityLevel: "loose" });
let text = "";
for await (const chunk of process.stdin) text += chunk;
await mermaid.parse(text);
const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
const db = diagram.db;
const actors = [...db.getActors().values()].map(a => ({
  name: a.name, description: a.description, links: a.links, properties: a.properties}));
const messages = db.getMessages().map(m => ({from: m.from, to: m.to, message: m.message,
                                               type: m.type}));
process.stdout.write(JSON.stringify({ actors, messages }));
"""


def test_it_keeps_hostile_text_inside_mermaid_labels(model):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs npm)")
    text = _export("mermaid", model)
    done = subprocess.run([node, "--input-type=module", "-e", _MERMAID_DB], input=text,
                          cwd=JS, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    db = json.loads(done.stdout)
    lanes = len(re.findall(r"^    participant ", text, re.M))
    arrows = len(re.findall(r"^    P\d+(?:->>|-->>|-x|--\))P\d+: ", text, re.M))
    notes = len(re.findall(r"^    Note over ", text, re.M))
    # Every participant and message is one of kviz's; none got a link or a property.
    assert [a["name"] for a in db["actors"]] == [f"P{i}" for i in range(lanes)]
    assert all(not a["links"] and not a["properties"] for a in db["actors"])
    assert len([m for m in db["messages"] if m["from"]]) == arrows + notes
    # Mermaid holds an entity code as a placeholder (ﬂ°°60¶ß) while it parses and writes it
    # into the SVG as a character reference (&#60;): text, never a tag.
    labels = [re.sub(r"ﬂ°°(\d+)¶ß", r"&#\1;", str(label)) for label in
              [a["description"] for a in db["actors"]] + [m["message"] for m in db["messages"]]]
    for label in labels:
        assert "<img" not in label and "[[" not in label and "%%" not in label, label
        assert not re.sub(r"<br/>", "", label).count("<"), label
    for hostile in HOSTILE:
        assert any(re.sub(r"[<>\[\]%\":]", lambda m: f"&#{ord(m.group(0))};", hostile) in label
                   for label in labels), hostile
    assert not re.search(r"^\s*(click|link|links|href|%%)", text, re.M)


# --- SVG ---------------------------------------------------------------------------------

def test_it_keeps_hostile_text_in_svg_text_nodes(model):
    root = ET.fromstring(_export("svg", model))
    tags = {element.tag.rsplit("}", 1)[-1] for element in root.iter()}
    assert tags <= {"svg", "title", "defs", "marker", "path", "g", "rect", "line", "text",
                    "tspan", "polyline", "circle", "polygon", "desc"}, tags
    for element in root.iter():
        for name, value in element.attrib.items():
            assert not name.rsplit("}", 1)[-1].startswith("on"), name
            assert "href" not in name, name
            assert "javascript:" not in value and "<" not in value, (name, value)
    shown = "".join(root.itertext())
    for hostile in HOSTILE[:5]:
        assert hostile in shown, hostile
