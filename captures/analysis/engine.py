"""The analysis pipeline: capture files → logical messages → conversations → SequenceModel.

1. Each file is read as a stream of frames; several files are merged by time.
2. Frames decode to PacketRecords; copies of one packet fold into one logical message (hops).
3. Each logical message updates its TCP connection or UDP flow and its DNS exchange, and
   becomes one message of the model, labelled, with NAT rewrites between its hops annotated.
4. At the end, connection-level findings (pooling, kept open, sidecars, mTLS) are annotated and
   names are given to the participants.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

from . import hops as copies
from . import readahead
from .diagnosis import CaptureView, Diagnosis, diagnose
from .dns import DNS_PORTS, DnsTracker, ExchangeFields, dns_label
from .hops import DEFAULT_WINDOW, CopyFolder, LogicalMessage, rewrites
from .icmp import parse_icmp
from .identity import Identity
from .mesh import is_loopback, sidecar_findings
from .model import (
    MessageSpool,
    SequenceModel,
    encode_addresses,
    encode_hop,
    encode_hop_head,
    encode_message,
    encode_tunnel,
    hop_vantage,
    rounded,
    seconds_text,
)
from .packets import LINKTYPE_NAMES, SUPPORTED_LINKTYPES, decode_frame
from .pathorder import nat_node, path_order, pod_nodes, vantage_places
from .pcapfile import Warnings, read_frames
from .records import (
    ACK,
    FIN,
    IPPROTO_NAMES,
    PSH,
    RST,
    SYN,
    URG,
    CaptureError,
    PacketRecord,
    RawFrame,
    endpoint,
    endpoint_host,
)
from .tcp import TcpTracker
from .tlsdecrypt import KeyLog, KeyLogError

META_SCHEMA = "kviz.capture-meta/1"
DEFAULT_MAX_FLOWS = 200_000
# TCP connections tracked, whatever --max-flows says: from its first packet to the diagnosis'
# findings a connection costs up to 8 KB (bench/hostile_bench.py: a flood of unanswered SYNs),
# so this many keep such a flood within 300 MB (and the benchmark's healthy million packets,
# about 25,000 connections, within the bound).
MAX_CONNECTIONS = 28_000
MAX_PARTICIPANTS = 100_000  # addresses listed (and described) as participants
MAX_ICMP_ERRORS = 1000  # icmp_error findings (one per sender, error and quoted packet)
MAX_NAME_FINDINGS = 1000  # names counted per kind of DNS finding (nxdomain, unanswered, ...)
MAX_DIAGNOSED_LOOKUPS = 50_000  # DNS exchanges handed to the diagnosis
VANTAGES_KEPT = 4096  # encoded vantage points cached (interfaces × directions)
ENDPOINTS_KEPT: Final = 20_000  # endpoint texts kept (about 2 MB)
MESSAGE_TEXTS_KEPT: Final = 20_000  # a message's address texts kept, per vantage (under 10 MB)
EVIDENCE_PER_CONNECTION: Final = 64  # messages kept per connection for the diagnosis
RETRANSMISSIONS_KEPT: Final = 16  # of which this many are kept for retransmissions only
KEY_FLAGS: Final = SYN | RST | FIN
CLOSE_FLAGS: Final = RST | FIN
KEY_PHASES: Final = ("request", "response")
TUNNELS_KEPT = 4096  # encoded tunnels cached (a capture has a few: one per pair of nodes)
FLAG_LETTERS = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A"), (URG, "U"))


@dataclass
class CaptureFile:
    """One capture file and where it was taken (see docs/model.md)."""

    path: str | Path
    vantage: str | None = None
    interfaces: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: str | Path) -> CaptureFile:
        path = Path(path)
        meta_path = path.with_name(path.name + ".meta.json")
        if not meta_path.exists():
            return cls(path)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("schema") != META_SCHEMA:
                raise ValueError(f"schema is {meta.get('schema')!r}, expected {META_SCHEMA!r}")
            interfaces = {int(k): str(v) for k, v in (meta.get("interfaces") or {}).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise CaptureError(f"{meta_path}: not a valid capture metadata file ({exc})") from exc
        return cls(path, meta.get("vantage"), interfaces)


def analyze_files(
    files,
    inventory: dict | None = None,
    *,
    window: float = DEFAULT_WINDOW,
    max_flows: int = DEFAULT_MAX_FLOWS,
    keylog=None,
) -> SequenceModel:
    """`keylog`: a tlsdecrypt.KeyLog (or the path of one) whose secrets decrypt the TLS
    connections it has keys for (docs/model.md, Decrypted TLS)."""
    if keylog is not None and not isinstance(keylog, KeyLog):
        try:
            keylog = KeyLog.from_path(keylog)
        except KeyLogError as exc:
            raise CaptureError(str(exc)) from exc
    files = [f if isinstance(f, CaptureFile) else CaptureFile.from_path(f) for f in files]
    if not files:
        raise CaptureError("no capture files given")
    # The analysis makes millions of short-lived objects and no reference cycles; the cyclic
    # collector would rescan the long-lived connection tables over and over for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _Analysis(files, inventory, window, max_flows, keylog).run()
    finally:
        if collecting:
            gc.enable()


FLAG_STRINGS: Final = [
    "".join(letter for bit, letter in FLAG_LETTERS if flags & bit) for flags in range(256)
]
FLAGS_JSON: Final = [f'"{letters}"' for letters in FLAG_STRINGS]  # letters need no escaping


def _by_side(sizes: dict[int, int]) -> dict[str, dict[int, int]]:
    """A connection's largest payloads by (hops seen << 1 | direction), as the diagnosis
    reads them: {"client": {hops: bytes}, "server": {hops: bytes}}."""
    sides: dict[str, dict[int, int]] = {"client": {}, "server": {}}
    for seen_at, length in sizes.items():
        sides["server" if seen_at & 1 else "client"][seen_at >> 1] = length
    return sides


class _Analysis:
    def __init__(
        self,
        files: list[CaptureFile],
        inventory: dict | None,
        window: float,
        max_flows: int,
        keylog: KeyLog | None = None,
    ) -> None:
        self.files = files
        self.warnings = Warnings()
        self.identity = Identity(inventory, self.warnings)
        self.inventory_nodes = [
            n
            for n in (inventory or {}).get("nodes", [])
            if isinstance(n, dict) and n.get("interfaces")
        ]
        self.malformed_dns = 0  # messages on DNS ports that do not parse as DNS
        self.folder = CopyFolder(window)
        self.tcp = TcpTracker(min(max_flows, MAX_CONNECTIONS), self.warnings, keylog)
        self.dns = DnsTracker(max_flows, self.warnings)
        # (src, sport, dst, dport) as first seen → flow id << 1 | direction (1: from its
        # server); a packet the other way finds it by the swapped tuple. One entry and an int
        # per flow, as a flood of one-datagram flows makes a large table of them.
        self.udp_flows: dict[tuple, int] = {}
        self.udp_servers: list[tuple] = []  # per UDP flow: the destination its client used
        self.server_tuples: dict[tuple, tuple] = {}  # one tuple per server, shared by its flows
        self.max_flows = max_flows
        self.messages = MessageSpool()
        self.annotations: list[dict] = []
        self.annotation_index: dict[tuple, int] = {}
        # ip → its server ports, None until it has one (most of a flood's sources never do)
        self.participants: dict[str, set | None] = {}
        self.annotation_messages: dict[int, list[int]] = {}  # an ICMP error's own messages
        self.icmp_errors = 0  # icmp_error findings made (MAX_ICMP_ERRORS)
        self.vantage_json: dict[tuple, str] = {}  # (interface label, direction) → hop_vantage
        self.tunnel_json: dict[tuple, str] = {}  # Tunnel → encode_tunnel
        # ip → port → endpoint text: each message names two, and most were named before
        self.endpoint_text: dict[str, dict[int, str]] = {}
        self.endpoints_kept = 0
        # (interface label, direction, src, dst, protocol) → the message's and its first
        # hop's texts of them (_message_texts): the same for every packet of a flow one way
        self.message_texts: dict[tuple, tuple[str, str]] = {}
        self.t0: float | None = None
        self.multi = len(files) > 1
        self.vantages = [f.vantage or Path(f.path).stem for f in files]
        self.places = vantage_places(self.vantages, inventory)
        self.pod_nodes = pod_nodes(inventory)

    # -- reading ---------------------------------------------------------------------------

    def run(self) -> SequenceModel:
        file_facts: list[dict] = []
        batches: Generator[list[LogicalMessage], None, None]
        if readahead.wanted(self.files):
            batches = readahead.batches(self, file_facts)
        else:
            batches = self.logical_messages(file_facts)
        # In batches, so that this loop (compiled) resumes a generator once a batch rather
        # than once a message.
        with contextlib.closing(batches):  # files closed, a reading process ended, at once
            for batch in batches:
                for message in batch:
                    self._process(message)
        return self._finish(file_facts)

    def logical_messages(
        self, file_facts: list[dict]
    ) -> Generator[list[LogicalMessage], None, None]:
        """Every file's frames, decoded, merged by time and folded into logical messages, in
        the order they are to be processed, in batches (readahead.py may run this in a second
        process). A batch is the folder's own list, emptied once the next one is asked for."""
        with contextlib.ExitStack() as stack:
            streams = []
            for index, capture_file in enumerate(self.files):
                name = str(capture_file.path)
                try:
                    fp = stack.enter_context(open(capture_file.path, "rb"))
                except OSError as exc:
                    raise CaptureError(f"{name}: {exc.strerror or exc}") from exc
                linktypes, frames = read_frames(fp, index, self.warnings, name)
                unsupported = [lt for lt in linktypes if lt not in SUPPORTED_LINKTYPES]
                if unsupported:
                    raise CaptureError(
                        f"{name}: link type {unsupported[0]} is not supported (supported: "
                        + ", ".join(sorted(set(LINKTYPE_NAMES.values())))
                        + ")"
                    )
                facts = {
                    "path": name,
                    "vantage": self.vantages[index],
                    "packets": 0,
                    "linktypes": [],
                }
                file_facts.append(facts)
                streams.append(self._decoded(frames, capture_file, facts))
            records: Iterator[PacketRecord] = (
                streams[0] if len(streams) == 1 else heapq.merge(*streams, key=attrgetter("time"))
            )
            # Typed and called through the folder: compiled, a bound method kept in a local
            # (or an untyped record) is a Python call for every packet.
            folder = self.folder
            ready = folder.ready
            labels = None if not self.multi else self._labels()
            for record in records:
                folder.push(record, record.interface if labels is None else labels(record))
                if ready:
                    yield ready
                    ready.clear()
            # The last window's messages, let go once processed: flush() returns the folder's
            # own list, which would otherwise keep them (and their records) to the end.
            ready = self.folder.flush()
            yield ready
            ready.clear()

    def _decoded(
        self, frames: Iterator[RawFrame], capture_file: CaptureFile, facts: dict[str, Any]
    ) -> Iterator[PacketRecord]:
        names = capture_file.interfaces or self._node_interfaces(capture_file.vantage)
        seen_linktypes: list[int] = facts["linktypes"]
        skipped: dict[int, int] = {}
        count = 0
        first = last = 0.0
        try:
            for frame in frames:
                count += 1
                if count == 1:
                    first = last = frame.time
                    # Every file's first frame is read before any message is processed
                    # (heapq.merge primes each stream), so t0 is final when it is used.
                    if self.t0 is None or first < self.t0:
                        self.t0 = first
                elif frame.time > last:
                    last = frame.time
                linktype = frame.linktype
                if linktype not in SUPPORTED_LINKTYPES:
                    skipped[linktype] = skipped.get(linktype, 0) + 1
                    continue
                if linktype not in seen_linktypes:
                    seen_linktypes.append(linktype)
                record = decode_frame(frame, names)
                if record is not None:
                    yield record
        finally:
            if count:
                facts["first"], facts["last"] = first, last
            facts["packets"] = count
            facts["linktypes"] = [LINKTYPE_NAMES.get(lt, str(lt)) for lt in seen_linktypes]
            for linktype, n in skipped.items():
                self.warnings.add(
                    f"{capture_file.path}: {n} frames of unsupported link type {linktype} skipped"
                )

    def _node_interfaces(self, vantage: str | None) -> dict[int, str]:
        """Interface names for a file without its own: from the inventory's node that took it
        (vantage "node/NAME"), or its only node when the vantage is not a pod."""
        chosen = None
        for node in self.inventory_nodes:
            if vantage == f"node/{node.get('name')}":
                chosen = node
        if (
            chosen is None
            and len(self.inventory_nodes) == 1
            and not (vantage or "").startswith("pod/")
        ):
            chosen = self.inventory_nodes[0]
        if chosen is None:
            return {}
        try:
            return {int(k): str(v) for k, v in chosen["interfaces"].items()}
        except (AttributeError, ValueError) as exc:
            raise CaptureError(
                f"inventory: node interfaces must map index to name ({exc})"
            ) from exc

    def _labels(self):
        """A record's interface label with its file's vantage: several files are read."""
        vantages = self.vantages

        def qualified(record):
            return f"{vantages[record.file_index]}:{record.interface or '?'}"

        return qualified

    # -- one logical message ---------------------------------------------------------------

    def _endpoint(self, ip: str, port: int, version: int) -> str:
        """endpoint(), kept for the last ENDPOINTS_KEPT named (then forgotten at once: a
        client's ports come and go, its recent ones are the ones asked again). An address's
        text says its version, so the address alone keys it."""
        ports = self.endpoint_text.get(ip)
        if ports is not None:
            text = ports.get(port)
            if text is not None:
                return text
        text = endpoint(ip, port, version)
        if self.endpoints_kept >= ENDPOINTS_KEPT:
            self.endpoint_text.clear()
            self.endpoints_kept = 0
            ports = None
        if ports is None:
            ports = self.endpoint_text[ip] = {}
        ports[port] = text
        self.endpoints_kept += 1
        return text

    def _process(self, message: LogicalMessage) -> None:
        if self.multi and len(message.hops) > 1:
            self._in_path_order(message)
        record = message.record
        version = record.ip_version
        proto = record.proto
        has_ports = proto in (6, 17)
        if has_ports:
            src = self._endpoint(record.src, record.sport, version)
            dst = self._endpoint(record.dst, record.dport, version)
        else:
            src, dst = record.src, record.dst
        conn = None
        direction = 0
        flow = None
        icmp_note = None
        if proto == 6:
            conn, direction = self.tcp.lookup(record)
            if conn is not None:
                if conn.original_server is not None and conn.server_after_nat is None:
                    self._note_redirect(conn, message.hops[0])
                label, phase = self.tcp.update(conn, direction, record)
                flow = ("tcp", conn.id)
                # What the diagnosis may need of it (diagnosis/view.py), bounded; inline, as
                # this runs for every TCP packet.
                length = record.payload_len
                if length:
                    sizes = conn.segment_sizes
                    if sizes is None:
                        sizes = conn.segment_sizes = {}
                    seen_at = len(message.hops) << 1 | direction
                    if length > sizes.get(seen_at, 0):
                        sizes[seen_at] = length
                if record.tcp_flags & CLOSE_FLAGS and src not in conn.closers:
                    conn.closers += (src,)
                kept = len(conn.evidence)
                if kept < EVIDENCE_PER_CONNECTION and (
                    label[-16:] == "(retransmission)"
                    or (kept < EVIDENCE_PER_CONNECTION - RETRANSMISSIONS_KEPT
                    and (record.tcp_flags & KEY_FLAGS or phase in KEY_PHASES
                         or label[:4] == "TLS "))
                ):
                    conn.evidence.append(len(self.messages))
            else:
                label, phase = FLAG_STRINGS[record.tcp_flags] or "TCP", "other"
        elif proto == 17:
            flow, direction = self._udp_flow(record)
            if record.dns:
                label, phase = dns_label(record.dns), "dns"
            elif record.payload and (record.sport in DNS_PORTS or record.dport in DNS_PORTS):
                # Said, never dropped in silence: cut off, a compression loop, not DNS at all.
                self.malformed_dns += 1
                label, phase = f"DNS (malformed) {record.payload_len} B", "other"
            else:
                label = f"UDP {record.payload_len} B"
                if record.tunnel:
                    label += f" (in {record.tunnel})"
                phase = "other"
        elif proto in (1, 58):
            label, icmp_note = self._icmp(record)
            phase = "other"
        else:
            label, phase = f"{IPPROTO_NAMES.get(proto, f'IP proto {proto}').upper()}", "other"
        if record.dns:
            self._dns(record, src, dst, "tcp" if proto == 6 else "udp")
            if conn is not None:
                phase = "dns"

        hops = message.hops
        participants = self.participants
        if record.src not in participants:
            self._participant(record.src)
        if record.dst not in participants:
            self._participant(record.dst)
        t0 = self.t0 or 0.0  # set by then: the first frame's time
        t = message.t_text
        if t is None:
            t = seconds_text(record.time - t0)
        first = hops[0]
        texts_key = (first.interface, first.direction, src, dst, proto)
        texts = self.message_texts.get(texts_key)
        if texts is None:
            texts = self._message_texts(texts_key)
        addresses_json, hop_head = texts
        hop_t = t if first.time == record.time else seconds_text(first.time - t0)
        hops_rest = f",{self._tunnel_json(first.tunnel)}}}" if first.tunnel else "}"
        notes: list[int] | tuple[int, ...] = () if icmp_note is None else (icmp_note,)
        if icmp_note is not None:
            carriers = self.annotation_messages.setdefault(icmp_note, [])
            if len(carriers) < 4:
                carriers.append(len(self.messages))
        if len(hops) > 1:
            if flow is not None:
                notes = self._nat(hops, direction, flow, conn, version, has_ports)
            hops_rest = ",".join(
                [
                    hops_rest,
                    *(
                        encode_hop(
                            hop_vantage(h.interface, h.direction),
                            endpoint(h.src, h.sport, version) if has_ports else h.src,
                            endpoint(h.dst, h.dport, version) if has_ports else h.dst,
                            seconds_text(h.time - t0),
                            h.tunnel and self._tunnel_json(h.tunnel),
                        )
                        for h in hops[1:]
                    ),
                ]
            )
        self.messages.append(
            encode_message(
                len(self.messages),
                t,
                addresses_json,
                label,
                FLAGS_JSON[record.tcp_flags] if proto == 6 else "null",
                record.payload_len,
                conn.id if conn is not None else None,
                phase,
                hop_head,
                hop_t,
                hops_rest,
                record.file_index,
                record.frame_number,
                notes,
            )
        )

    def _message_texts(self, key: tuple) -> tuple[str, str]:
        """A message's addresses and protocol as its JSON has them, and its first hop's JSON
        up to its time, for _process to keep (MESSAGE_TEXTS_KEPT, then forgotten at once)."""
        interface, direction, src, dst, proto = key
        place = (interface, direction)
        vantages = self.vantage_json
        vantage = vantages.get(place)
        if vantage is None:
            vantage = hop_vantage(interface, direction)
            if len(vantages) < VANTAGES_KEPT:
                vantages[place] = vantage
        texts = (encode_addresses(src, dst, IPPROTO_NAMES.get(proto) or str(proto)),
                 encode_hop_head(vantage, src, dst))
        if len(self.message_texts) >= MESSAGE_TEXTS_KEPT:
            self.message_texts.clear()
        self.message_texts[key] = texts
        return texts

    def _participant(self, ip: str) -> None:
        """List a new address, unless MAX_PARTICIPANTS are listed: a capture of a scan or a
        flood from spoofed sources would otherwise list (and describe, and draw) each one."""
        if len(self.participants) < MAX_PARTICIPANTS:
            self.participants[ip] = None
        else:
            self.warnings.add(
                f"more than {MAX_PARTICIPANTS} addresses: later ones are not listed as "
                "participants (their messages are kept)"
            )

    def _in_path_order(self, message) -> None:
        """Copies from several files: their hops in path order (pathorder.py), and the
        message's addresses as the packet had them where its path began. Its time stays the
        earliest copy's, the order the messages come in."""
        hops = message.hops
        ordered = path_order(hops, self.places, self.pod_nodes)
        if ordered is hops:
            return
        message.hops = ordered
        first = ordered[0]
        if first is not hops[0]:
            record = message.record
            record.src, record.sport, record.dst, record.dport = (
                first.src, first.sport, first.dst, first.dport)
            record.underlay = first.tunnel
            record.tunnel = first.tunnel.kind if first.tunnel else None

    def _tunnel_json(self, tunnel) -> str:
        text = self.tunnel_json.get(tunnel)
        if text is None:
            name = self.identity.node_name
            text = encode_tunnel(tunnel, name(tunnel.src), name(tunnel.dst))
            if len(self.tunnel_json) < TUNNELS_KEPT:
                self.tunnel_json[tunnel] = text
        return text

    def _udp_flow(self, record: PacketRecord) -> tuple[tuple[str, int] | None, int]:
        key = (record.src, record.sport, record.dst, record.dport)
        flows = self.udp_flows
        found = flows.get(key)
        if found is not None:
            return ("udp", found >> 1), found & 1
        found = flows.get((record.dst, record.dport, record.src, record.sport))
        if found is not None:
            return ("udp", found >> 1), (found & 1) ^ 1
        flow_id = len(self.udp_servers)
        if flow_id >= self.max_flows:
            self.warnings.add(f"more than {self.max_flows} UDP flows: later ones are not tracked")
            return None, 0
        server = (record.dst, record.dport)
        self.udp_servers.append(self.server_tuples.setdefault(server, server))
        flows[key] = flow_id << 1
        return ("udp", flow_id), 0

    def _icmp(self, record: PacketRecord) -> tuple[str, int | None]:
        """The message's label and, for an error, the icmp_error finding it counts towards
        (one per sender, error and quoted packet)."""
        info = parse_icmp(4 if record.proto == 1 else 6, record.payload)
        if info is None:
            return ("ICMP" if record.proto == 1 else "ICMPv6"), None
        if info.error is None:
            return info.label, None
        key = ("icmp_error", record.src, info.error, info.about)
        index = self.annotation_index.get(key)
        if index is None:
            if self.icmp_errors >= MAX_ICMP_ERRORS:
                self.warnings.add(
                    f"more than {MAX_ICMP_ERRORS} distinct ICMP errors (sender, error and quoted "
                    "packet): later ones are labelled but not counted in findings"
                )
                return info.label, None
            self.icmp_errors += 1
            note = {
                "kind": "icmp_error",
                "from": record.src,
                "to": record.dst,
                "error": info.error,
                "about": info.about,
                "count": 0,
                "t": rounded(record.time - (self.t0 or 0.0), 6),
            }
            if info.mtu:
                note["mtu"] = info.mtu
            # An error about a TCP segment belongs to its connection too: a path MTU too
            # small for a connection's segments is why it stalls.
            quoted = info.quoted
            found = None
            if quoted and quoted[0] == 6 and quoted[2] is not None:
                found = self.tcp.table.get(quoted[1:])
            if found is not None:
                note["connection"] = found[0].id
            index = self._annotate(note, key)
            if found is not None:
                found[0].annotations.append(index)
        self.annotations[index]["count"] += 1
        return info.label, index

    def _dns(self, record: PacketRecord, src: str, dst: str, transport: str) -> None:
        self.dns.observe(record, src, dst, transport, len(self.messages))
        for info in record.dns or ():
            if info.is_response and not info.rcode:
                for _name, rtype, value in info.answers:
                    if rtype in (1, 28):
                        self.identity.learn_dns(info.name, value)

    def _nat(self, hops, direction, flow, conn, version, has_ports) -> list[int]:
        """Annotate each address rewrite between hops; a reply's rewrite mirrors the NAT of
        the request (conntrack undoing it), so it names the same annotation."""
        notes: list[int] = []
        changes = rewrites(hops)
        if not changes:
            return notes

        def ep(ip, port):
            return endpoint(ip, port, version) if has_ports else ip

        def hop_ref(hop):
            return {"interface": hop.interface, "direction": hop.direction}

        # The address the client used names the pre-NAT side. Hops are in time order, which
        # is path order on one host but not across hosts whose clocks differ.
        server = conn.server if conn is not None else self.udp_servers[flow[1]]
        for before, after, src_changed, dst_changed in changes:
            found = []
            if direction == 0:
                if dst_changed:
                    old, new = before.destination, after.destination
                    if new == server and old != server:
                        old, new = new, old
                    found.append(("dnat", ep(*old), ep(*new)))
                if src_changed:
                    found.append(("snat", ep(*before.source), ep(*after.source)))
            else:
                if src_changed:
                    old, new = after.source, before.source
                    if new == server and old != server:
                        old, new = new, old
                    found.append(("dnat", ep(*old), ep(*new)))
                if dst_changed:
                    found.append(("snat", ep(*after.destination), ep(*before.destination)))
            for kind, was, now in found:
                key = (kind, flow, was, now)
                index = self.annotation_index.get(key)
                if index is None:
                    where = (
                        f"{before.interface} ({before.direction} → {after.direction})"
                        if before.interface == after.interface
                        else f"{before.interface} → {after.interface}"
                    )
                    annotation = {
                        "kind": kind,
                        "before": was,
                        "after": now,
                        "where": where if before.interface and after.interface else "unknown",
                        "node": nat_node(before, after, self.places),
                        "from_hop": hop_ref(before),
                        "to_hop": hop_ref(after),
                        "seen_on": "request" if direction == 0 else "reply",
                        "connection": conn.id if conn is not None else None,
                        "flow": f"{flow[0]}/{flow[1]}",
                    }
                    index = self._annotate(annotation, key)
                    if conn is not None:
                        conn.annotations.append(index)
                        if kind == "dnat":
                            conn.server_after_nat = now
                notes.append(index)
        if conn is not None:
            # The rewritten tuples name the same connection from now on.
            for hop in hops[1:]:
                client, server = hop.source, hop.destination
                if direction == 1:
                    client, server = server, client
                self.tcp.alias(conn, client, server)
        elif flow[0] == "udp":
            for hop in hops[1:]:
                forward = (hop.src, hop.sport, hop.dst, hop.dport)
                backward = (hop.dst, hop.dport, hop.src, hop.sport)
                if direction == 1:
                    forward, backward = backward, forward
                flows = self.udp_flows
                if forward not in flows and backward not in flows:
                    flows[forward] = flow[1] << 1
        return sorted(set(notes))

    def _note_redirect(self, conn, hop) -> None:
        """The replies revealed a NAT that no second vantage point showed (see
        TcpTracker._redirected): name it once, as a DNAT seen in the replies."""
        meant_ip, meant_port = conn.original_server
        before = endpoint(meant_ip, meant_port, conn.version)
        after = conn.endpoint(1)
        conn.server_after_nat = after
        index = self._annotate(
            {
                "kind": "dnat",
                "before": before,
                "after": after,
                "where": hop.interface or "unknown",
                "node": nat_node(hop, hop, self.places),
                "from_hop": None,
                "to_hop": {"interface": hop.interface, "direction": hop.direction},
                "seen_on": "reply",
                "mechanism": "redirect" if is_loopback(conn.server[0]) else "nat",
                "connection": conn.id,
                "flow": f"tcp/{conn.id}",
            },
            ("dnat", ("tcp", conn.id), before, after),
        )
        conn.annotations.append(index)

    def _annotate(self, annotation: dict, key=None) -> int:
        index = len(self.annotations)
        self.annotations.append(annotation)
        if key is not None:
            self.annotation_index[key] = index
        return index

    # -- the end ---------------------------------------------------------------------------

    def _truncated_answers(self) -> None:
        """A truncated UDP answer (TC) is only the start of one: the client should ask the
        same question again over TCP (RFC 7766). Say, per name, whether it did."""
        asked_over_tcp: dict[tuple, list[float]] = {}
        for exchange in self.dns.exchanges:
            if exchange.transport == "tcp" and exchange.t is not None:
                key = (endpoint_host(exchange.client), exchange.name.lower(), exchange.qtype)
                asked_over_tcp.setdefault(key, []).append(exchange.t)
        truncated: dict[str, list[int]] = {}  # name → [truncated answers, retried over TCP]
        for exchange in self.dns.exchanges:
            if not exchange.truncated or exchange.transport != "udp":
                continue
            counts = truncated.get(exchange.name)
            if counts is None:
                if not self._room_for_name(truncated, "truncated DNS answers"):
                    continue
                counts = truncated[exchange.name] = [0, 0]
            counts[0] += 1
            key = (endpoint_host(exchange.client), exchange.name.lower(), exchange.qtype)
            since = exchange.t or 0.0
            if any(t >= since for t in asked_over_tcp.get(key, ())):
                counts[1] += 1
        for name, (count, retried) in truncated.items():
            self._annotate(
                {"kind": "dns_truncated", "name": name, "count": count, "retried_over_tcp": retried}
            )

    def _finish(self, file_facts) -> SequenceModel:
        t0 = self.t0 or 0.0
        self.tcp.finish()
        self._folding_bounds()
        if self.malformed_dns:
            self.warnings.add(
                f"{self.malformed_dns} message(s) on DNS ports are not well-formed DNS (cut off, "
                "a name whose compression pointers loop, or not DNS): shown as "
                "\"DNS (malformed)\", left out of the DNS exchanges", partial=False)
        capture = self._capture_facts(file_facts, t0)
        http = self._http_requests(t0)
        findings = {conn.id: connection_findings(conn) for conn in self.tcp.connections}
        summaries = [self._summary(conn, t0) for conn in self.tcp.connections]
        participants = self._participants()
        diagnosis = self._diagnose(capture, participants, summaries, findings, http)
        self._annotate_connections(findings, diagnosis)
        self._dns_findings()
        self._truncated_answers()
        self._causes(diagnosis, summaries)
        # What the steps above had to leave out is said too.
        capture["partial"] = self.warnings.partial
        capture["warnings"] = list(self.warnings.messages)
        return SequenceModel(
            capture,
            participants,
            self.messages,
            summaries,
            self.dns.exchanges,
            http,
            self.annotations,
            t0,
        )

    def _folding_bounds(self) -> None:
        """What the copy folder's bounds (hops.py) cost the folding, said once each."""
        folder = self.folder
        # Seen at one place only, no packet has a copy to fold: leaving early lost nothing.
        if folder.released_early and len(self.vantage_json) > 1:
            self.warnings.add(
                f"more than {copies.MAX_PENDING} messages or "
                f"{copies.MAX_PENDING_BYTES // (1 << 20)} MB within the copy window: "
                f"{folder.released_early} left it early, and a later copy of one of them "
                "is a message of its own"
            )
        if folder.unfolded:
            self.warnings.add(
                f"a packet was seen at more than {copies.MAX_HOPS} places: {folder.unfolded} "
                "further copies are messages of their own"
            )

    def _summary(self, conn, t0: float) -> dict:
        """A connection as the model shows it; its server port joins the participant's."""
        summary = conn.summary()
        summary["timing"]["start"] = rounded(conn.start - t0, 6)
        server_ip, server_port = conn.server
        participants = self.participants
        ports = participants.get(server_ip)
        if ports is None and (server_ip in participants
                              or len(participants) < MAX_PARTICIPANTS):
            ports = participants[server_ip] = set()
        if ports is not None:  # else past MAX_PARTICIPANTS, as a warning already says
            ports.add(server_port)
        return summary

    def _diagnose(self, capture, participants, summaries, findings, http) -> Diagnosis:
        """The causes behind the symptoms (diagnosis/__init__.py), from what is known so far:
        the annotations the messages made, and each connection's own findings."""
        provisional = [*self.annotations, *(f for fs in findings.values() for f in fs)]
        connections = self.tcp.connections
        view = CaptureView(
            files=capture["files"],
            participants=participants,
            connections=summaries,
            dns=self._troubled_lookups(),
            annotations=provisional,
            http=http,
            duration=capture["duration"],
            connection_messages={conn.id: conn.evidence for conn in connections},
            annotation_messages=self.annotation_messages,
            segment_sizes={
                conn.id: _by_side(conn.segment_sizes or {})
                for conn in connections
                if conn.retransmissions
            },
            closers={conn.id: conn.closers for conn in connections},
            synacks={conn.id: conn.synacks for conn in connections if conn.retransmissions},
            fetch=self.messages.fetch,
            describe=self.identity.describe,
        )
        return diagnose(view)

    def _troubled_lookups(self) -> list[ExchangeFields]:
        """The DNS exchanges of clients that had a failed or repeated lookup: the only ones
        a DNS rule can speak about (a healthy capture costs nothing here)."""
        exchanges = self.dns.exchanges
        troubled = {
            endpoint_host(e.client) for e in exchanges
            if e.retries or e.rcode == 3 or (e.rcode == 0 and not e.answers)
        }
        t0 = self.t0 or 0.0
        lookups: list[ExchangeFields] = []
        for exchange in exchanges:
            if endpoint_host(exchange.client) in troubled:
                if len(lookups) == MAX_DIAGNOSED_LOOKUPS:
                    # A dict each, and rules that compare them with each other.
                    self.warnings.add(
                        f"more than {MAX_DIAGNOSED_LOOKUPS} DNS exchanges of clients with a "
                        "failed or repeated lookup: the diagnosis reads the first of them"
                    )
                    break
                lookups.append(ExchangeFields(exchange, t0))
        return lookups

    def _annotate_connections(self, findings, diagnosis: Diagnosis) -> None:
        """Each connection's findings, but no mutual TLS the diagnosis found refused."""
        for conn in self.tcp.connections:
            for finding in findings[conn.id]:
                if finding["kind"] == "mtls" and conn.id in diagnosis.withdrawn_mtls:
                    continue
                conn.annotations.append(self._annotate(finding))

    def _causes(self, diagnosis: Diagnosis, summaries: list[dict]) -> None:
        """The diagnosis' findings after every symptom, most important first; each connection
        gets its outcome and the causes that concern it."""
        by_id = {summary["id"]: summary for summary in summaries}
        for summary in summaries:
            summary["outcome"] = diagnosis.outcomes.get(summary["id"], "answered")
        for finding in diagnosis.findings:
            index = self._annotate(finding)
            for conn_id in finding.get("connections") or [finding.get("connection")]:
                if conn_id in by_id:
                    by_id[conn_id]["annotations"].append(index)

    def _dns_findings(self) -> None:
        """Names that do not exist and queries never answered, counted per name."""
        unanswered: dict[str, int] = {}
        nxdomain: dict[str, int] = {}
        for exchange in self.dns.exchanges:
            if exchange.rcode == 3:
                counts, what = nxdomain, "names that do not exist (NXDOMAIN)"
            elif exchange.rcode is None:
                counts, what = unanswered, "names asked and never answered"
            else:
                continue
            name = exchange.name
            if name in counts or self._room_for_name(counts, what):
                counts[name] = counts.get(name, 0) + 1
        for name, count in nxdomain.items():
            self._annotate({"kind": "nxdomain", "name": name, "count": count})
        for name, count in unanswered.items():
            self._annotate({"kind": "dns_unanswered", "name": name, "count": count})

    def _room_for_name(self, counts: dict, what: str) -> bool:
        """Whether one more name fits a DNS finding's counts (MAX_NAME_FINDINGS), else say so:
        a flood of distinct names would otherwise be an annotation each."""
        if len(counts) < MAX_NAME_FINDINGS:
            return True
        self.warnings.add(
            f"more than {MAX_NAME_FINDINGS} {what}: later names are not counted in findings"
        )
        return False

    def _http_requests(self, t0: float) -> list[dict]:
        """The HTTP requests of all connections, their times made relative to t0. In place:
        the connections are done with them, and a copy would double the largest list here."""
        http = self.tcp.http
        for request in http:
            ttfb = None
            response_t = request["response_t"]
            if response_t is not None:
                ttfb = rounded((response_t - request["t"]) * 1000, 3)
                request["response_t"] = rounded(response_t - t0, 6)
            request["t"] = rounded(request["t"] - t0, 6)
            request["ttfb_ms"] = ttfb
        return http

    def _participants(self) -> list[dict]:
        """Every address seen, described by what the inventory and DNS answers tell."""
        participants = []
        for ip, ports in self.participants.items():
            described = self.identity.describe(ip)
            described["ports"] = sorted(ports) if ports else []
            participants.append(described)
        return participants

    def _capture_facts(self, file_facts: list[dict], t0: float) -> dict:
        """The capture's files, counts, start and duration, and what went wrong reading it."""
        capture = {
            "files": file_facts,
            "packets": sum(f["packets"] for f in file_facts),
            "messages": len(self.messages),
            "start": self.t0,
            "duration": round(
                max((f["last"] for f in file_facts if f["packets"]), default=t0) - t0, 6
            ),
            "partial": self.warnings.partial,
            "warnings": list(self.warnings.messages),
        }
        for facts in file_facts:
            facts.pop("first", None)
            facts.pop("last", None)
        if capture["packets"] == 0:
            self.warnings.add("the capture holds no packets", partial=False)
            capture["warnings"] = list(self.warnings.messages)
        return capture


