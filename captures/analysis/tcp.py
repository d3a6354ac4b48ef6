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

from collections import OrderedDict

from .dns import dns_label
from .http import (
    H2_FRAME_NAMES,
    H2_PREFACE,
    H2Direction,
    h2_pseudo_headers,
    http_requests,
    http_responses,
    plausible_h2_frames,
    upgrade_to_h2c,
)
from .reassembly import Reassembly
from .records import ACK, FIN, RST, SYN, endpoint
from .tls import (
    ALERT_FATAL,
    HANDSHAKE_NAMES,
    HS_CERTIFICATE,
    HS_CERTIFICATE_REQUEST,
    HS_CLIENT_HELLO,
    HS_SERVER_HELLO,
    TlsDirection,
    alert_name,
    certificate_count,
    looks_like_tls,
    parse_hello,
    version_name,
)

SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSING, CLOSED = range(5)
SEQ_MOD = 1 << 32
MAX_HTTP_REQUESTS = 100_000  # HTTP requests listed, in all connections
ALERTS_KEPT = 16  # TLS alerts in the clear listed per connection
# Bytes the TLS readers hold at once for records and handshake messages that span segments,
# in all connections (each direction holds up to tls.MAX_BUFFER of each): past this, a
# direction that would hold more stops being read.
MAX_TLS_BUFFERED = 32 * 1024 * 1024
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
        "isn",
        "keepalives",
        "last_sender",
        "lost",
        "max_end",
        "midstream",
        "original_server",
        "packets",
        "phase",
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
        "tls",
        "tls_dirs",
        "tls_events",
        "unseen",
        "unseen_to",
        "version",
        "waiting",
        "zero_windows",
    )

    def __init__(self, ident, client, server, version, start, midstream):
        self.id = ident
        self.client = client  # (ip, port)
        self.server = server
        self.version = version
        self.start = self.end = start
        self.state = SYN_SENT
        self.midstream = midstream
        self.syn_t = self.synack_t = self.handshake_ack = None
        self.isn = [None, None]  # first sequence number per direction (0: client → server)
        self.max_end = [0, 0]  # relative end of the highest byte seen per direction
        # Containers that most connections never fill stay None until needed: a scan or a
        # SYN flood is hundreds of thousands of connections of one packet each.
        self.fin_by: list[int] | None = None
        self.rst_by = None
        self.retransmissions = 0
        self.keepalives = 0
        self.zero_windows: list[int] | None = None  # zero receive windows advertised, per side
        self.packets = 0
        self.app = None  # "http/1.1", "h2", "tls", "dns"
        self.sniff_left = [4, 4]  # payload segments per direction still looked at for the app
        self.tls = None
        self.tls_dirs = None
        self.tls_events: dict[str, float] | None = None
        self.h2 = None
        self.h2_streams: dict[int, dict] | None = None
        self.requests: list[dict] = []
        self.answered = 0  # HTTP/1.x requests that have their response
        self.exchanges = 0  # encrypted request/response turns (see _payload)
        self.last_sender = None
        self.lost = [False, False]  # bytes went missing in this direction since last looked
        self.waiting: list | None = None  # a reassembly.Waiting per direction with a hole open
        self.first_request_t = self.first_response_t = None
        self.phase = "handshake"
        self.server_after_nat = None
        self.original_server = None  # (ip, port) the client meant, when replies reveal a NAT
        self.annotations: list[int] = []
        # For the diagnosis: ids of the messages that can prove something (handshake, resets,
        # closes, TLS records, requests and responses, retransmissions), and per direction the
        # largest payload seen at each number of hops (see diagnosis/view.py).
        self.evidence: list[int] = []
        # Bytes a side acknowledged that the capture never showed its peer sending (tshark's
        # "ACKed segment that wasn't captured"): lost by the capture, not the network.
        self.unseen = [0, 0]
        self.unseen_to = [0, 0]  # relative offset up to which they are counted
        self.segment_sizes: tuple[dict[int, int], dict[int, int]] | None = None

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

    def summary(self) -> dict:
        def ms(a, b):
            return round((b - a) * 1000, 3) if a is not None and b is not None else None

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
            "tls": self.tls,
            "timing": {
                "start": self.start,
                "connect_ms": ms(self.syn_t, self.synack_t),
                "tls_ms": ms(tls_start, tls_events.get("client_appdata")),
                "ttfb_ms": ms(self.first_request_t, self.first_response_t),
                "total_ms": ms(self.start, self.end),
            },
            "annotations": self.annotations,
        }


