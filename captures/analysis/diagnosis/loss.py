"""Where a packet that never arrived was last seen, and where it should have appeared next.

A packet's hops are the places it was seen, in time order. Of the copies of one packet (a SYN
and its retransmissions, a DNS query and its repeat) the one that went farthest tells where the
path ends for it. The next place it should have appeared comes from a packet of the same flow
that did get through (its first hop the lost one lacks), else from the interface that carries
the destination's own packets, else it is only named ("nginx-a's interface"). When every hop
was seen inside the sender's own pod, the place cannot be seen from this capture at all, and
the finding says which capture would show it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..records import endpoint_host
from .places import Place, Places


@dataclass
class Loss:
    message: int  # the copy that went farthest
    last_seen: Place
    next_expected: dict | None  # {"vantage", "interface", "description"}
    after_nat: bool
    nat_to: str | None  # the destination as rewritten, when a hop showed it
    attempts: int
    visible: bool  # False: every hop was inside the sender's pod

    def as_dict(self) -> dict:
        return {"message": self.message, "last_seen": self.last_seen.as_dict(),
                "next_expected": self.next_expected, "after_nat": self.after_nat,
                "attempts": self.attempts}


def _key(place: Place) -> tuple:
    return place.vantage, place.interface


def trace(attempts: list[dict], delivered: list[dict], places: Places) -> Loss | None:
    """`attempts`: the copies that got no answer; `delivered`: packets of the same flow and
    direction that did arrive (may be empty)."""
    if not attempts:
        return None
    farthest = max(attempts, key=lambda m: (len(m["hops"]), m["hops"][-1]["t"]))
    hops = farthest["hops"]
    last = places.of(hops[-1])
    original_ip = endpoint_host(farthest["dst"])
    rewritten = [h["dst"] for m in attempts for h in m["hops"]
                 if endpoint_host(h["dst"]) != original_ip]
    nat_to = rewritten[0] if rewritten else None
    seen = {_key(places.of(h)) for h in hops}
    next_expected = None
    reference = max(delivered, key=lambda m: len(m["hops"]), default=None)
    if reference is not None:
        for hop in reference["hops"]:
            place = places.of(hop)
            if _key(place) not in seen:
                next_expected = {**place.as_dict(),
                                 "description": places.interface_words(place)}
                break
    if next_expected is None:
        target = endpoint_host(nat_to or farthest["dst"])
        vantage = last.vantage if last.vantage_kind == "node" else None
        interface = places.interface_of(target, vantage)
        hop = places.hop_name(vantage, interface) if interface else None
        description = (places.interface_words(Place(vantage, interface, "out", hop))
                       if interface else f"{places.short_name(target)}'s interface")
        next_expected = {"vantage": vantage, "interface": interface, "direction": "out",
                         "hop": hop, "description": description}
    vantage_kinds = {places.of(h).vantage_kind for m in attempts for h in m["hops"]}
    vantages = {places.of(h).vantage for m in attempts for h in m["hops"]}
    visible = "node" in vantage_kinds or len(vantages) > 1
    return Loss(farthest["id"], last, next_expected, nat_to is not None, nat_to,
                len(attempts), visible)


def where_words(loss: Loss, places: Places) -> str:
    """"after the DNAT to nginx-a (10.244.10.90:80): last seen leaving cbr0 on node n, never
    on nginx-a's interface"."""
    nat = ""
    if loss.after_nat and loss.nat_to:
        nat = f" after the DNAT to {places.names(loss.nat_to)}"
    where = places.describe(loss.last_seen, with_node=False)
    never = ""
    if loss.next_expected:
        never = f", never on {loss.next_expected['description']}"
    node = loss.last_seen.vantage_name if loss.last_seen.vantage_kind == "node" else None
    on_node = f" on node {node}" if node else ""
    return f"was lost{on_node}{nat}: last seen {where}{never}"