def connection_findings(conn) -> list[dict]:
    """What a whole connection shows, in this order: the mesh's doing, pooling, how it ended,
    fatal TLS alerts, zero windows, retransmissions."""
    return [
        *sidecar_findings(conn),
        *_pooling(conn),
        *_ending(conn),
        *_fatal_tls_alerts(conn),
        *_zero_windows(conn),
        *_retransmissions(conn),
    ]


def _pooling(conn) -> list[dict]:
    """Several requests on one connection; for encrypted traffic, request/response turns."""
    requests = len(conn.requests)
    if requests >= 2:
        return [
            {"kind": "pooled", "connection": conn.id, "requests": requests, "basis": "requests"}
        ]
    if not requests and conn.exchanges >= 2:
        return [
            {
                "kind": "pooled",
                "connection": conn.id,
                "requests": conn.exchanges,
                "basis": "encrypted request/response turns",
            }
        ]
    return []


def _ending(conn) -> list[dict]:
    """A connection still open when the capture ended, or reset (a FIN is no finding)."""
    closed = conn.closed()
    if closed == "open":
        if conn.handshake() in ("no-answer", "refused"):
            return []  # it never opened, so nothing was kept open
        return [{"kind": "kept_open", "connection": conn.id}]
    if closed == "rst":
        return [{"kind": "rst", "connection": conn.id, "by": conn.endpoint(conn.rst_by)}]
    return []


def _fatal_tls_alerts(conn) -> list[dict]:
    return [
        {
            "kind": "tls_alert",
            "connection": conn.id,
            "by": conn.endpoint(0 if alert["by"] == "client" else 1),
            "description": alert["description"],
        }
        for alert in (conn.tls or {}).get("alerts", ())
        if alert["level"] == "fatal"
    ]


def _zero_windows(conn) -> list[dict]:
    return [
        {"kind": "zero_window", "connection": conn.id, "by": conn.endpoint(side), "count": count}
        for side, count in enumerate(conn.zero_windows or ())
        if count
    ]


def _retransmissions(conn) -> list[dict]:
    if not conn.retransmissions:
        return []
    return [{"kind": "retransmission", "connection": conn.id, "count": conn.retransmissions}]