class TcpTracker(Reassembly):
    """Finds and updates the connection of each TCP message; returns (connection, direction,
    label, phase). What it does around holes is Reassembly's (reassembly.py)."""

    def __init__(self, max_flows: int, warnings) -> None:
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

    # -- finding the connection ------------------------------------------------------------

    def lookup(self, record) -> tuple[Connection | None, int]:
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

    def update(self, conn: Connection, direction: int, record) -> tuple[str, str]:
        """Advance the connection with one message; returns (label, phase)."""
        flags = record.tcp_flags
        now = record.time
        conn.end = now
        conn.packets += 1
        notes = []

        seq_len = record.payload_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if conn.isn[direction] is None:
            conn.isn[direction] = record.seq
        rel = (record.seq - conn.isn[direction]) % SEQ_MOD
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
        if flags & ACK and conn.waiting and conn.waiting[other] is not None:
            acked = (record.ack - conn.isn[other]) % SEQ_MOD
            if conn.waiting[other].fed < acked <= SEQ_MOD // 2:
                # The receiver acknowledges bytes of the hole: they arrived, only the capture
                # missed them, and no retransmission will bring them.
                self.release(conn, other)

        if flags & ACK and conn.isn[other] is not None and conn.max_end[other]:
            acked = (record.ack - conn.isn[other]) % SEQ_MOD
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

    def _flags(self, conn, direction, record, label, phase, now):
        flags = record.tcp_flags
        if flags & SYN and not flags & ACK:
            if conn.syn_t is None:
                conn.syn_t = now
            return label or "SYN", "handshake"
        if flags & SYN:
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
        return label, phase

    # -- application layer -----------------------------------------------------------------

    def _payload(self, conn, direction, record, data, now):
        if conn.app is None and conn.sniff_left[direction]:
            conn.sniff_left[direction] -= 1
            self._sniff(conn, direction, data, record)
        app = conn.app
        label = phase = None
        if app == "tls":
            label, phase = self._tls(conn, direction, data, now)
            # Encrypted requests cannot be read, but request/response protocols take turns:
            # each time the client speaks again after the server did, a new exchange begins.
            if direction == 0 and conn.last_sender != 0 and conn.tls_dirs[0].done:
                conn.exchanges += 1
        elif app == "http/1.1":
            label, phase = self._http1(conn, direction, data, now, record)
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
        conn.phase = phase
        conn.last_sender = direction
        return label, phase

    def _sniff(self, conn, direction, data, record):
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
        elif http_requests(data) or http_responses(data):
            conn.app = "http/1.1"
        elif plausible_h2_frames(data):
            conn.app = "h2"
            conn.h2 = [H2Direction(expect_preface=False), H2Direction(expect_preface=False)]
            conn.h2_streams = {}

    def _tls(self, conn, direction, data, now):
        names = []
        tls = conn.tls
        reader = conn.tls_dirs[direction]
        if reader.done:
            events = ()
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
        for kind, value in events:
            if kind == "hs":
                hs_type, body = value
                names.append(HANDSHAKE_NAMES.get(hs_type, f"handshake {hs_type}"))
                if hs_type == HS_CLIENT_HELLO and direction == 0:
                    hello = parse_hello(body, client=True)
                    tls["sni"] = hello.sni
                    tls["alpn_offered"] = hello.alpn
                    conn.tls_events.setdefault("client_hello", now)
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
                    conn.tls_events.setdefault("client_appdata", now)
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
        if not names:
            if conn.tls_dirs[direction].done:
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

    def _http1(self, conn, direction, data, now, record):
        if direction == 0:
            found = http_requests(data)
            if not found:
                return None, None
            labels = []
            for method, target, host in found:
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
                    "_end": (record.seq - conn.isn[0] + record.payload_len) % SEQ_MOD,
                }
                conn.requests.append(request)
                self.http.append(request)
            return "; ".join(labels), "request"
        found = http_responses(data)
        if not found:
            return None, None
        labels = []
        upgrade_at = upgrade_to_h2c(data)
        for status, reason in found:
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
                    if conn.requests[later]["_end"] <= acked:
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
        frames = conn.h2[direction].feed(data)
        if not frames:
            return None, None
        names = []
        for frame_type, flags, stream, payload in frames:
            name = H2_FRAME_NAMES.get(frame_type, f"frame {frame_type}")
            pseudo = h2_pseudo_headers(payload, flags) if frame_type == 1 else {}
            shown = " ".join(v for k, v in pseudo.items() if k in (":method", ":path", ":status"))
            names.append((f"{name} s{stream}" if stream else name) + (f" {shown}" if shown else ""))
            if frame_type != 1 or not stream:
                continue
            if (direction == 0 and stream % 2 == 1 and stream not in conn.h2_streams
                    and self._room_for_request()):
                request = {
                    "connection": conn.id,
                    "n": len(conn.requests) + 1,
                    "method": pseudo.get(":method"),
                    "target": pseudo.get(":path"),
                    "host": pseudo.get(":authority"),
                    "t": now,
                    "status": None,
                    "response_t": None,
                    "protocol": "h2",
                    "stream": stream,
                }
                conn.h2_streams[stream] = request
                conn.requests.append(request)
                self.http.append(request)
            elif direction == 1 and stream in conn.h2_streams:
                request = conn.h2_streams[stream]
                request["response_t"] = request["response_t"] or now
                status = pseudo.get(":status")
                if request["status"] is None and status and status.isdigit():
                    request["status"] = int(status)
        shown = names[:4] + ([f"+{len(names) - 4} frames"] if len(names) > 4 else [])
        return "HTTP/2 " + ", ".join(shown), ("request", "response")[direction]
