"""What went wrong with a TCP connection: never answered, refused, a Service with no endpoints,
full-size segments that never arrive (a path MTU black hole), and each connection's outcome.

Each rule reads one connection (docs/model.md) and the messages that prove it, and returns
findings with a sentence (`text`), what to look at next (`check`) and the proof (`evidence`,
message ids). A rule says nothing it cannot see: a reset seen only inside the client's pod
might come from a backend or from kube-proxy, and is said to be either.
"""

from __future__ import annotations

from ..records import endpoint_host, split_endpoint
from .loss import trace, where_words
from .places import Places
from .view import CaptureView

# Linux retransmits an unanswered SYN 5 or 6 times by default (tcp_syn_retries); a client gives
# up earlier. Seen from here: the first SYN and its retransmissions.
FIRST_RTO_S = 1.0  # Linux's initial SYN retransmission timeout
OUTCOMES = ("answered", "rejected", "unanswered", "reset_by_client", "reset_by_server",
            "half_open", "midstream")


def outcome(conn: dict, icmp_rejected: bool, reset_by: str | None) -> str:
    """A compact code in the spirit of Zeek's conn_state (see docs/model.md)."""
    handshake = conn.get("handshake")
    if handshake == "refused" or icmp_rejected:
        return "rejected"
    if handshake == "no-answer":
        return "unanswered"
    if conn.get("closed") == "rst":
        return "reset_by_client" if reset_by == conn["client"] else "reset_by_server"
    if handshake == "midstream":
        return "midstream"
    if conn.get("closed") == "fin" and conn.get("state") not in ("closed", "time-wait"):
        return "half_open"
    return "answered"


