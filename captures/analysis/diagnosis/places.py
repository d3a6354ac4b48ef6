"""Where on the path a packet was seen, in words a reader can act on.

A hop names its interface as the model does: "node/kviz-node:cbr0" when several files were
analysed together, a bare "eth0" for one file (whose vantage the capture's files give). An
interface on a node that only ever carried one pod's own address (its packets entering, or
packets leaving towards it) is that pod's veth, and is called so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..records import endpoint_host

# Interfaces that carry many pods' packets: never one pod's own.
SHARED_PREFIXES = ("cbr", "cni", "docker", "br-", "eth", "ens", "enp", "bond", "flannel",
                   "vxlan", "cilium_host", "cilium_net", "tunl", "weave", "kube-", "lo", "any",
                   "genev", "nodelocal")


@dataclass(frozen=True)
class Place:
    vantage: str | None  # "node/kviz-node", "pod/default/ubuntu", or None when unknown
    interface: str | None  # "cbr0"
    direction: str | None  # "in", "out" or None

    @property
    def vantage_kind(self) -> str | None:
        return self.vantage.split("/", 1)[0] if self.vantage and "/" in self.vantage else None

    @property
    def vantage_name(self) -> str | None:
        return self.vantage.split("/", 1)[1] if self.vantage and "/" in self.vantage else None

    hop: str | None = None  # the interface as the model's hops name it

    def as_dict(self) -> dict:
        return {"vantage": self.vantage, "interface": self.interface,
                "direction": self.direction, "hop": self.hop}


class Places:
    def __init__(self, files: list[dict], names) -> None:
        self.vantages = [f.get("vantage") for f in files]
        self.names = names
        self.owners: dict[tuple[str | None, str], set[str]] = {}
        self.seen: dict[str, Place] = {}  # every place met, by its hop name

    def of(self, hop: dict) -> Place:
        interface = hop.get("interface")
        direction = hop.get("direction")
        place = None
        if interface:
            for vantage in self.vantages:
                if vantage and interface.startswith(vantage + ":"):
                    place = Place(vantage, interface[len(vantage) + 1:], direction, interface)
                    break
        if place is None:
            only = self.vantages[0] if len(self.vantages) == 1 else None
            place = Place(only, interface, direction, interface)
        if interface and interface not in self.seen:
            self.seen[interface] = place
        return place

    def hop_name(self, vantage: str | None, interface: str) -> str:
        """The name the model's hops give `interface` on `vantage`."""
        for name, place in self.seen.items():
            if place.vantage == vantage and place.interface == interface:
                return name
        return f"{vantage}:{interface}" if vantage and len(self.vantages) > 1 else interface

    def mentioned_in(self, text: str) -> list[dict]:
        """The places a sentence names (by interface or by node), for redaction."""
        found = []
        for name, place in self.seen.items():
            words = [w for w in (place.interface, place.vantage_name) if w]
            if any(re.search(rf"(?<![\w.-]){re.escape(w)}(?![\w-])", text) for w in words):
                found.append({"hop": name, "vantage": place.vantage,
                              "interface": place.interface})
        return found

    # -- whose interface ----------------------------------------------------------------------

    def learn(self, messages: list[dict]) -> None:
        """Note which address each node interface carries, from messages' hops."""
        for message in messages:
            for hop in message["hops"]:
                place = self.of(hop)
                if place.vantage_kind != "node" or not place.interface:
                    continue
                if place.interface.startswith(SHARED_PREFIXES):
                    continue
                ip = endpoint_host(hop["src"] if place.direction == "in" else hop["dst"])
                if place.direction in ("in", "out"):
                    self.owners.setdefault((place.vantage, place.interface), set()).add(ip)

    def owner(self, place: Place) -> str | None:
        ips = self.owners.get((place.vantage, place.interface or ""), set())
        return next(iter(ips)) if len(ips) == 1 else None

    def interface_of(self, ip: str, vantage: str | None) -> str | None:
        """The node interface that is `ip`'s own, on `vantage`, if the packets showed one."""
        for (where, interface), ips in self.owners.items():
            if ips == {ip} and (vantage is None or where == vantage):
                return interface
        return None

    # -- words --------------------------------------------------------------------------------

    def interface_words(self, place: Place) -> str:
        interface = place.interface or "an unnamed interface"
        owner = self.owner(place)
        if owner:
            return f"{interface} ({self.short_name(owner)}'s veth)"
        return interface

    def describe(self, place: Place, with_node: bool = True) -> str:
        """"leaving cbr0 on node kviz-node", "on eth0 inside pod default/ubuntu"."""
        interface = self.interface_words(place)
        verb = {"in": "entering the node from", "out": "leaving"}.get(place.direction or "")
        if place.vantage_kind == "node":
            where = f" on node {place.vantage_name}" if with_node else ""
            return f"{verb} {interface}{where}" if verb else f"on {interface}{where}"
        if place.vantage_kind == "pod":
            return f"on {interface} inside pod {place.vantage_name}"
        if place.vantage:
            return f"on {interface} at {place.vantage}"
        return f"on {interface}"

    def short_name(self, ip_or_endpoint: str | None) -> str:
        """"nginx-a" for a named participant, else the address."""
        if not ip_or_endpoint:
            return "?"
        ip = endpoint_host(ip_or_endpoint)
        found = self.names.by_ip.get(ip)
        return found["name"] if found and found.get("name") else ip
