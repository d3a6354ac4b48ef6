"""A message's hops in path order, across capture files whose clocks may disagree.

Within one capture file, time order is path order: one clock saw the packet pass each
interface. Across files it is not: two nodes' clocks can be further apart than the
microseconds between the copies, and the copy folder (hops.py) joins copies up to its window
apart. So each file's hops keep their own order, and the files are put in path order by what
the copies themselves show (theory of operation):

1. Endpoints (a pod's or a client's own capture) sit at the ends. The capture where the packet
   started shows it going "out", or its source is the vantage's own address; the capture where
   it ended shows it coming "in", or its destination is the vantage's own. With two endpoint
   captures and one of them known, the other is the opposite end; with none known, the one
   whose copy is earliest is taken for the start.
2. Nodes lie between, in the order the tunnel shows: the node whose copy went into the tunnel
   (outbound, or the outer source is its own address) before the node where it came out.
3. Without a tunnel (routed pods, no encapsulation), the node hosting the sending pod comes
   first and the node hosting the receiving pod last (the inventory says which pod runs where).
4. Whatever this leaves undecided keeps time order (each file's earliest copy).
"""

from __future__ import annotations

from typing import NamedTuple

from .hops import Hop

START, BETWEEN, END = 0, 1, 2


class Place(NamedTuple):
    """Where a capture file was taken, as far as its vantage and the inventory tell."""

    node: str | None  # the node it was taken in: a node's own capture, or a pod's node
    forwards: bool  # a node's capture (packets pass through it) rather than an endpoint's
    addresses: frozenset[str]  # the vantage's own addresses: a pod's IPs, a node's addresses


UNKNOWN_PLACE = Place(None, False, frozenset())


def path_order(hops: list[Hop], places: list[Place], pod_nodes: dict[str, str]) -> list[Hop]:
    """`hops` in path order; the same list when they all come from one file. `places` is
    indexed by file; `pod_nodes` maps a pod's IP to its node's name."""
    groups: dict[int, list[Hop]] = {}
    for hop in hops:
        group = groups.get(hop.file)
        if group is None:
            groups[hop.file] = [hop]
        else:
            group.append(hop)
    if len(groups) == 1:
        return hops
    keys: dict[int, tuple] = {}
    undecided = []
    for file, group in groups.items():
        place = places[file] if file < len(places) else UNKNOWN_PLACE
        if place.forwards:
            keys[file] = (BETWEEN, _node_position(group, place, pod_nodes))
            continue
        end = _endpoint_end(group, place)
        if end is None:
            undecided.append(file)
        else:
            keys[file] = (end, 0)
    _decide_endpoints(undecided, groups, keys)
    order = sorted(groups, key=lambda file: (*keys[file], groups[file][0].time, file))
    return [hop for file in order for hop in groups[file]]


def _endpoint_end(group: list[Hop], place: Place) -> int | None:
    """START or END for an endpoint's capture of this packet, or None when it cannot tell."""
    for hop in group:
        if hop.direction == "out":
            return START
        if hop.direction == "in":
            return END
    first, last = group[0], group[-1]
    if first.src in place.addresses:
        return START
    if last.dst in place.addresses:
        return END
    return None


def _decide_endpoints(undecided: list[int], groups: dict[int, list[Hop]],
                      keys: dict[int, tuple]) -> None:
    """Step 1's fallbacks: the opposite end of the one known endpoint, else time order."""
    if not undecided:
        return
    known = [keys[file][0] for file in keys if keys[file][0] != BETWEEN]
    if len(undecided) == 1 and len(known) == 1:
        keys[undecided[0]] = (END if known[0] == START else START, 0)
        return
    earliest = min(group[0].time for group in groups.values())
    for file in undecided:
        keys[file] = (START if groups[file][0].time == earliest else END, 0)


def _node_position(group: list[Hop], place: Place, pod_nodes: dict[str, str]) -> int:
    """Steps 2 and 3: where a node's capture sits among the nodes (START, BETWEEN, END)."""
    went_in = came_out = False
    for hop in group:
        tunnel = hop.tunnel
        if tunnel is None:
            continue
        if hop.direction is not None:
            went_in |= hop.direction == "out"
            came_out |= hop.direction == "in"
        else:
            went_in |= tunnel.src in place.addresses
            came_out |= tunnel.dst in place.addresses
    if went_in != came_out:
        return START if went_in else END
    if place.node is not None:
        if pod_nodes.get(group[0].src) == place.node:
            return START
        if pod_nodes.get(group[-1].dst) == place.node:
            return END
    return BETWEEN


def vantage_places(vantages: list[str], inventory: dict | None) -> list[Place]:
    """Each file's Place from its vantage (`node/NAME`, `pod/NAMESPACE/NAME`, anything else
    unknown) and the inventory's nodes and pods."""
    inventory = inventory or {}
    nodes = {}
    for node in inventory.get("nodes", []):
        if isinstance(node, dict) and node.get("name"):
            nodes[node["name"]] = Place(node["name"], True, frozenset(node.get("addresses") or ()))
    pods = {}
    for pod in inventory.get("pods", []):
        if not isinstance(pod, dict):
            continue
        key = f"{pod.get('namespace')}/{pod.get('name')}"
        if pod.get("host_network") and pod.get("node") in nodes:
            pods[key] = nodes[pod["node"]]  # in its node's network: it sees what the node sees
        else:
            pods[key] = Place(pod.get("node"), False, frozenset(_pod_ips(pod)))
    places = []
    for vantage in vantages:
        kind, _, name = (vantage or "").partition("/")
        if kind == "node":
            places.append(nodes.get(name) or Place(name, True, frozenset()))
        elif kind == "pod":
            places.append(pods.get(name, UNKNOWN_PLACE))
        else:
            places.append(UNKNOWN_PLACE)
    return places


def pod_nodes(inventory: dict | None) -> dict[str, str]:
    """A pod's IP → its node's name (hostNetwork pods left out: their IP is the node's)."""
    found = {}
    for pod in (inventory or {}).get("pods", []):
        if isinstance(pod, dict) and pod.get("node") and not pod.get("host_network"):
            for ip in _pod_ips(pod):
                found[ip] = pod["node"]
    return found


def _pod_ips(pod: dict) -> list[str]:
    return pod.get("ips") or ([pod["ip"]] if pod.get("ip") else [])


def nat_node(before: Hop, after: Hop, places: list[Place]) -> str | None:
    """The node where an address rewrite between two hops happened, when the places say:
    both hops in one capture, or in two captures on the same node."""
    first = places[before.file] if before.file < len(places) else UNKNOWN_PLACE
    second = places[after.file] if after.file < len(places) else UNKNOWN_PLACE
    if before.file == after.file or first.node == second.node:
        return first.node
    return None
