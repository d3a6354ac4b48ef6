"""What the path did to a connection that its two ends did not: a DNAT back to the caller
itself (hairpin), a reset forged in the peer's name, and an idle connection the path forgot.

- hairpin: a pod calling a Service whose DNAT picks the pod itself. On a bridge, the DNATed
  frame must leave through the port it came in on, which the bridge refuses unless that port's
  hairpin mode is on; and without kube-proxy's masquerade for it the SYN comes back from the
  pod's own address, which the pod drops (a martian), and a reply would go to itself directly.
  Seen where a hop shows the DNAT to the client's own address; a pod's own capture cannot show
  the DNAT, and nothing is said from there but that the SYN went unanswered.
- injected_reset: a reset whose claimed sender's own packets of the connection all appear at
  one place (the sender's veth, entering the node), while the reset does not, though the same
  capture saw it elsewhere at that moment: something on the path made it. Seen only with a
  capture of the sender's node (or of both ends' interfaces); from one pod's eth0 a forged
  reset and a real one look alike, and nothing is said.
- idle_reset: a kept-alive connection that served a request, sat idle, and whose next request
  was never answered (resent) or was reset. Conntrack, IPVS and cloud load balancers forget
  idle connections after a timeout; the sentence names the known ones the idle time exceeds,
  and, where a node capture shows the request no longer DNATed as the connection's earlier
  packets were, that the node's conntrack forgot it.
"""

from __future__ import annotations

from ..records import endpoint_host, split_endpoint
from .loss import trace
from .places import Place, Places
from .servers import from_client, server_of
from .view import CaptureView

IDLE_MIN_S = 1.0  # an idle gap shorter than this is a pause between requests, not idle
# Idle timeouts that forget connections on the path, longest first (seconds, words).
KNOWN_IDLE_TIMEOUTS = (
    (432000, "Linux conntrack's default established timeout (5 days)"),
    (86400, "kube-proxy's conntrack established timeout (24 h)"),
    (900, "IPVS's TCP idle timeout (900 s)"),
    (350, "an AWS Network Load Balancer's idle timeout (350 s)"),
    (240, "an Azure Load Balancer's default idle timeout (4 min)"),
)
TIMEOUTS_NAMED = 2


def _flags(message: dict) -> str:
    return message.get("flags") or ""


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _ip(endpoint: str | None) -> str | None:
    return endpoint_host(endpoint) if endpoint else None


# -- hairpin -----------------------------------------------------------------------------------


def hairpins(view: CaptureView, places: Places) -> list[dict]:
    """Connections never answered whose DNAT, as a hop shows it, picked the client itself."""
    findings = []
    for conn in view.connections:
        client_ip = endpoint_host(conn["client"])
        if conn.get("handshake") != "no-answer" or _ip(conn.get("server_after_nat")) != client_ip:
            continue
        messages = view.of_connection(conn["id"])
        syns = [m for m in messages if _flags(m) == "S"]
        if not syns:
            continue
        places.learn(syns)
        farthest = max(syns, key=lambda m: len(m["hops"]))
        target = conn["server_after_nat"]
        back = [h for h in farthest["hops"] if h["dst"] == target
                and _came_back(view, places, places.of(h), client_ip)]
        findings.append(_hairpin(view, places, conn, syns, farthest, back))
    return findings


def _came_back(view: CaptureView, places: Places, place: Place, client_ip: str) -> bool:
    """Whether `place` is the client's own interface, on the way in to it."""
    if place.vantage_kind == "node":
        return place.direction == "out" and places.owner(place) == client_ip
    found = view.by_ip.get(client_ip) or {}
    return place.vantage == f"pod/{found.get('namespace')}/{found.get('name')}"


