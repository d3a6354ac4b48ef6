"""What the server's end did, or waited for: a full accept queue, and a server-first protocol
that nobody started.

- listen_overflow: the kernel completes a handshake into the listener's accept queue; while
  that queue is full (the application accepts too slowly, or the backlog is tiny) it drops the
  handshake's last ACK, and the data after it, and re-sends its SYN-ACK as if it had never been
  acknowledged (Linux's ListenOverflows). The client believes it is connected. So: a SYN-ACK
  resent after the client had acknowledged it and sent data, with nothing from the server in
  between. From the client's pod alone, client packets lost on the way look the same, and the
  sentence says so; a capture where they reached the server's own interface settles it.
- server_first_stall: SMTP, FTP, SSH, POP3, IMAP and MySQL servers speak first. A proxy that
  tells protocols apart by the client's first bytes (a sidecar's protocol detection) waits for
  a client that is itself waiting for the greeting: after the handshake nothing at all is sent
  until one side gives up. Said only for a port known to be server-first, or one where another
  connection in the capture shows the server speaking first, and only after a wait no
  application would choose (STALL_MIN_S). A server that never accept()s looks the same on the
  wire, and the sentence says so.
"""

from __future__ import annotations

from ..records import endpoint_host, endpoint_port, split_endpoint
from .places import Places
from .view import CaptureView

# Ports whose protocol has the server speak first (IANA's assignments).
SERVER_FIRST_PORTS = {21: "FTP", 22: "SSH", 25: "SMTP", 110: "POP3", 143: "IMAP",
                      587: "SMTP submission", 3306: "MySQL"}
STALL_MIN_S = 1.0  # a silent connection shorter than this is a probe or a health check
EXAMPLES_READ = 2000  # connections read for a server speaking first on an unlisted port


def from_client(message: dict, conn: dict) -> bool:
    return message["hops"][0]["src"] == conn["client"] or message["src"] == conn["client"]


def server_of(conn: dict) -> str:
    """The server as its own packets show it: after the DNAT when one was seen."""
    return conn.get("server_after_nat") or conn["server"]


def _flags(message: dict) -> str:
    return message.get("flags") or ""


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


# -- listen_overflow ---------------------------------------------------------------------------


def reached_server(view: CaptureView, places: Places, message: dict, server: str,
                   messages: list[dict]) -> bool | None:
    """Whether a copy of `message` was seen on the server's own interface (its veth on a node,
    leaving towards it, or its own pod's capture); None when no capture shows where that is.
    `messages`: the connection's, which tell which node interface carries the server's."""
    ip = endpoint_host(server)
    found = view.by_ip.get(ip) or {}
    own_pod = (f"pod/{found.get('namespace')}/{found.get('name')}"
               if found.get("kind") == "pod" else None)
    places.learn(messages)
    known = False
    for hop in message["hops"]:
        place = places.of(hop)
        if own_pod and place.vantage == own_pod:
            return True
        if place.vantage_kind != "node":
            continue
        own = places.interface_of(ip, place.vantage)
        if own is None:
            continue
        known = True
        if place.interface == own and place.direction == "out":
            return True
    return False if known else None


def listen_overflow(view: CaptureView, conn: dict, places: Places) -> list[dict]:
    if conn.get("handshake") != "complete" or not conn.get("retransmissions"):
        return []  # a resent SYN-ACK counts as a retransmission
    if not view.resent_synack(conn["id"]):
        return []  # one SYN-ACK in all: nothing to read
    messages = view.of_connection(conn["id"])
    synacks = [m for m in messages if "S" in _flags(m) and "A" in _flags(m)
               and not from_client(m, conn)]
    if len(synacks) < 2:
        return []
    spoke = [m for m in messages if from_client(m, conn) and m["t"] > synacks[0]["t"]
             and "S" not in _flags(m) and m["len"] > 0]
    resent = [s for s in synacks[1:] if spoke and spoke[0]["t"] < s["t"]]
    if not resent:
        return []
    server_data = [m for m in messages if not from_client(m, conn) and m["len"] > 0]
    if any(m["t"] < resent[0]["t"] for m in server_data):
        return []  # the server had the connection: this SYN-ACK is something else
    server = server_of(conn)
    client, server_words = view.names(conn["client"]), view.names(server)
    before = [m for m in spoke if m["t"] < resent[0]["t"]]
    delivered = reached_server(view, places, before[-1], server, messages)
    if delivered is False:
        return []  # lost before the server's interface: the path's loss, not its queue
    served = any(m["t"] > resent[-1]["t"] for m in server_data)
    times = f"{len(resent)} time{'s' if len(resent) != 1 else ''}"
    short = places.short_name(server)
    text = (f"{server_words} re-sent its SYN-ACK to {client} {times} after the client had "
            f"acknowledged it and sent {before[0]['len']} B of data: {short}'s kernel had not "
            f"completed the connection.")
    if delivered:
        text += (f" The client's packets reached {short}'s own interface, "
                 f"so its kernel dropped them: its accept queue (the listen backlog) was full, "
                 f"and a full queue drops the handshake's last ACK and the data after it "
                 f"(ListenOverflows).")
    else:
        text += (" That is what a full accept queue (the listen backlog) does: it drops the "
                 "handshake's last ACK and the data after it (ListenOverflows). From "
                 f"{view.seen_from()} it cannot be ruled out that the client's packets were "
                 f"lost on the way; a capture of the server's node shows whether they "
                 f"reached it.")
    text += (" It answered later, once the application accepted the connection." if served
             else "")
    port = split_endpoint(server)[1]
    return [{
        "kind": "listen_overflow", "severity": "warning" if served else "error",
        "connection": conn["id"], "server": server, "synack_resent": len(resent),
        "delivered": delivered, "served": served, "text": text,
        "check": (f"the listener's accept queue in {places.short_name(server)}: "
                  f"`ss -ltn 'sport = :{port}'` (Recv-Q at Send-Q, the backlog, means full), "
                  f"`nstat -az TcpExtListenOverflows TcpExtListenDrops`; whether the "
                  f"application accepts fast enough (a blocked accept loop, too few workers); "
                  f"its listen() backlog and net.core.somaxconn"),
        "evidence": [synacks[0]["id"], before[0]["id"], *(m["id"] for m in resent)],
        "group": (f"{server_words} re-sent its SYN-ACK after clients had acknowledged it and "
                  f"sent data: its accept queue was full, so its kernel dropped the "
                  f"handshakes' last ACKs."),
    }]


