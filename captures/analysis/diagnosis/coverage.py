"""What a capture missed because of where it was taken, said when its own traffic shows it.

A pod with a sidecar: the application reaches its proxy over lo (iptables REDIRECT to
127.0.0.1:15001 on the way out; Envoy hands inbound requests over from 127.0.0.6), so only the
proxy's side of the conversation crosses eth0. A capture of eth0 alone shows the proxies'
mutual TLS and nothing of what the application itself asked for, and reads as if all was well.

The note (`capture_missed_loopback`) is a claim about the capture, so it is made only when
both halves are certain:

1. the file was taken in a pod (vantage `pod/...`) on one interface that is not lo: a plain
   link type (a cooked `-i any` capture includes lo, a BSD loopback one is lo, NFLOG logs
   whatever its rules chose) and no packet of lo at that vantage (a loopback address, or the
   pod talking to itself);
2. the traffic there shows a proxy in this pod:
   - a mesh's own mutual TLS (Istio's SNI or ALPN, Linkerd's inbound port) that the server
     answered and did not refuse: only proxies speak it to each other, so whichever end the
     pod is, it has one. A client certificate alone is any application's mutual TLS, and a
     client imitating a proxy is refused;
   - where the inventory names the pod's address: the pod answering on a sidecar's inbound
     port or on a proxy's own port (15090, 15020, 15021, 4191), or opening a connection to
     istiod. A connection to another pod's sidecar port shows that pod's proxy, not this
     one's, and istiod's own capture shows the control plane as its server.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mesh import ENVOY_INBOUND_PASSTHROUGH, ISTIOD, PROXY_OWN_PORTS, is_loopback, mesh_of_mtls
from ..records import endpoint_host, split_endpoint
from .places import Places
from .view import CaptureView

# One interface's frames: Ethernet (Linux's lo too, with zero addresses), or bare IP.
ONE_INTERFACE_LINKTYPES = frozenset({"ethernet", "raw", "ipv4", "ipv6"})
# Asked with a sign's mesh, which may be None (a sign that names none).
SIDECARS: dict[str | None, str] = {"istio": "an Istio sidecar", "linkerd": "a Linkerd sidecar"}
MESH_NAMES: dict[str | None, str] = {"istio": "Istio", "linkerd": "Linkerd"}
PHRASES_SHOWN = 2  # signs named in the sentence; `signs` lists them all
# Connections with loopback traffic whose messages are read to tell which vantage saw them;
# past this many, which pod recorded lo is left unknown (and nothing is said).
LOOPBACK_CONNECTIONS_READ = 2000
CHECK = ("capture the pod on all interfaces, lo included (kviz pod captures do by default; "
         "tcpdump -i any)")


@dataclass(frozen=True)
class Sign:
    code: str  # "istio-mtls", "port:15006", "via:127.0.0.6", "port:15090", "control-plane"
    words: str  # for the sentence
    mesh: str | None
    connection: int


def missed_loopback(view: CaptureView, places: Places, withdrawn_mtls=frozenset()) -> list[dict]:
    """One note per pod vantage whose capture shows a proxy and lacks lo (module docstring).
    `withdrawn_mtls`: connections the diagnosis found refused, which show no proxy."""
    candidates = _one_interface_pods(view)
    if not candidates:
        return []
    mtls = _mtls_signs(view, places, withdrawn_mtls)
    shown = [(vantage, signs) for vantage in candidates
             if (signs := _signs_at(view, places, vantage,
                                    [*mtls, *_own_signs(view, places, vantage)]))]
    if not shown:
        return []
    with_loopback = _vantages_with_loopback(view, places)
    if with_loopback is None:
        return []
    return [_note(view, places, vantage, signs) for vantage, signs in shown
            if vantage not in with_loopback]


# -- 1. a pod file on one interface, lo not among what it shows -------------------------------


def _one_interface_pods(view: CaptureView) -> list[str]:
    """Pod vantages all of whose files hold one interface's frames (and some frames)."""
    linktypes: dict[str, set[str]] = {}
    for file in view.files:
        vantage = file.get("vantage") or ""
        if vantage.startswith("pod/"):
            linktypes.setdefault(vantage, set()).update(file.get("linktypes") or ["?"])
    return [vantage for vantage, kinds in linktypes.items()
            if kinds and kinds <= ONE_INTERFACE_LINKTYPES]


def _on_loopback(conn: dict) -> bool:
    client, server = endpoint_host(conn["client"]), endpoint_host(conn["server"])
    return client == server or is_loopback(client) or is_loopback(server)


def _vantages_with_loopback(view: CaptureView, places: Places) -> set | None:
    """The vantages that recorded traffic of lo; None when some of it is at a vantage no
    connection tells (a UDP exchange on lo), or there is too much of it to read."""
    looped = [conn for conn in view.connections if _on_loopback(conn)]
    addresses = {p["ip"] for p in view.participants if is_loopback(p["ip"])}
    vantages = {file.get("vantage") for file in view.files}
    if len(vantages) == 1:
        return vantages if looped or addresses else set()
    placed: set[str] = set()
    for conn in looped:
        placed.update(ip for ip in (endpoint_host(conn["client"]),
                                    endpoint_host(conn["server"])) if is_loopback(ip))
    if addresses - placed or len(looped) > LOOPBACK_CONNECTIONS_READ:
        return None
    found: set = set()
    for conn in looped:
        found |= _vantages_of(view, places, conn["id"])
    return found