def _hairpin(view, places, conn, syns, farthest, back) -> dict:
    client = view.names(endpoint_host(conn["client"]))
    service, target = view.names(conn["server"]), conn["server_after_nat"]
    pod = places.short_name(target)
    last = places.of(farthest["hops"][-1])
    masqueraded = None
    if back:
        masqueraded = _ip(back[0]["src"]) != _ip(conn["client"])
        interface = places.interface_words(places.of(back[0]))
        how = ("came back to it through " + interface
               + (", masqueraded, and still went unanswered." if masqueraded else
                  " with its own address as the source (not masqueraded), so the pod dropped "
                  "it: a packet from the pod's own address arriving on its eth0 is a martian, "
                  "and a reply would go to itself directly, never through the node."))
    else:
        own = places.interface_of(_ip(conn["client"]), last.vantage)
        own_words = places.interface_words(Place(last.vantage, own, "out")) if own else None
        never = (f" and never came back out of {own_words}" if own_words
                 else " and never came back to it")
        how = (f"was last seen {places.describe(last)}{never}: a bridge does not send a frame "
               f"back out of the port it came in on unless that port's hairpin mode is on.")
    text = (f"The connection from {client} to {service} was sent back to {pod} itself: "
            f"kube-proxy's DNAT picked the calling pod ({target}), a hairpin. The SYN {how}")
    sep_hint = "`iptables -t nat -S | grep -- '-j KUBE-MARK-MASQ'` in the endpoint's KUBE-SEP chain"
    return {
        "kind": "hairpin", "severity": "error", "connection": conn["id"],
        "service": conn["server"], "dnat_to": target, "returned": bool(back),
        "masqueraded": masqueraded, "last_seen": last.as_dict(), "text": text,
        "check": ("hairpin mode on the pod's bridge port (`cat /sys/class/net/<bridge>/brif/"
                  "<veth>/hairpin_mode` on the node; kubelet's --hairpin-mode, the CNI bridge "
                  "plugin's \"hairpinMode\": true); kube-proxy's masquerade for a pod reaching "
                  f"itself ({sep_hint}); or call the pod's own port directly (localhost)"),
        "evidence": [m["id"] for m in syns],
        "group": (f"Connections from {pod} to {service} were sent back to {pod} itself by the "
                  f"DNAT (a hairpin) and never answered: their SYNs "
                  + ("never came back to it." if not back else
                     "came back masqueraded." if masqueraded else
                     "came back from its own address, not masqueraded.")),
    }


# -- injected_reset ----------------------------------------------------------------------------


def _key(place: Place) -> tuple:
    return place.vantage, place.interface, place.direction


def forged_resets(view: CaptureView, places: Places) -> list[dict]:
    if len(view.files) < 2 and "node" not in view.vantage_kinds():
        return []  # one pod's interface: a forged reset and a real one look alike there
    findings = []
    for conn in view.connections:
        if conn.get("closed") != "rst":
            continue
        messages = view.of_connection(conn["id"])
        for reset in (m for m in messages if "R" in _flags(m)):
            found = _forged(view, places, conn, messages, reset)
            if found is not None:
                findings.append(found)
                break  # one per connection: the first reset ended it
    return findings