# -- server_first_stall ----------------------------------------------------------------------


def _carries_data(message: dict) -> bool:
    return message["len"] > 0


def _server_first_ports(view: CaptureView, ports: set[int]) -> dict[int, int]:
    """Of `ports`, those where a connection of this capture shows the server speaking first:
    port -> that connection's id. At most EXAMPLES_READ connections are read."""
    found: dict[int, int] = {}
    read = 0
    for conn in view.connections:
        port = endpoint_port(server_of(conn))
        if port not in ports or port in found or conn.get("handshake") != "complete":
            continue
        read += 1
        if read > EXAMPLES_READ:
            break
        first = view.first_of_connection(conn["id"], _carries_data)
        if first is not None and not from_client(first, conn):
            found[port] = conn["id"]
    return found


def server_first_stalls(view: CaptureView) -> list[dict]:
    candidates = [c for c in view.connections if c.get("handshake") == "complete"
                  and not c.get("requests") and not c.get("app") and not c.get("keepalives")
                  and not c.get("unseen_bytes")]
    if not candidates:
        return []
    unknown = {endpoint_port(server_of(c)) for c in candidates} - SERVER_FIRST_PORTS.keys()
    # Read other connections for an example only when a stall on an unlisted port needs one:
    # up to EXAMPLES_READ connections, where most captures' candidates are a connection or
    # two that the capture's end cut short.
    shown: dict[int, int] | None = None
    findings = []
    for conn in candidates:
        messages = view.of_connection(conn["id"])
        if any(m["len"] > 0 for m in messages):
            continue
        synack = next((m for m in messages if "S" in _flags(m) and "A" in _flags(m)), None)
        if synack is None:
            continue
        closes = [m for m in messages if set(_flags(m)) & {"F", "R"}]
        end = closes[0]["t"] if closes else view.duration
        if end is None or end - synack["t"] < STALL_MIN_S:
            continue
        port = endpoint_port(conn["server"])
        inner = endpoint_port(server_of(conn))
        protocol = SERVER_FIRST_PORTS.get(port) or SERVER_FIRST_PORTS.get(inner)
        example = None
        if protocol is None:
            if shown is None:
                shown = _server_first_ports(view, unknown)
            example = shown.get(inner)
            if example is None:
                continue
        findings.append(_stall(view, conn, port, protocol, example, synack, closes,
                               end - synack["t"]))
    return findings


def _stall(view, conn, port, protocol, example, synack, closes, waited) -> dict:
    client, server = view.names(conn["client"]), view.names(conn["server"])
    if protocol:
        what = f"{protocol}, where the server speaks first"
    else:
        what = f"a port where the server speaks first, as connection {example} shows"
    if closes:
        closed_by = "client" if from_client(closes[0], conn) else "server"
        until = f"until the {closed_by} closed it"
    else:
        closed_by = None
        until = "until the capture ended"
    return {
        "kind": "server_first_stall", "severity": "error" if closes else "warning",
        "connection": conn["id"], "server": conn["server"], "port": port,
        "protocol": protocol, "waited_s": round(waited, 3), "closed_by": closed_by,
        "text": (f"{client} connected to {server} ({what}), and then neither side sent "
                 f"anything for {_duration(waited)}, {until}: the client waited for the "
                 f"server's greeting, which never came. A proxy in between that tells "
                 f"protocols apart by the client's first bytes (a sidecar's protocol "
                 f"detection) waits for the client like this with every server-first protocol;"
                 f" so does a server whose application never took the connection from its "
                 f"accept queue."),
        "check": (f"whether a proxy intercepts port {port} (a sidecar: `istioctl proxy-config "
                  f"listeners`); declare the port's protocol (a Service port named `tcp-…` or "
                  f"`appProtocol: tcp`) or exclude it from interception "
                  f"(`traffic.sidecar.istio.io/excludeOutboundPorts`, `…/excludeInboundPorts`);"
                  f" that the server greets when reached directly (`nc -v <pod-ip> {port}` "
                  f"from a pod without a sidecar) and accepts connections (`ss -ltn` in its "
                  f"pod: Recv-Q)"),
        "evidence": [synack["id"], *(m["id"] for m in closes[:1])],
        "group": (f"Connections to {server} ({what}) stalled: neither side spoke after the "
                  f"handshake."),
    }


def diagnose(view: CaptureView, places: Places) -> list[dict]:
    findings = []
    for conn in view.connections:
        findings += listen_overflow(view, conn, places)
    return findings + server_first_stalls(view)
