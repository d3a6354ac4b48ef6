"""TCP connections, built from logical messages: state, timing, and the application inside.

Theory of operation (as an observer between the endpoints, never an endpoint itself):

    state         entered when                               leaves on
    SYN_SENT      the client's SYN is seen                   SYN-ACK → SYN_RECEIVED, RST → CLOSED
    SYN_RECEIVED  the server's SYN-ACK is seen               client ACK or data → ESTABLISHED
    ESTABLISHED   handshake done, or data (mid-stream start)  FIN → CLOSING, RST → CLOSED
    CLOSING       one side sent FIN                          the other FIN → CLOSED, RST → CLOSED
    CLOSED        FIN both ways, or RST either way           a SYN with a new ISN: new connection

A connection is found by its address 4-tuple in either orientation, and also by the tuple as
rewritten by NAT (learnt from the hops of a message), so a reply seen first on the pod side of
a DNAT still lands on the client's connection. A capture may start mid-connection: then the
client is guessed from the first payload (a request or a ClientHello is the client's) and from
the ports (the well-known or lower one is the server's).

Each direction keeps the highest sequence number seen (relative to the first one), which tells
a retransmission (no new bytes) and a keep-alive (one byte behind) from new data, and feeds
only new in-order bytes to the TLS and HTTP/2 readers. A segment beyond that highest byte opens
a hole; how the readers are fed around it is in reassembly.py.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from typing import Any, Final

from .dns import dns_label
from .http import (
    ACK_FLAG,
    END_STREAM,
    H2_FRAME_NAMES,
    H2_GOAWAY,
    H2_HEADERS,
    H2_PING,
    H2_PREFACE,
    H2_PREFACE_EVENT,
    H2_RST_STREAM,
    H2_SETTINGS,
    H2_WINDOW_UPDATE,
    GrpcMessages,
    H2Direction,
    grpc_percent_decode,
    grpc_status_name,
    h2_error_name,
    is_grpc,
    plausible_h2_frames,
)
from .http1 import http_requests, http_responses, upgrade_to_h2c
from .model import rounded
from .reassembly import Reassembly
from .records import ACK, FIN, RST, SYN, PacketRecord, endpoint
from .tls import (
    ALERT_FATAL,
    HANDSHAKE_NAMES,
    HS_CERTIFICATE,
    HS_CERTIFICATE_REQUEST,
    HS_CLIENT_HELLO,
    HS_ENCRYPTED_EXTENSIONS,
    HS_SERVER_HELLO,
    TlsDirection,
    alert_name,
    certificate_count,
    extensions_alpn,
    looks_like_tls,
    parse_hello,
    version_name,
)
from .tlsdecrypt import WAITING, TlsSession

SYN_SENT: Final = 0
SYN_RECEIVED: Final = 1
ESTABLISHED: Final = 2
CLOSING: Final = 3
CLOSED: Final = 4
SEQ_MOD: Final = 1 << 32
MAX_HTTP_REQUESTS = 100_000  # HTTP requests listed, in all connections
ALERTS_KEPT = 16  # TLS alerts in the clear listed per connection
# Bytes the TLS readers hold at once for records and handshake messages that span segments,
# in all connections (each direction holds up to tls.MAX_BUFFER of each): past this, a
# direction that would hold more stops being read.
MAX_TLS_BUFFERED = 32 * 1024 * 1024
# The same for HTTP/2 header blocks held until their last CONTINUATION (each direction holds
# up to http.MAX_HEADER_BLOCK) and for records held for decryption (tlsdecrypt.MAX_RECORD).
MAX_H2_BUFFERED = 32 * 1024 * 1024
WELL_KNOWN_SERVER_PORTS = frozenset(
    {
        53,
        80,
        443,
        8080,
        8443,
        8000,
        9090,
        3000,
        5000,
        6379,
        5432,
        3306,
        2379,
        6443,
        10250,
        15001,
        15006,
        15012,
        15008,
        15443,
        4140,
        4143,
        9080,
        50051,
    }
)


def server_side(port_a: int, port_b: int) -> int:
    """0 when the first port looks like the server's, else 1 (mid-stream connections)."""
    a_known, b_known = port_a in WELL_KNOWN_SERVER_PORTS, port_b in WELL_KNOWN_SERVER_PORTS
    if a_known != b_known:
        return 0 if a_known else 1
    return 0 if port_a <= port_b else 1