def _forged(view, places, conn, messages, reset) -> dict | None:
    by_client = from_client(reset, conn)
    genuine = [m for m in messages if m is not reset and from_client(m, conn) == by_client
               and "R" not in _flags(m)]
    origins = {_key(place): place for place in (places.of(m["hops"][0]) for m in genuine)}
    if len(origins) != 1:
        return None  # no packet of its own to compare with, or no one place they start from
    origin = next(iter(origins.values()))
    seen = [places.of(h) for h in reset["hops"]]
    if any(_key(p) == _key(origin) for p in seen):
        return None
    there = [p for p in seen if p.vantage == origin.vantage]
    if not there or origin.vantage_kind != "node":
        return None  # its capture did not see the reset at all (or stopped): nothing to say
    places.learn(messages)
    claimed = reset["hops"][0]["src"]
    claimed_name = places.short_name(claimed)
    first = there[0]
    node = origin.vantage_name
    if first.direction == "in":
        sender, by = (f"something beyond {places.interface_words(first)} (it entered node "
                      f"{node} there)"), None
    else:
        sender, by = f"node {node}'s own network stack", node
    request = [m for m in messages if m["t"] <= reset["t"] and m is not reset
               and from_client(m, conn) != by_client and m["len"] > 0]
    delivered = None
    if request:
        delivered = any(_key(places.of(h))[:2] == _key(origin)[:2] for h in request[-1]["hops"])
    origin_words = places.interface_words(origin)
    text = (f"The reset that ended the connection between {view.names(conn['client'])} and "
            f"{view.names(conn['server'])} did not come from {claimed_name}: {sender} sent it "
            f"in {claimed_name}'s name. It was first seen {places.describe(first)} and never on "
            f"{origin_words}, where {claimed_name}'s own packets of this connection enter the "
            f"node.")
    if delivered is False:
        text += (f" The segment it answered ({request[-1]['label']}) never reached "
                 f"{origin_words} either: {claimed_name} never saw it.")
    text += (" A reject rule on the path (iptables or nftables REJECT --reject-with "
             "tcp-reset, a network policy engine, an IPS) forges resets like this.")
    return {
        "kind": "injected_reset", "severity": "error", "connection": conn["id"],
        "reset": reset["id"], "claimed": claimed, "sent_by_node": by,
        "first_seen": first.as_dict(), "origin": origin.as_dict(),
        "request_delivered": delivered, "text": text,
        "check": (f"reject rules on node {node} (`iptables-save -c | grep -- "
                  f"'--reject-with tcp-reset'`, `nft list ruleset | grep reset`), network "
                  f"policies that reject rather than drop; {claimed_name}'s own logs, which "
                  f"should show no reset sent"),
        "evidence": [*(m["id"] for m in request[-1:]), reset["id"]],
        "group": (f"Resets in {claimed_name}'s name were forged on the path ({sender}): they "
                  f"never came from {origin_words}."),
    }


# -- idle_reset --------------------------------------------------------------------------------


def idle_resets(view: CaptureView, places: Places) -> list[dict]:
    findings = []
    for conn in view.connections:
        if (conn.get("handshake") not in ("complete", "midstream") or conn.get("keepalives")
                or not (conn.get("retransmissions") or conn.get("closed") == "rst")
                or not _long_enough(conn)):
            continue
        found = _idle(view, places, conn, view.of_connection(conn["id"]))
        if found is not None:
            findings.append(found)
    return findings


def _long_enough(conn: dict) -> bool:
    """Whether the connection lasted long enough to hold an idle gap: no gap between two of
    its messages exceeds its first packet to its last (message times are rounded to 1 us)."""
    total_ms = (conn.get("timing") or {}).get("total_ms")
    return total_ms is None or total_ms + 0.01 >= IDLE_MIN_S * 1000


def _idle(view, places, conn, messages) -> dict | None:
    for index, request in enumerate(messages):
        if not from_client(request, conn) or request["len"] == 0 or index == 0:
            continue
        if "retransmission" in request["label"]:
            continue
        earlier, later = messages[:index], messages[index + 1:]
        answered_before = any(not from_client(m, conn) and m["len"] > 0 for m in earlier)
        idle = request["t"] - max(m["t"] for m in earlier)
        if not answered_before or idle < IDLE_MIN_S:
            continue
        if any(not from_client(m, conn) and "F" in _flags(m) for m in earlier):
            return None  # the server had closed it: a stale connection, not a forgotten one
        if any(not from_client(m, conn) and m["len"] > 0 for m in later):
            continue  # answered: the idle time did no harm
        resent = [m for m in later if from_client(m, conn) and m["len"] > 0
                  and "retransmission" in m["label"]]
        resets = [m for m in later if not from_client(m, conn) and "R" in _flags(m)]
        if not resent and not resets:
            continue
        return _idle_finding(view, places, conn, earlier, request, resent, resets, idle)
    return None


