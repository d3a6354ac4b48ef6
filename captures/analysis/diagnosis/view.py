"""What the diagnosis reads: the model's parts as documented in docs/model.md, plus the few
messages that can prove something (SYNs, resets, TLS records, retransmissions; a DNS
exchange lists its own messages).

The engine hands these over at the end of an analysis without building the whole document:
it lists each connection's messages worth proving with (`connection_messages`), and `fetch`
reads those a rule asks for from the message spool by id.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..records import endpoint_host
from ..words import Names

# Messages kept decoded between rules. Rules read one connection's messages at a time, several
# rules the same connection's: a few connections' worth saves reading them again, while keeping
# every message fetched would grow with the capture (330 MB at 200k packets).
CACHED_MESSAGES = 4096
FIRST_READ = 8  # messages read at a time by first_of_connection


@dataclass
class CaptureView:
    files: list[dict]
    participants: list[dict]
    connections: list[dict]
    dns: Sequence[Mapping]
    annotations: list[dict]
    http: list[dict] = field(default_factory=list)
    duration: float | None = None  # seconds from the first packet to the last
    # connection id -> ids of its messages worth proving with (SYN, SYN-ACK, RST, FIN, TLS
    # handshake records, retransmissions), in time order
    connection_messages: Mapping[int, Sequence[int]] = field(default_factory=dict)
    # annotation index -> ids of the messages that carry it (an ICMP error's own message)
    annotation_messages: dict[int, list[int]] = field(default_factory=dict)
    # connection id -> {"client"|"server": {hops seen: largest payload seen at that many}}: a
    # segment seen at fewer places than others of its direction did not get as far
    segment_sizes: dict[int, dict[str, dict[int, int]]] = field(default_factory=dict)
    # connection id -> the source endpoints of its FIN and RST segments (every one, not only
    # those among its kept messages); a connection missing here is not known, not unclosed
    closers: Mapping[int, Collection[str]] = field(default_factory=dict)
    # connection id -> how many SYN-ACK segments it carried (resent ones too); a connection
    # missing here is not known
    synacks: dict[int, int] = field(default_factory=dict)
    # ids -> message dicts (docs/model.md), for the ids asked
    fetch: Callable[[Iterable[int]], dict[int, dict]] = lambda ids: {}
    # ip -> a participant-like description, for addresses that are not participants (a pod
    # seen only after a DNAT): the engine's Identity.describe
    describe: Callable[[str], dict] | None = None

    def __post_init__(self) -> None:
        self.by_ip = _Directory({p["ip"]: p for p in self.participants}, self.describe)
        self.names = Names(self.participants)
        self.names.by_ip = self.by_ip
        self._messages: OrderedDict[int, dict] = OrderedDict()
        self._answered: set[int] | None = None

    # -- messages ------------------------------------------------------------------------------

    def messages(self, ids: Iterable[int]) -> list[dict]:
        """The messages with these ids, in the order asked (ids not in the capture left out)."""
        ids = list(ids)
        cache = self._messages
        found = {}
        wanted = []
        for ident in ids:
            message = cache.get(ident)
            if message is None:
                wanted.append(ident)
            else:
                cache.move_to_end(ident)
                found[ident] = message
        if wanted:
            fetched = self.fetch(wanted)
            found.update(fetched)
            cache.update(fetched)
            while len(cache) > CACHED_MESSAGES:
                cache.popitem(last=False)
        return [found[i] for i in ids if i in found]

    def of_connection(self, conn_id: int) -> list[dict]:
        return self.messages(self.connection_messages.get(conn_id, ()))

    def first_of_connection(self, conn_id: int, wanted: Callable[[dict], bool]) -> dict | None:
        """The connection's first message that is `wanted`, read a few at a time: a rule
        that looks at thousands of connections for their first payload reads four or so
        messages of each, not all that the connection kept."""
        ids = self.connection_messages.get(conn_id, ())
        for start in range(0, len(ids), FIRST_READ):
            for message in self.messages(ids[start:start + FIRST_READ]):
                if wanted(message):
                    return message
        return None

    def of_exchange(self, exchange: Mapping) -> list[dict]:
        return self.messages(exchange.get("messages", ()))

    def closed_by(self, conn_id: int, endpoints: set[str]) -> bool:
        """Whether any of these endpoints sent a FIN or RST on the connection; True when not
        known, so a rule that asks only to skip reading messages never skips wrongly."""
        closers = self.closers.get(conn_id)
        return closers is None or any(closer in endpoints for closer in closers)

    def resent_synack(self, conn_id: int) -> bool:
        """Whether the connection may have carried a SYN-ACK more than once; True when not
        known, as closed_by."""
        return self.synacks.get(conn_id, 2) > 1

    def answered(self, conn_id: int) -> bool:
        """Whether an HTTP request of this connection got a response."""
        if self._answered is None:
            self._answered = {h["connection"] for h in self.http if h.get("status") is not None}
        return conn_id in self._answered

    # -- what names what -----------------------------------------------------------------------

    def kind_of(self, endpoint: str | None) -> str | None:
        if not endpoint:
            return None
        found = self.by_ip.get(endpoint_host(endpoint))
        return found.get("kind") if found else None

    def seen_from(self) -> str:
        """How this capture's vantage points are named in a sentence."""
        kinds = self.vantage_kinds()
        if kinds == {"pod"}:
            return "inside the client's pod"
        return "this one capture point" if len(self.files) == 1 else "these capture points"

    def vantage_kinds(self) -> set[str]:
        """"pod", "node", "host", or "unknown" for each file."""
        kinds = set()
        for file in self.files:
            vantage = file.get("vantage") or ""
            kinds.add(vantage.split("/", 1)[0] if "/" in vantage else "unknown")
        return kinds


class _Directory:
    """Participants by IP, then whatever `describe` knows (named addresses only)."""

    def __init__(self, participants: dict[str, dict], describe) -> None:
        self.participants = participants
        self.describe = describe

    def get(self, ip: str, default=None):
        found = self.participants.get(ip)
        if found is None and self.describe is not None:
            described = self.describe(ip)
            if described.get("kind") not in ("external", "loopback"):
                found = described
        return found if found is not None else default