def _vantages_of(view: CaptureView, places: Places, conn_id: int) -> set:
    return {places.of(hop).vantage for message in view.of_connection(conn_id)
            for hop in message["hops"]}


# -- 2. what shows a proxy in the pod ----------------------------------------------------------


def _answered(conn: dict | None) -> bool:
    """The server answered the TLS handshake (a ServerHello) and nobody sent an alert."""
    tls = (conn or {}).get("tls") or {}
    return bool(tls.get("version")) and not tls.get("alerts")


def _mtls_signs(view: CaptureView, places: Places, withdrawn) -> list[Sign]:
    """A mesh's mutual TLS, answered: a proxy at both ends, whichever end the pod is."""
    by_id = {conn["id"]: conn for conn in view.connections}
    signs = []
    for note in view.annotations:
        conn_id = note.get("connection")
        if note.get("kind") != "mtls" or conn_id is None or conn_id in withdrawn:
            continue
        mesh = mesh_of_mtls(note.get("evidence"))
        conn = by_id.get(conn_id)
        if (mesh and _answered(conn)
                and split_endpoint(note.get("server") or "")[1] != ISTIOD):
            signs.append(Sign(f"{mesh}-mtls", f"{MESH_NAMES[mesh]}'s mutual TLS between "
                              f"{places.short_name(note.get('client'))} and "
                              f"{places.short_name(note.get('server'))}", mesh, conn_id))
    return signs


def _signs_at(view: CaptureView, places: Places, vantage: str, signs: list[Sign]) -> list[Sign]:
    """The first sign of each kind that `vantage` recorded (one per kind is proof enough)."""
    alone = len(view.files) == 1
    found: dict[str, Sign] = {}
    for sign in signs:
        if sign.code not in found and (
                alone or vantage in _vantages_of(view, places, sign.connection)):
            found[sign.code] = sign
    return list(found.values())


def _own_addresses(view: CaptureView, vantage: str) -> set[str]:
    """The pod's addresses, where the inventory named the pod the vantage is."""
    parts = vantage.split("/")
    if len(parts) != 3:
        return set()
    return {p["ip"] for p in view.participants if p.get("kind") == "pod"
            and p.get("namespace") == parts[1] and p.get("name") == parts[2]}


def _own_signs(view: CaptureView, places: Places, vantage: str) -> list[Sign]:
    """The pod's own proxy at work: answering on a sidecar's inbound port or a proxy's own
    port, or calling istiod (only where the inventory names the pod's address)."""
    own = _own_addresses(view, vantage)
    if not own:
        return []
    complete = {conn["id"]: conn for conn in view.connections
                if conn.get("handshake") == "complete"}
    signs = [_sidecar_sign(note) for note in view.annotations
             if note.get("kind") == "sidecar" and note.get("connection") in complete
             and note.get("app") in own]
    for conn in complete.values():
        client = endpoint_host(conn["client"])
        server, port = split_endpoint(conn["server"])
        if server in own and port in PROXY_OWN_PORTS:
            mesh, words = PROXY_OWN_PORTS[port]
            signs.append(Sign(f"port:{port}", f"{words} answering", mesh, conn["id"]))
        elif client in own and port == ISTIOD:
            signs.append(Sign("control-plane", "a connection to the control plane at "
                              f"{places.short_name(server)}", "istio", conn["id"]))
    return signs


def _sidecar_sign(note: dict) -> Sign:
    mesh, port = note.get("mesh"), note.get("port")
    if note.get("via") == ENVOY_INBOUND_PASSTHROUGH:
        return Sign(f"via:{ENVOY_INBOUND_PASSTHROUGH}", "Envoy's inbound passthrough from "
                    f"{ENVOY_INBOUND_PASSTHROUGH}", mesh, note["connection"])
    return Sign(f"port:{port}", f"{MESH_NAMES.get(mesh, mesh)}'s {note.get('direction')} "
                f"port {port} answering", mesh, note["connection"])


# -- the note -----------------------------------------------------------------------------------


def _note(view: CaptureView, places: Places, vantage: str, signs: list[Sign]) -> dict:
    meshes = {sign.mesh for sign in signs} - {None}
    mesh = meshes.pop() if len(meshes) == 1 else None
    shown = "; ".join(sign.words for sign in signs[:PHRASES_SHOWN])
    more = len(signs) - PHRASES_SHOWN
    if more > 0:
        shown += f"; {more} more sign{'s' if more > 1 else ''}"
    pod = vantage.split("/", 1)[1]
    return {
        "kind": "capture_missed_loopback", "severity": "note", "vantage": vantage,
        "mesh": mesh, "signs": [sign.code for sign in signs],
        "text": (f"The capture in pod {pod} shows {SIDECARS.get(mesh, 'a service-mesh sidecar')}"
                 f" ({shown}), but it has no lo: the application talks to its sidecar over lo, "
                 f"so its own requests to the proxy, and where it meant them to go, are not in "
                 f"this capture."),
        "check": CHECK,
        "evidence": sorted({i for sign in signs
                            if (i := _first_message(view, places, sign.connection)) is not None}),
    }


def _first_message(view: CaptureView, places: Places, conn_id: int) -> int | None:
    """The message that shows the sign best: the ClientHello of a TLS connection, else the
    first one kept. Its hops name the vantage, so the sentence's places include the pod."""
    messages = view.of_connection(conn_id)
    hello = next((m for m in messages if m["label"].startswith("TLS ClientHello")), None)
    chosen = hello or (messages[0] if messages else None)
    if chosen is None:
        return None
    for hop in chosen["hops"]:
        places.of(hop)
    return chosen["id"]