def _idle_finding(view, places, conn, earlier, request, resent, resets, idle) -> dict:
    client, server = view.names(conn["client"]), view.names(conn["server"])
    if resets:
        outcome = f"answered with a reset by {view.names(resets[0]['hops'][0]['src'])}"
    else:
        span = resent[-1]["t"] - request["t"]
        outcome = (f"never answered (resent {len(resent)} time{'s' if len(resent) != 1 else ''}"
                   f" over {_duration(span)})")
    text = (f"The connection from {client} to {server} sat idle for {_duration(idle)} after "
            f"its last response; its next request was then {outcome}.")
    attempts = [request, *resent]
    delivered = [m for m in earlier if from_client(m, conn) and m["len"] > 0]
    places.learn([*attempts, *delivered])
    loss = trace(attempts, delivered, places) if not resets else None
    forgot = False
    if loss is not None and loss.visible:
        before_nat = _nat_target(earlier, conn)
        forgot = before_nat is not None and not loss.after_nat
        text += f" It was last seen {places.describe(loss.last_seen)}"
        if forgot:
            text += (f" and was no longer DNATed to {view.names(before_nat)} as the "
                     f"connection's earlier packets were: the node's conntrack had forgotten "
                     f"the connection.")
        else:
            text += (f", never on {loss.next_expected['description']}."
                     if loss.next_expected else ".")
    exceeded = [(s, words) for s, words in KNOWN_IDLE_TIMEOUTS if s <= idle]
    if exceeded:
        named = " and ".join(words for _, words in exceeded[:TIMEOUTS_NAMED])
        text += f" The idle time is longer than {named}, which forget idle connections."
    elif forgot:
        text += (" The node's conntrack timeout, or another idle timeout on the path, is "
                 "shorter than that.")
    else:
        text += (" Most likely an idle timeout on the path shorter than that (conntrack's, a "
                 "load balancer's, a NAT gateway's) forgot the connection; a server that went "
                 "away meanwhile would look the same from here.")
    port = split_endpoint(server_of(conn))[1]
    return {
        "kind": "idle_reset", "severity": "error", "connection": conn["id"],
        "idle_s": round(idle, 3), "request": request["id"],
        "outcome": "reset" if resets else "unanswered", "retransmissions": len(resent),
        "timeouts": [{"seconds": s, "name": words} for s, words in exceeded],
        "conntrack_forgot": forgot,
        "last_seen": loss.last_seen.as_dict() if loss is not None and loss.visible else None,
        "text": text,
        "check": ("the client pool's idle timeout against the path's: the node's conntrack "
                  "(`sysctl net.netfilter.nf_conntrack_tcp_timeout_established`, "
                  f"`conntrack -L -p tcp --dport {port}`), IPVS (`ipvsadm -l --timeout`), a "
                  "load balancer's idle timeout; keep pooled connections idle for less than "
                  "the shortest, or send TCP keep-alives"),
        "evidence": [*(m["id"] for m in earlier[-1:]), request["id"],
                     *(m["id"] for m in [*resent, *resets][:8])],
        "group": (f"Kept-alive connections from {places.short_name(conn['client'])} to "
                  f"{server} failed on their first request after sitting idle: "
                  + ("the node's conntrack had forgotten them." if forgot else
                     "most likely an idle timeout on the path forgot them.")),
    }


def _nat_target(messages: list[dict], conn: dict) -> str | None:
    """Where the connection's earlier client packets were DNATed to, as their hops show."""
    for message in messages:
        if not from_client(message, conn):
            continue
        for hop in message["hops"]:
            if hop["dst"] != conn["server"]:
                return hop["dst"]
    return None


def diagnose(view: CaptureView, places: Places) -> list[dict]:
    """Forged resets and forgotten idle connections (hairpins go first, in __init__)."""
    return forged_resets(view, places) + idle_resets(view, places)