class Connection:
    __slots__ = (
        "annotations",
        "answered",
        "app",
        "client",
        "closers",
        "decrypt",
        "end",
        "evidence",
        "exchanges",
        "fin_by",
        "first_request_t",
        "first_response_t",
        "h2",
        "h2_streams",
        "handshake_ack",
        "id",
        "inner",
        "isn",
        "keepalives",
        "last_sender",
        "lost",
        "max_end",
        "midstream",
        "original_server",
        "packets",
        "phase",
        "request_ends",
        "requests",
        "retransmissions",
        "rst_by",
        "segment_sizes",
        "server",
        "server_after_nat",
        "sniff_left",
        "start",
        "state",
        "syn_t",
        "synack_t",
        "synacks",
        "tls",
        "tls_dirs",
        "tls_events",
        "unseen",
        "unseen_to",
        "version",
        "waiting",
        "zero_windows",
    )

    def __init__(
        self,
        ident: int,
        client: tuple[str, int],
        server: tuple[str, int],
        version: int,
        start: float,
        midstream: bool,
    ) -> None:
        self.id = ident
        self.client = client  # (ip, port)
        self.server = server
        self.version = version
        self.start = start
        self.end = start
        self.state = SYN_SENT
        self.midstream = midstream
        self.syn_t: float | None = None
        self.synack_t: float | None = None
        self.handshake_ack: float | None = None
        self.synacks = 0  # SYN-ACK segments, resent ones too (a rule reads only if two or more)
        # first sequence number per direction (0: client → server)
        self.isn: list[int | None] = [None, None]
        self.max_end = [0, 0]  # relative end of the highest byte seen per direction
        # Containers that most connections never fill stay None until needed: a scan or a
        # SYN flood is hundreds of thousands of connections of one packet each.
        self.fin_by: list[int] | None = None
        self.rst_by: int | None = None
        self.retransmissions = 0
        self.keepalives = 0
        self.zero_windows: list[int] | None = None  # zero receive windows advertised, per side
        self.packets = 0
        self.app: str | None = None  # "http/1.1", "h2", "tls", "dns"
        self.sniff_left = [4, 4]  # payload segments per direction still looked at for the app
        self.tls: dict[str, Any] | None = None
        self.tls_dirs: list[TlsDirection] | None = None
        self.tls_events: dict[str, float] | None = None
        self.decrypt: TlsSession | None = None  # a tlsdecrypt.TlsSession when a key log was given
        self.inner: str | None = None  # what the decrypted records carry: "http/1.1" or "h2"
        self.h2: list[H2Direction] | None = None
        self.h2_streams: dict[int, dict] | None = None
        self.requests: list[dict] = []
        # Where each request ends in the client's bytes (relative sequence), to match a
        # response after lost bytes. Beside the requests rather than in them: a request dict
        # is sized for its keys, and one more key would double each (tens of MB at 1M).
        self.request_ends = array("q")
        self.answered = 0  # HTTP/1.x requests that have their response
        self.exchanges = 0  # encrypted request/response turns (see _payload)
        self.last_sender: int | None = None
        self.lost = [False, False]  # bytes went missing in this direction since last looked
        self.waiting: list | None = None  # a reassembly.Waiting per direction with a hole open
        self.first_request_t: float | None = None
        self.first_response_t: float | None = None
        self.phase = "handshake"
        self.server_after_nat: str | None = None
        # (ip, port) the client meant, when replies reveal a NAT
        self.original_server: tuple[str, int] | None = None
        self.annotations: list[int] = []
        # For the diagnosis: ids of the messages that can prove something (handshake, resets,
        # closes, TLS records, requests and responses, retransmissions), and per direction the
        # largest payload seen at each number of hops (see diagnosis/view.py).
        # An array: a million-packet capture keeps hundreds of thousands of these ids, and an
        # int object and a list slot each cost 36 bytes where an array's item costs 8.
        self.evidence = array("q")
        # Bytes a side acknowledged that the capture never showed its peer sending (tshark's
        # "ACKed segment that wasn't captured"): lost by the capture, not the network.
        self.unseen = [0, 0]
        self.unseen_to = [0, 0]  # relative offset up to which they are counted
        # One dict, keyed by hops seen << 1 | direction: two (one per direction) cost twice.
        self.segment_sizes: dict[int, int] | None = None
        # The source endpoints (as messages name them) of its FIN and RST segments: a rule
        # that needs a close from one side skips the connection without reading its messages.
        # A tuple: one or two endpoints, where a set would cost 216 bytes a connection.
        self.closers: tuple[str, ...] = ()

    def endpoint(self, side: int) -> str:
        ip, port = self.client if side == 0 else self.server
        return endpoint(ip, port, self.version)

    def closed(self) -> str:
        if self.rst_by is not None:
            return "rst"
        if self.fin_by:
            return "fin"
        return "open"

    def handshake(self) -> str:
        if self.midstream:
            return "midstream"
        if self.synack_t is not None:
            return "complete" if self.state >= ESTABLISHED else "incomplete"
        if self.rst_by == 1:
            return "refused"
        return "no-answer"

    def _tls_summary(self) -> dict | None:
        """The TLS facts; with a key log, whether its records were decrypted, and if not,
        why not (docs/model.md)."""
        if self.decrypt is None:
            return self.tls
        return {
            **(self.tls or {}),
            "decrypted": bool(self.decrypt.decrypted),
            "decryption": self.decrypt.status,
        }

    def summary(self) -> dict:
        tls_events = self.tls_events or {}
        tls_start = tls_events.get("client_hello")
        zero_windows = self.zero_windows or (0, 0)
        return {
            "id": self.id,
            "client": self.endpoint(0),
            "server": self.endpoint(1),
            "server_after_nat": self.server_after_nat,
            "requests": len(self.requests),
            "exchanges": self.exchanges,
            "closed": self.closed(),
            "state": ("syn-sent", "syn-received", "established", "closing", "closed")[self.state],
            "handshake": self.handshake(),
            "retransmissions": self.retransmissions,
            "keepalives": self.keepalives,
            "zero_windows": zero_windows[0] + zero_windows[1],
            "unseen_bytes": self.unseen[0] + self.unseen[1],
            "packets": self.packets,
            "app": self.app,
            "tls": self._tls_summary(),
            "timing": {
                "start": self.start,
                "connect_ms": _ms(self.syn_t, self.synack_t),
                "tls_ms": _ms(tls_start, tls_events.get("client_appdata")),
                "ttfb_ms": _ms(self.first_request_t, self.first_response_t),
                "total_ms": _ms(self.start, self.end),
            },
            "annotations": self.annotations,
        }