def _namespace_of(view: CaptureView, endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    found = view.by_ip.get(endpoint_host(endpoint))
    return found.get("namespace") if found else None


def _pod_words(view: CaptureView, endpoint: str | None) -> str:
    found = view.by_ip.get(endpoint_host(endpoint)) if endpoint else None
    if found and found.get("kind") == "pod":
        return f"{found.get('namespace', 'default')}/{found['name']}"
    return endpoint_host(endpoint) if endpoint else "?"


def _span(messages: list[dict]) -> str:
    span = messages[-1]["t"] - messages[0]["t"]
    return f"{span:.1f} s" if span >= 1 else f"{span * 1000:.0f} ms"


def _service_check(view: CaptureView, server: str) -> str:
    found = view.by_ip.get(endpoint_host(server))
    if not found or found.get("kind") != "service":
        return ""
    ns = found.get("namespace", "default")
    return (f"`kubectl get endpointslices -n {ns} -l kubernetes.io/service-name="
            f"{found['name']}` (which pods are Ready behind it)")


DELIVERED_READ = 64  # answered connections to the same server read for a reference path


class Delivered:
    """Per server, the first message of connections to it that were answered, read once
    (at most DELIVERED_READ of them): where a SYN that did arrive went, to compare a lost one
    with. Read for each unanswered connection instead, a flood of them was quadratic."""

    def __init__(self, view: CaptureView) -> None:
        self.view = view
        self.by_server: dict[str, list[int]] | None = None
        self.read: dict[str, list[dict]] = {}

    def to(self, server: str) -> list[dict]:
        if self.by_server is None:
            self.by_server = {}
            for c in self.view.connections:
                if c["handshake"] == "complete":
                    ids = self.by_server.setdefault(c["server"], [])
                    if len(ids) < DELIVERED_READ:
                        ids.append(c["id"])
        found = self.read.get(server)
        if found is None:
            found = self.read[server] = [
                m for conn_id in self.by_server.get(server, ())
                for m in self.view.of_connection(conn_id)[:1]]
        return found


def unanswered(view: CaptureView, conn: dict, places: Places,
               delivered_to: Delivered | None = None) -> list[dict]:
    messages = view.of_connection(conn["id"])
    attempts = [m for m in messages if m.get("flags") == "S"]
    if not attempts:
        return []
    answers = [m for m in messages if m["t"] > attempts[0]["t"] and not _from_client(m, conn)]
    if answers:
        return port_reuse(view, conn, attempts, answers, messages)
    if view.duration is not None and view.duration - attempts[-1]["t"] < FIRST_RTO_S and (
            len(attempts) == 1):
        return []  # the capture ended before an answer was due: nothing to say
    places.learn(messages)
    delivered = (delivered_to or Delivered(view)).to(conn["server"])
    loss = trace(attempts, delivered, places)
    if loss is None:
        return []
    client, server = view.names(conn["client"]), view.names(conn["server"])
    tries = f"{loss.attempts} attempt{'s' if loss.attempts != 1 else ''}"
    if loss.attempts > 1:
        tries += f" over {_span(attempts)}"
    clients = view.names(endpoint_host(conn["client"]))
    if loss.visible:
        text = (f"The SYN from {client} to {server} {where_words(loss, places)} ({tries}); "
                f"the connection was never answered.")
        where = where_words(loss, places).replace("was lost", "were lost", 1)
        group = f"SYNs from {clients} to {server} {where}; those connections were never answered."
    else:
        text = (f"The SYN from {client} to {server} was never answered ({tries}). Where it "
                f"was lost cannot be seen from {view.seen_from()}: capture the client's node "
                f"(-i any) and the destination's pods together to see where it stops.")
        group = (f"SYNs from {clients} to {server} were never answered; where they were lost "
                 f"cannot be seen from {view.seen_from()}.")
    target = loss.nat_to or conn["server"]
    checks = []
    if view.kind_of(target) == "pod" or loss.after_nat:
        ns = _namespace_of(view, target) or "default"
        checks.append(f"NetworkPolicies that select {_pod_words(view, target)} "
                      f"(`kubectl get networkpolicy -n {ns}`)")
    checks.append(f"that {places.short_name(target)} is Ready and listening on port "
                  f"{split_endpoint(target)[1]}")
    if loss.visible and loss.last_seen.vantage_kind == "node":
        checks.append(f"firewall rules on node {loss.last_seen.vantage_name} "
                      f"(`iptables -S FORWARD`, `nft list ruleset`)")
    service = _service_check(view, conn["server"])
    if service:
        checks.append(service)
    return [{
        "kind": "lost", "severity": "error", "connection": conn["id"], "text": text,
        "check": "; ".join(checks), "evidence": [m["id"] for m in attempts],
        "group": group, **loss.as_dict(),
    }]


def _from_client(message: dict, conn: dict) -> bool:
    return message["hops"][0]["src"] == conn["client"] or message["src"] == conn["client"]


def port_reuse(view, conn, attempts, answers, messages) -> list[dict]:
    """A SYN answered by a plain ACK: the server still holds an older connection on the same
    ports (TIME_WAIT, or one it thinks open) and sends a challenge ACK (RFC 5961)."""
    ack = answers[0]
    if (ack.get("flags") or "") in ("SA", "") or "S" in (ack.get("flags") or ""):
        return []
    resets = [m for m in messages if m["t"] >= ack["t"] and "R" in (m.get("flags") or "")
              and _from_client(m, conn)]
    client, server = view.names(conn["client"]), view.names(conn["server"])
    then = " and the client reset it" if resets else ""
    return [{
        "kind": "port_reuse", "severity": "warning", "connection": conn["id"],
        "text": (f"{server} answered the SYN from {client} with an ACK for an older "
                 f"connection on the same ports (a challenge ACK){then}: the client reused "
                 f"its port while the server still held the previous connection (TIME_WAIT, "
                 f"or one it never saw close)."),
        "check": ("the client's port reuse (`net.ipv4.tcp_tw_reuse`, a fixed source port, "
                  "SNAT port exhaustion on the node: `conntrack -S`); whether the previous "
                  "connection was closed by the server"),
        "evidence": [attempts[0]["id"], ack["id"], *(m["id"] for m in resets[:1])],
        "group": (f"{server} answered SYNs from {view.names(endpoint_host(conn['client']))} "
                  f"with ACKs for older connections on the same ports (challenge ACKs): the "
                  f"client reused ports the server still held."),
    }]


def _icmp_errors(view: CaptureView) -> dict[int, tuple[int, dict]]:
    """connection id -> (annotation index, the icmp_error annotation about it)."""
    return {a["connection"]: (i, a) for i, a in enumerate(view.annotations)
            if a.get("kind") == "icmp_error" and a.get("connection") is not None}


def rejected(view: CaptureView, conn: dict, places: Places,
             icmp: tuple[int, dict] | None) -> list[dict]:
    """A SYN answered by a reset or an ICMP error: refused by a pod, or no endpoints."""
    messages = view.of_connection(conn["id"])
    places.learn(messages)
    syns = [m for m in messages if m.get("flags") == "S"]
    client, server = view.names(conn["client"]), view.names(conn["server"])
    server_kind = view.kind_of(conn["server"])
    dnat_seen = any(a.get("kind") == "dnat" and a.get("connection") == conn["id"]
                    for a in view.annotations) or conn.get("server_after_nat")
    node_seen = "node" in view.vantage_kinds()
    if icmp is not None:
        index, note = icmp
        if server_kind == "service" and "unreachable" in (note.get("error") or ""):
            evidence = [m["id"] for m in syns[:1]] + view.annotation_messages.get(index, [])[:1]
            return [_no_endpoints(view, conn, note["from"], "icmp", evidence)]
        return []  # an ICMP error about it is its own finding already
    resets = [m for m in messages if "R" in (m.get("flags") or "")]
    if not resets:
        return []
    reset = resets[0]
    sender = reset["hops"][0]["src"]  # the first place it was seen: nearest its sender
    evidence = [m["id"] for m in syns[:1]] + [reset["id"]]
    if server_kind == "service" and not dnat_seen and node_seen and sender == conn["server"]:
        return [_no_endpoints(view, conn, sender, "reset", evidence)]
    sender_ip = endpoint_host(sender)
    via = conn["server"] if sender_ip != endpoint_host(conn["server"]) else None
    port = split_endpoint(sender)[1]
    clients = view.names(endpoint_host(conn["client"]))
    if via is None and server_kind == "service" and not node_seen:
        text = (f"{server} refused the connection from {client}: it answered the SYN with a "
                f"reset. From inside the pod it cannot be told whether a backend sent it "
                f"(nothing listens on the target port) or kube-proxy did (a Service with no "
                f"endpoints): a capture of the node shows which.")
        group = (f"{server} refused connections from {clients}, a reset for each SYN (a "
                 f"backend or kube-proxy: a capture of the node shows which).")
    else:
        through = f" to {view.names(via)}" if via else ""
        text = (f"{view.names(sender)} refused the connection from {client}{through}: it "
                f"answered the SYN with a reset, so nothing listens on port {port} there.")
        group = (f"Connections from {clients}{through} were refused by {view.names(sender)}: "
                 f"a reset for each SYN, so nothing listens on port {port} there.")
    checks = [f"that a container of {_pod_words(view, sender)} listens on port {port} "
              f"(`ss -ltn` in the pod)"]
    if via and view.kind_of(via) == "service":
        checks.append("that the Service's targetPort is the port the container listens on "
                      f"(`kubectl get service -n {_namespace_of(view, via) or 'default'} "
                      f"{places.short_name(via)} -o yaml`)")
    return [{"kind": "refused", "severity": "error", "connection": conn["id"], "text": text,
             "check": "; ".join(checks), "evidence": evidence, "group": group,
             "by": sender, "by_name": places.short_name(sender), "via": via}]


def _no_endpoints(view, conn, rejected_by, how, evidence) -> dict:
    found = view.by_ip.get(endpoint_host(conn["server"])) or {}
    name = found.get("name") or conn["server"]
    ns = found.get("namespace", "default")
    answer = ("answered the SYN with ICMP port unreachable" if how == "icmp"
              else "answered the SYN with a reset")
    who = view.names(rejected_by)
    why = ("no DNAT to a pod was seen on the node" if "node" in view.vantage_kinds()
           else "a pod with nothing listening would have answered with a reset, not ICMP")
    text = (f"Service {name} ({conn['server']}) has no endpoints: {who} {answer} for it, and "
            f"{why}; kube-proxy rejects connections to a Service with no ready endpoints "
            f"this way.")
    return {"kind": "no_endpoints", "severity": "error", "connection": conn["id"],
            "text": text,
            "check": (f"`kubectl get endpointslices -n {ns} -l kubernetes.io/service-name={name}`"
                      f"; the Service's selector matches Ready pods (`kubectl get pods -n {ns} "
                      f"-l <selector>`)"),
            "evidence": evidence, "service": conn["server"], "name": name,
            "rejected_by": rejected_by, "group": text}


def mtu_blackhole(view: CaptureView, conn: dict, places: Places) -> list[dict]:
    """Full-size segments seen fewer places than smaller ones of the same direction, resent
    again and again, while the small ones get through."""
    sizes = view.segment_sizes.get(conn["id"])
    if not sizes:
        return []
    findings = []
    for side, sender in (("server", conn["server"]), ("client", conn["client"])):
        by_hops = sizes.get(side) or {}
        if len(by_hops) < 2:
            continue
        most = max(by_hops)
        largest_delivered = by_hops[most]
        messages = view.of_connection(conn["id"])
        resent = [m for m in messages if "retransmission" in m["label"] and m["len"] > 0
                  and m["src"] == sender and len(m["hops"]) < most]
        if len(resent) < 2:
            continue
        lost_size = max(m["len"] for m in resent)
        if lost_size <= largest_delivered or lost_size < 1000:
            continue
        icmp_seen = any(a.get("kind") == "icmp_error" and a.get("connection") == conn["id"]
                        and a.get("mtu") for a in view.annotations)
        receiver = conn["client"] if side == "server" else conn["server"]
        places.learn(messages)
        last = places.of(resent[-1]["hops"][-1])
        direction = f"{side}-to-{'client' if side == 'server' else 'server'}"
        icmp_words = ("an ICMP 'fragmentation needed' did come back" if icmp_seen
                      else "no ICMP 'fragmentation needed' came back")
        findings.append({
            "kind": "mtu_blackhole", "severity": "error", "connection": conn["id"],
            "text": (f"Full-size segments from {view.names(sender)} to {view.names(receiver)} "
                     f"({lost_size} B of payload) never got through, while smaller ones (up "
                     f"to {largest_delivered} B) did: a path MTU black hole. They were last "
                     f"seen {places.describe(last)} and resent {len(resent)} times; "
                     f"{icmp_words}."),
            "check": ("the MTU of every link on the path (`ip link` in the pods and on the "
                      "nodes: eth0, veth, the overlay device); that ICMP 'fragmentation "
                      "needed' (type 3 code 4) is not filtered; MSS clamping "
                      "(`iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j "
                      "TCPMSS --clamp-mss-to-pmtu`)"),
            "evidence": [m["id"] for m in resent],
            "group": (f"Full-size segments from {view.names(endpoint_host(sender))} to "
                      f"{view.names(endpoint_host(receiver))} never got through while "
                      f"smaller ones did: a path MTU black hole."),
            "direction": direction, "largest_delivered": largest_delivered,
            "lost_size": lost_size, "retransmissions": len(resent), "icmp_seen": icmp_seen,
        })
    return findings


def capture_gap(view: CaptureView, conn: dict) -> list[dict]:
    """Bytes one side acknowledged that the capture never showed: the capture lost them (a
    full buffer, a capture started late on that path), not the network."""
    unseen = conn.get("unseen_bytes") or 0
    if not unseen:
        return []
    client, server = view.names(conn["client"]), view.names(conn["server"])
    return [{
        "kind": "capture_gap", "severity": "note", "connection": conn["id"], "bytes": unseen,
        "text": (f"The capture missed {unseen} bytes between {client} and {server} that the "
                 f"receiver acknowledged (tshark: \"ACKed segment that wasn't captured\"): "
                 f"they arrived, so this is the capture's own loss, not the network's; nothing "
                 f"was resent for them."),
        "check": ("the capture's drops (dumpcap/tcpdump report \"packets dropped by kernel\": "
                  "a bigger buffer, -B, or a narrower filter); a capture started mid-stream "
                  "misses what came before"),
        "evidence": [],
        "group": (f"The capture missed bytes between "
                  f"{view.names(endpoint_host(conn['client']))} and {server} that the "
                  f"receivers acknowledged: the capture's own loss, not the network's."),
    }]


def diagnose(view: CaptureView, places: Places,
             explained: frozenset[int] | set[int] = frozenset()
             ) -> tuple[list[dict], dict[int, str]]:
    """`explained`: connections another rule found the cause of (a hairpin): no `lost` or
    `refused` is said of them, only their outcome."""
    findings: list[dict] = []
    outcomes: dict[int, str] = {}
    icmp = _icmp_errors(view)
    reset_by = {a["connection"]: a.get("by") for a in view.annotations if a.get("kind") == "rst"}
    delivered = Delivered(view)
    reused: set[int] = set()  # connections with a port_reuse finding
    for conn in view.connections:
        linked = icmp.get(conn["id"])
        icmp_rejected = (linked is not None and conn.get("handshake") != "complete"
                         and "unreachable" in (linked[1].get("error") or ""))
        outcomes[conn["id"]] = outcome(conn, icmp_rejected, reset_by.get(conn["id"]))
        if conn["id"] in explained:
            pass
        elif conn.get("handshake") == "no-answer" and linked is None:
            found = unanswered(view, conn, places, delivered)
            reused.update(f["connection"] for f in found if f["kind"] == "port_reuse")
            findings += found
        elif conn.get("handshake") in ("refused", "no-answer"):
            findings += rejected(view, conn, places, linked)
        findings += mtu_blackhole(view, conn, places)
        if conn["id"] not in reused:
            findings += capture_gap(view, conn)
    return findings, outcomes