def _ms(start: float | None, end: float | None) -> float | None:
    return rounded((end - start) * 1000, 3) if start is not None and end is not None else None


class TcpTracker(Reassembly):
    """Finds and updates the connection of each TCP message; returns (connection, direction,
    label, phase). What it does around holes is Reassembly's (reassembly.py)."""

    def __init__(self, max_flows: int, warnings, keylog=None) -> None:
        self.keylog = keylog  # a tlsdecrypt.KeyLog: TLS connections it has keys for are read
        self.table: dict[tuple, tuple[Connection, int]] = {}
        self.awaiting_synack: dict[tuple, Connection] = {}  # client endpoint → its SYN's conn
        self.connections: list[Connection] = []
        self.max_flows = max_flows
        self.warnings = warnings
        self.http: list[dict] = []
        # (id, direction) with a hole, oldest first: an OrderedDict finds the oldest at once
        # however many have been given up before it (a dict rescans their empty slots).
        self.waiters: OrderedDict[tuple[int, int], Connection] = OrderedDict()
        self.held = 0  # bytes held behind holes, in all connections
        self.held_segments = 0  # and segments
        self.tls_buffered = 0  # bytes the TLS readers hold, in all connections
        self.h2_buffered = 0  # bytes of HTTP/2 header blocks held, in all connections

    # -- finding the connection ------------------------------------------------------------

    def lookup(self, record: PacketRecord) -> tuple[Connection | None, int]:
        key = (record.src, record.sport, record.dst, record.dport)
        found = self.table.get(key)
        flags = record.tcp_flags
        if found is not None:
            conn, direction = found
            if (
                flags & SYN
                and not flags & ACK
                and direction == 0
                and (
                    conn.state == CLOSED or (conn.isn[0] is not None and conn.isn[0] != record.seq)
                )
            ):
                found = None  # the 4-tuple is reused by a new connection
            elif flags & SYN and not flags & ACK and direction == 1:
                found = None  # a SYN from the old server side: the roles have swapped
        if found is not None:
            return found
        if flags & SYN and flags & ACK:
            redirected = self._redirected(record)
            if redirected is not None:
                return redirected, 1
        if len(self.connections) >= self.max_flows:
            self.warnings.add(
                f"more than {self.max_flows} TCP connections: later ones are not tracked"
            )
            return None, 0
        if flags & SYN and flags & ACK:
            client, server, direction = (record.dst, record.dport), (record.src, record.sport), 1
        elif flags & SYN:
            client, server, direction = (record.src, record.sport), (record.dst, record.dport), 0
        else:
            direction = self._guess_direction(record)
            if direction == 0:
                client, server = (record.src, record.sport), (record.dst, record.dport)
            else:
                client, server = (record.dst, record.dport), (record.src, record.sport)
        conn = Connection(
            len(self.connections),
            client,
            server,
            record.ip_version,
            record.time,
            midstream=not flags & SYN,
        )
        if conn.midstream:
            conn.state = ESTABLISHED
            conn.phase = "data"
        self.connections.append(conn)
        self.alias(conn, client, server)
        if flags & SYN and not flags & ACK:
            self.awaiting_synack[client] = conn
        return conn, direction

    def _redirected(self, record) -> Connection | None:
        """A SYN-ACK from an address the client never sent to, acknowledging its SYN: the
        request was captured after a NAT and the reply after its undoing (both directions
        of an iptables REDIRECT on lo look like this). The reply's source is the original
        destination."""
        conn = self.awaiting_synack.pop((record.dst, record.dport), None)
        if conn is None or conn.isn[0] is None or conn.synack_t is not None:
            return None
        if (record.ack - 1) % SEQ_MOD != conn.isn[0]:
            return None
        conn.original_server = (record.src, record.sport)
        self.alias(conn, conn.client, conn.original_server)
        return conn

    @staticmethod
    def _guess_direction(record) -> int:
        payload = record.payload
        if payload:
            if http_requests(payload) or payload.startswith(H2_PREFACE):
                return 0
            if http_responses(payload):
                return 1
            if looks_like_tls(payload) and len(payload) > 5 and payload[0] == 22:
                hs_type = payload[5]
                if hs_type == HS_CLIENT_HELLO:
                    return 0
                if hs_type == HS_SERVER_HELLO:
                    return 1
        return 0 if server_side(record.dport, record.sport) == 0 else 1

    def alias(self, conn: Connection, client: tuple, server: tuple) -> None:
        self.table[(client[0], client[1], server[0], server[1])] = (conn, 0)
        self.table[(server[0], server[1], client[0], client[1])] = (conn, 1)

    # -- updating it -----------------------------------------------------------------------

    def update(self, conn: Connection, direction: int, record: PacketRecord) -> tuple[str, str]:
        """Advance the connection with one message; returns (label, phase)."""
        flags = record.tcp_flags
        now = record.time
        conn.end = now
        conn.packets += 1
        notes = []

        seq_len = record.payload_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        isn = conn.isn[direction]
        if isn is None:
            isn = conn.isn[direction] = record.seq
        rel = (record.seq - isn) % SEQ_MOD
        if rel > SEQ_MOD // 2:  # before the first byte we saw: an old retransmission
            rel_end = 0
            new_data = False
        else:
            rel_end = rel + seq_len
            new_data = rel_end > conn.max_end[direction]
        if seq_len and not new_data:
            if (
                record.payload_len <= 1
                and not flags & (SYN | FIN | RST)
                and rel_end == conn.max_end[direction]
            ):
                conn.keepalives += 1
                notes.append("keep-alive")
            else:
                conn.retransmissions += 1
                notes.append("retransmission")
        if record.window == 0 and not flags & (SYN | FIN | RST):
            # The sender's receive buffer is full: its application stopped reading.
            if conn.zero_windows is None:
                conn.zero_windows = [0, 0]
            conn.zero_windows[direction] += 1
            notes.append("zero window")

        other = 1 - direction
        other_isn = conn.isn[other]
        if (flags & ACK and conn.waiting and conn.waiting[other] is not None
                and other_isn is not None):
            acked = (record.ack - other_isn) % SEQ_MOD
            if conn.waiting[other].fed < acked <= SEQ_MOD // 2:
                # The receiver acknowledges bytes of the hole: they arrived, only the capture
                # missed them, and no retransmission will bring them.
                self.release(conn, other)

        if flags & ACK and other_isn is not None and conn.max_end[other]:
            acked = (record.ack - other_isn) % SEQ_MOD
            counted = max(conn.max_end[other], conn.unseen_to[other])
            if counted < acked <= SEQ_MOD // 2:
                conn.unseen[other] += acked - counted
                conn.unseen_to[other] = acked

        # Payload: feed the new in-order bytes to the stream readers, label what starts here.
        label = None
        phase = None
        if record.payload and conn.waiting and conn.waiting[direction] is not None and rel_end:
            label, phase = self._reassemble(conn, direction, record, rel, now)
        elif record.payload and new_data:
            start = max(conn.max_end[direction] - rel, 0)
            if rel > conn.max_end[direction] and conn.max_end[direction] and not flags & SYN:
                if self._needs_order(conn, direction):
                    self._wait(conn, direction)
                    label, phase = self._reassemble(conn, direction, record, rel, now)
                else:
                    self._gap(conn, direction)
                    label, phase = self._payload(conn, direction, record, record.payload, now)
            else:
                label, phase = self._payload(conn, direction, record, record.payload[start:], now)
        if new_data:
            conn.max_end[direction] = rel_end

        label, phase = self._flags(conn, direction, record, label, phase, now)
        if notes:
            label = f"{label} ({', '.join(notes)})"
        return label, phase

    def _flags(
        self, conn: Connection, direction: int, record: PacketRecord, label: str | None,
        phase: str | None, now: float,
    ) -> tuple[str, str]:
        flags = record.tcp_flags
        if flags & SYN and not flags & ACK:
            if conn.syn_t is None:
                conn.syn_t = now
            return label or "SYN", "handshake"
        if flags & SYN:
            conn.synacks += 1
            if conn.synack_t is None:
                conn.synack_t = now
                self.awaiting_synack.pop(conn.client, None)
            if conn.state < SYN_RECEIVED:
                conn.state = SYN_RECEIVED
            return label or "SYN-ACK", "handshake"
        if flags & RST:
            conn.rst_by = direction
            conn.state = CLOSED
            conn.phase = "teardown"
            return (f"{label} + RST" if label else "RST"), "teardown"
        if conn.state == SYN_RECEIVED and direction == 0:
            conn.state = ESTABLISHED
            if not record.payload_len:
                conn.handshake_ack = now
                return "ACK", "handshake"
        if flags & FIN:
            if conn.fin_by is None:
                conn.fin_by = [direction]
            elif direction not in conn.fin_by:
                conn.fin_by.append(direction)
            conn.state = CLOSED if len(conn.fin_by) == 2 else CLOSING
            conn.phase = "teardown"
            return (f"{label} + FIN" if label else "FIN"), "teardown"
        if label is None:
            return ("ACK" if record.payload_len == 0 else f"data {record.payload_len} B"), (
                conn.phase if record.payload_len == 0 else ("request", "response")[direction]
            )
        return label, str(phase)  # a label comes with its phase

    # -- application layer -----------------------------------------------------------------

    def _payload(
        self, conn: Connection, direction: int, record: PacketRecord, data: bytes, now: float
    ) -> tuple[str, str]:
        sniffed: tuple[list, list | None] | None = None
        if conn.app is None and conn.sniff_left[direction]:
            conn.sniff_left[direction] -= 1
            sniffed = self._sniff(conn, direction, data, record)
        app = conn.app
        label: str | None = None
        phase: str | None = None
        if app == "tls":
            label, phase = self._tls(conn, direction, data, now, record)
            # Encrypted requests cannot be read, but request/response protocols take turns:
            # each time the client speaks again after the server did, a new exchange begins.
            readers = conn.tls_dirs
            if direction == 0 and conn.last_sender != 0 and readers and readers[0].done:
                conn.exchanges += 1
        elif app == "http/1.1":
            label, phase = self._http1(conn, direction, data, now, record, sniffed)
        elif app == "h2":
            label, phase = self._h2(conn, direction, data, now)
        elif app == "dns" and record.dns:
            label, phase = dns_label(record.dns), "dns"
        if direction == 0 and phase not in ("tls", "handshake") and conn.first_request_t is None:
            conn.first_request_t = now
        elif (
            direction == 1
            and conn.first_request_t is not None
            and conn.first_response_t is None
            and phase != "tls"
        ):
            conn.first_response_t = now
        if label is None:
            label = f"data {record.payload_len} B"
            phase = ("request", "response")[direction]
        phase = str(phase)  # a label comes with its phase
        conn.phase = phase
        conn.last_sender = direction
        return label, phase

    def _sniff(self, conn, direction, data, record) -> tuple[list, list | None] | None:
        """Tell the connection's application from this segment. Returns the HTTP/1.x request
        and response lines parsed to tell (None: not parsed; responses not parsed when
        requests were found), for _http1 to use rather than parse the segment again."""
        if record.dns:
            conn.app = "dns"
        elif data.startswith(H2_PREFACE):
            conn.app = "h2"
            conn.h2 = [H2Direction(expect_preface=True), H2Direction(expect_preface=False)]
            conn.h2_streams = {}
        elif looks_like_tls(data) and data[0] == 22:
            conn.app = "tls"
            conn.tls_events = {}
            conn.tls = {
                "version": None,
                "sni": None,
                "alpn_offered": [],
                "alpn": None,
                "certificate_request": False,
                "client_certificate": False,
                "alerts": [],  # those sent in the clear: {"by", "level", "description"}
            }
            conn.tls_dirs = [TlsDirection(True), TlsDirection(False)]
            if self.keylog is not None:
                conn.decrypt = TlsSession(self.keylog)
        else:
            requests = http_requests(data)
            if requests:
                conn.app = "http/1.1"
                return requests, None
            responses = http_responses(data)
            if responses:
                conn.app = "http/1.1"
                return requests, responses
            if plausible_h2_frames(data):
                # Frames before the client's preface: a server that speaks first (its SETTINGS
                # as soon as it accepts), or a capture begun mid-connection, whose HPACK tables
                # are then unknown.
                conn.app = "h2"
                conn.h2 = [
                    H2Direction(expect_preface=not conn.midstream, midstream=conn.midstream),
                    H2Direction(expect_preface=False, midstream=conn.midstream),
                ]
                conn.h2_streams = {}
        return None

    def _tls(
        self, conn: Connection, direction: int, data: bytes, now: float, record: PacketRecord
    ) -> tuple[str, str]:
        # Typed: compiled, every attribute read through an untyped parameter was a Python
        # attribute lookup. A connection labelled "tls" has its TLS state (_sniff made it).
        names: list[str] = []
        tls = conn.tls
        readers = conn.tls_dirs
        tls_events = conn.tls_events
        assert tls is not None and readers is not None and tls_events is not None
        reader = readers[direction]
        events: list[tuple[str, object]]
        if reader.done:
            events = []
        else:
            before = len(reader.buffer) + len(reader.handshake)
            events = reader.feed(data)
            self.tls_buffered += len(reader.buffer) + len(reader.handshake) - before
            if self.tls_buffered > MAX_TLS_BUFFERED and (reader.buffer or reader.handshake):
                self.warnings.add(
                    f"more than {MAX_TLS_BUFFERED // (1 << 20)} MB of TLS handshakes held at "
                    "once: some connections' handshakes are not read to their end"
                )
                self.tls_buffered -= len(reader.buffer) + len(reader.handshake)
                reader.gap()
        value: Any  # what each kind of event holds (tls.TlsDirection.feed)
        for kind, value in events:
            if kind == "hs":
                hs_type, body = value
                name = HANDSHAKE_NAMES.get(hs_type)  # no default: it would be written each time
                names.append(f"handshake {hs_type}" if name is None else name)
                if hs_type == HS_CLIENT_HELLO and direction == 0:
                    hello = parse_hello(body, client=True)
                    tls["sni"] = hello.sni
                    tls["alpn_offered"] = hello.alpn
                    tls_events.setdefault("client_hello", now)
                elif hs_type == HS_SERVER_HELLO and direction == 1:
                    hello = parse_hello(body, client=False)
                    version = (hello.supported_versions or [hello.version])[0]
                    tls["version"] = version_name(version)
                    tls["alpn"] = hello.alpn[0] if hello.alpn else None
                elif hs_type == HS_CERTIFICATE_REQUEST and direction == 1:
                    tls["certificate_request"] = True
                elif hs_type == HS_CERTIFICATE and direction == 0 and certificate_count(body):
                    tls["client_certificate"] = True
            elif kind == "ccs":
                names.append("ChangeCipherSpec")
            elif kind == "appdata":
                if direction == 0:
                    tls_events.setdefault("client_appdata", now)
                names.append("application data")
            elif kind == "alert":
                if value is None:
                    names.append("Alert (encrypted)")
                    continue
                level, description = value
                severity = "fatal" if level == ALERT_FATAL else "warning"
                names.append(f"Alert ({severity} {alert_name(description)})")
                if len(tls["alerts"]) >= ALERTS_KEPT:
                    self.warnings.add(
                        f"a connection sent more than {ALERTS_KEPT} TLS alerts in the clear: "
                        "only the first are listed"
                    )
                    continue
                tls["alerts"].append(
                    {
                        "by": ("client", "server")[direction],
                        "level": severity,
                        "description": alert_name(description),
                    }
                )
        if conn.decrypt is not None:
            inner, inner_phase = self._decrypted(conn, direction, data, now, record, names)
            if inner:
                extra = [n for n in names if n != "application data"]
                return (f"TLS {', '.join(extra)}; {inner}" if extra else inner), inner_phase
        if not names:
            if reader.done:
                return "TLS application data", ("request", "response")[direction]
            return "TLS (continued)", "tls"
        if names == ["ClientHello"]:
            detail = [f"SNI {tls['sni']}"] if tls["sni"] else []
            if tls["alpn_offered"]:
                detail.append("ALPN " + ",".join(tls["alpn_offered"]))
            return f"TLS ClientHello ({'; '.join(detail)})" if detail else "TLS ClientHello", "tls"
        if names[-1] == "application data" and len(names) == 1:
            return "TLS application data", ("request", "response")[direction]
        return "TLS " + ", ".join(names), "tls"

    def _decrypted(self, conn, direction, data, now, record, names):
        """Feed the key log's decryption; the handshake messages it decrypts join `names`,
        and the application data inside is read as HTTP/1.1 or HTTP/2 would be in the
        clear. Returns the label and phase of what the plaintext says ("decrypted GET /")."""
        labels, phase = [], None
        session = conn.decrypt
        before = session.held(direction)
        events = session.feed(direction, data)
        held = session.held(direction)
        self.tls_buffered += held - before
        if self.tls_buffered > MAX_TLS_BUFFERED and held:
            self.warnings.add(
                f"more than {MAX_TLS_BUFFERED // (1 << 20)} MB of TLS records held at once "
                "for decryption: some connections are not decrypted to their end"
            )
            session.give_up(direction, "too many TLS records held at once (see warnings)")
            self.tls_buffered -= held
        for kind, value in events:
            if kind == "hs":
                hs_type, body = value
                names.append(HANDSHAKE_NAMES.get(hs_type, f"handshake {hs_type}") + " (decrypted)")
                if hs_type == HS_ENCRYPTED_EXTENSIONS and direction == 1 and not conn.tls["alpn"]:
                    conn.tls["alpn"] = extensions_alpn(body)  # TLS 1.3 says it encrypted
            elif kind == "alert":
                level, description = value
                if "Alert (encrypted)" in names:
                    names.remove("Alert (encrypted)")
                severity = "fatal" if level == ALERT_FATAL else "warning"
                names.append(f"Alert ({severity} {alert_name(description)}, decrypted)")
            else:
                label, inner_phase = self._inner(conn, direction, value, now, record)
                if label:
                    labels.append(label)
                    phase = inner_phase
        if not conn.decrypt.decrypted and conn.decrypt.status not in (None, WAITING):
            self.warnings.add(
                "some TLS connections were not decrypted with the key log (see each "
                "connection's tls.decryption)"
            )
        if not labels:
            return None, None
        return "decrypted " + "; ".join(labels), phase

    def _inner(self, conn, direction, plaintext, now, record):
        """The application inside decrypted TLS: chosen from ALPN or the first plaintext."""
        if conn.inner is None:
            if plaintext.startswith(H2_PREFACE) or conn.tls.get("alpn") == "h2":
                conn.inner = "h2"
                conn.h2 = [H2Direction(expect_preface=True), H2Direction(expect_preface=False)]
                conn.h2_streams = {}
            elif http_requests(plaintext) or http_responses(plaintext):
                conn.inner = "http/1.1"
            else:
                return None, None
        if conn.inner == "h2":
            return self._h2(conn, direction, plaintext, now)
        return self._http1(conn, direction, plaintext, now, record)

    def _needs_order(self, conn, direction) -> bool:
        # Decryption needs every record, in order: wait for a lost segment's retransmission.
        if conn.decrypt is not None and conn.decrypt.reading(direction):
            return True
        return super()._needs_order(conn, direction)

    def _gap(self, conn, direction):
        super()._gap(conn, direction)
        if conn.decrypt is not None:
            self.tls_buffered -= conn.decrypt.held(direction)
            conn.decrypt.gap(direction)
            self.tls_buffered += conn.decrypt.held(direction)
        if conn.h2:
            # The reader's gap keeps what it held, never to be completed: let it go.
            self.h2_buffered -= conn.h2[direction].held()
            conn.h2[direction].drop_blocks()
            self.h2_buffered += conn.h2[direction].held()

    def _http1(
        self, conn: Connection, direction: int, data: bytes, now: float, record: PacketRecord,
        sniffed: tuple[list, list | None] | None = None,
    ) -> tuple[str | None, str | None]:
        """`sniffed`: what _sniff parsed of this segment, if it did."""
        labels: list[str] = []
        if direction == 0:
            requests = http_requests(data) if sniffed is None else sniffed[0]
            if not requests:
                return None, None
            for method, target, host in requests:
                labels.append(f"{method} {target}")
                if not self._room_for_request():
                    continue
                request = {
                    "connection": conn.id,
                    "n": len(conn.requests) + 1,
                    "method": method,
                    "target": target,
                    "host": host,
                    "t": now,
                    "status": None,
                    "response_t": None,
                    "protocol": "http/1.1",
                }
                if conn.decrypt is not None:
                    request["decrypted"] = True
                conn.requests.append(request)
                client_isn = conn.isn[0]
                conn.request_ends.append(
                    (record.seq - (client_isn or 0) + record.payload_len) % SEQ_MOD)
                self.http.append(request)
            return "; ".join(labels), "request"
        responses = (http_responses(data) if sniffed is None or sniffed[1] is None
                     else sniffed[1])
        if not responses:
            return None, None
        upgrade_at = upgrade_to_h2c(data)
        for status, reason in responses:
            labels.append(f"HTTP {status} {reason}".rstrip())
            if 100 <= status < 200 and not (status == 101 and upgrade_at is None):
                # Interim: the final response still follows; after an upgrade to h2c it
                # comes as HTTP/2 on stream 1 (RFC 7540 §3.2).
                if status == 101 and conn.answered < len(conn.requests):
                    if conn.h2_streams is None:
                        conn.h2_streams = {}
                    conn.h2_streams[1] = conn.requests[conn.answered]
                    conn.answered += 1
                continue
            # Responses come back in request order (RFC 9112 §9.3.2), pipelined or not. But
            # when server bytes went missing, the lost bytes may have held responses: then
            # this one answers the newest request the server had read (its ACK covers it).
            index = conn.answered
            if conn.lost[1] and conn.isn[0] is not None:
                acked = (record.ack - conn.isn[0]) % SEQ_MOD
                for later in range(len(conn.requests) - 1, index, -1):
                    if conn.request_ends[later] <= acked:
                        index = later
                        break
            conn.lost[1] = False
            if index < len(conn.requests):
                request = conn.requests[index]
                request["status"] = status
                request["response_t"] = now
                conn.answered = index + 1
        if upgrade_at is not None:
            conn.app = "h2"
            conn.h2 = [H2Direction(expect_preface=True), H2Direction(expect_preface=False)]
            if conn.h2_streams is None:
                conn.h2_streams = {}
            frames, _phase = self._h2(conn, 1, data[upgrade_at:], now)
            if frames:
                labels.append(frames)
        return "; ".join(labels), "response"

    def _room_for_request(self) -> bool:
        """Whether one more HTTP request may be listed (MAX_HTTP_REQUESTS), else say so."""
        if len(self.http) < MAX_HTTP_REQUESTS:
            return True
        self.warnings.add(
            f"more than {MAX_HTTP_REQUESTS} HTTP requests: later ones are labelled but not "
            "listed"
        )
        return False

    def _h2(self, conn, direction, data, now):
        reader = conn.h2[direction]
        before = reader.held()
        names = [self._h2_frame(conn, direction, frame, now) for frame in reader.feed(data)]
        held = reader.held()
        self.h2_buffered += held - before
        if self.h2_buffered > MAX_H2_BUFFERED and held:
            self.warnings.add(
                f"more than {MAX_H2_BUFFERED // (1 << 20)} MB of HTTP/2 header blocks held at "
                "once: some are not decoded, and their connections' later headers are unknown"
            )
            reader.drop_blocks()
            self.h2_buffered -= held - reader.held()
        if not names:
            return None, None
        if len(names) > 4:
            # Keep what a reader looks for (requests, answers, gRPC status, errors) over
            # the connection's housekeeping, in the order sent.
            keep = sorted(range(len(names)), key=lambda i: (not names[i].startswith(
                ("gRPC", "HEADERS", "GOAWAY", "RST_STREAM", "preface", "trailers")), i))[:4]
            names = [names[i] for i in sorted(keep)] + [f"+{len(names) - 4} frames"]
        shown = names
        label = ", ".join(shown)
        return (label if label.startswith("gRPC") else "HTTP/2 " + label), (
            "request",
            "response",
        )[direction]

    def _h2_frame(self, conn, direction, frame, now) -> str:
        """The words for one HTTP/2 frame; HEADERS also open, answer or end a request."""
        kind, stream, payload = frame.type, frame.stream, frame.payload
        on = f" s{stream}" if stream else ""
        if kind == H2_PREFACE_EVENT:
            return "preface"
        if kind in (H2_SETTINGS, H2_PING):
            return H2_FRAME_NAMES[kind] + (" ACK" if frame.flags & ACK_FLAG else "")
        if kind == H2_WINDOW_UPDATE and len(payload) >= 4:
            return f"WINDOW_UPDATE{on} +{int.from_bytes(payload[:4], 'big') & 0x7FFFFFFF}"
        if kind == H2_GOAWAY and len(payload) >= 8:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            error = h2_error_name(int.from_bytes(payload[4:8], "big"))
            return f"GOAWAY {error} (last stream {last})"
        if kind == H2_RST_STREAM and len(payload) >= 4:
            return f"RST_STREAM{on} {h2_error_name(int.from_bytes(payload[:4], 'big'))}"
        if kind != H2_HEADERS or not stream:
            return H2_FRAME_NAMES.get(kind, f"frame {kind}") + on
        if not frame.known:
            self.warnings.add(
                "some HTTP/2 headers refer to HPACK table entries sent before the capture "
                "began (or lost with missing bytes): they are unknown"
            )
        unknown = "" if frame.known else " (some headers unknown)"
        method, path, status = frame.header(":method"), frame.header(":path"), frame.header(
            ":status"
        )
        grpc_status = frame.header("grpc-status")
        request = conn.h2_streams.get(stream)
        if direction == 0 and stream % 2 == 1 and request is None:
            grpc = is_grpc(frame.header("content-type"))
            if self._room_for_request():
                request = {
                    "connection": conn.id,
                    "n": len(conn.requests) + 1,
                    "method": method,
                    "target": path,
                    "host": frame.header(":authority") or frame.header("host"),
                    "t": now,
                    "status": None,
                    "response_t": None,
                    "protocol": "h2",
                    "stream": stream,
                }
                if conn.decrypt is not None:
                    request["decrypted"] = True
                if grpc:
                    self._grpc_call(conn, request, path)
                conn.h2_streams[stream] = request
                conn.requests.append(request)
                conn.request_ends.append(0)  # HTTP/2 matches responses by stream
                self.http.append(request)
            if grpc:
                return f"gRPC{on} {path or '?'}{unknown}"
            shown = " ".join(v for v in (method, path) if v)
            return f"HEADERS{on}" + (f" {shown}" if shown else "") + unknown
        if direction == 1 and request is not None:
            request["response_t"] = request["response_t"] or now
            if request["status"] is None and status and status.isdigit():
                request["status"] = int(status)
            if request.get("grpc") is None and is_grpc(frame.header("content-type")):
                self._grpc_call(conn, request, request["target"])  # its request was unread
        if grpc_status is not None:
            name = grpc_status_name(grpc_status)
            message = grpc_percent_decode(frame.header("grpc-message") or "")
            if request is not None and request.get("grpc") is not None and direction == 1:
                request["grpc"]["status"] = name
                request["grpc"]["message"] = message or None
            before = f"HEADERS{on} {status}, " if status else ""
            return f"{before}gRPC{on} → {name}" + (f": {message}" if message else "") + unknown
        if status:
            return f"HEADERS{on} {status}{unknown}"
        if method or path:
            return f"HEADERS{on} {' '.join(v for v in (method, path) if v)}{unknown}"
        if frame.flags & END_STREAM and request is not None:
            return f"trailers{on}{unknown}"
        return f"HEADERS{on}{unknown}"

    @staticmethod
    def _grpc_call(conn, request, path) -> None:
        """Mark a request as a gRPC call and count the messages each side sends on it."""
        call = {"method": path, "status": None, "message": None, "sent": 0, "received": 0,
                "gaps": False}
        request["grpc"] = call
        conn.h2[0].grpc[request["stream"]] = GrpcMessages(call, "sent")
        conn.h2[1].grpc[request["stream"]] = GrpcMessages(call, "received")
