"""The live decoder: packets of a pcapng file that is still being written, as table rows.

It reads the stored file, not the source's stream: what the browser sees has already reached
the disk. The engine's own reader (captures.analysis.pcapfile) does the parsing; `FollowReader`
makes a growing file look like a complete one by waiting for bytes until the writer is done.
"""

from __future__ import annotations

import threading
import time

from captures.analysis.icmp import parse_icmp
from captures.analysis.packets import decode_frame
from captures.analysis.pcapfile import Warnings, read_frames
from captures.analysis.records import ACK, FIN, IPPROTO_NAMES, PSH, RST, SYN, CaptureError

POLL = 0.02
FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"))
DNS_TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 33: "SRV", 12: "PTR", 16: "TXT", 2: "NS", 6: "SOA"}
ETHERTYPES = {0x0806: "arp", 0x88CC: "lldp"}
# Where a frame that is not IP keeps its EtherType: Ethernet, and the cooked headers of
# `-i any` (v1, and v2 as lab and cluster pod and node captures record).
ETHERTYPE_OFFSETS = {1: 12, 113: 14, 276: 0}


class FollowReader:
    """A file opened for reading that blocks at its end until `done` is set."""

    def __init__(self, fp, done: threading.Event):
        self.fp = fp
        self.done = done

    def read(self, size: int = -1) -> bytes:
        data = self.fp.read(size)
        if size < 0:
            return data
        while len(data) < size:
            finished = self.done.is_set()  # read again after seeing it: no bytes lost between
            more = self.fp.read(size - len(data))
            if more:
                data += more
                continue
            if finished:
                break
            time.sleep(POLL)
        return data

    def read1(self, size: int = -1) -> bytes:
        """What has arrived, up to `size` bytes; waits only while nothing has."""
        while True:
            finished = self.done.is_set()
            data = self.fp.read(size)
            if data or finished:
                return data
            time.sleep(POLL)


def _endpoint(ip: str, port: int, version: int, proto: int) -> str:
    if proto not in (6, 17):
        return ip
    return f"[{ip}]:{port}" if version == 6 else f"{ip}:{port}"


def _ethertype(frame) -> int | None:
    offset = ETHERTYPE_OFFSETS.get(frame.linktype)
    if offset is None or len(frame.data) < offset + 2:
        return None
    return int.from_bytes(frame.data[offset:offset + 2], "big")


def describe(frame, record) -> dict:
    """One row of the live table."""
    row = {"n": frame.frame_number, "t": round(frame.time, 6), "len": len(frame.data)}
    if record is None:
        name = ETHERTYPES.get(_ethertype(frame), "other")
        return {**row, "src": "", "dst": "", "proto": name, "info": f"{name} frame"}
    proto = IPPROTO_NAMES.get(record.proto, str(record.proto))
    src = _endpoint(record.src, record.sport, record.ip_version, record.proto)
    dst = _endpoint(record.dst, record.dport, record.ip_version, record.proto)
    if record.dns:
        dns = record.dns[0]
        qtype = DNS_TYPES.get(dns.qtype, str(dns.qtype))
        if dns.is_response:
            answers = ", ".join(value for _name, _type, value in dns.answers[:3])
            info = f"response {qtype} {dns.name}" + (f" → {answers}" if answers else "")
        else:
            info = f"query {qtype} {dns.name}"
        proto = "dns"
    elif record.proto == 6:
        flags = ",".join(name for bit, name in FLAG_NAMES if record.tcp_flags & bit)
        info = f"[{flags}] seq={record.seq} ack={record.ack} len={record.payload_len}"
    elif record.proto == 17:
        info = f"len={record.payload_len}"
    elif record.proto in (1, 58):
        icmp = parse_icmp(4 if record.proto == 1 else 6, record.payload)
        info = icmp.label if icmp else proto
    else:
        info = proto
    if record.interface:
        info = f"{record.interface} {record.direction or ''} {info}".replace("  ", " ")
    return {**row, "src": src, "dst": dst, "proto": proto, "info": info[:200]}


class LiveDecoder(threading.Thread):
    """Decodes the growing file in the background; the runner drains `take()` 10 times a second."""

    def __init__(self, path, interface_names: dict[int, str] | None = None,
                 file_index: int = 0, label: str = ""):
        super().__init__(name="kviz-live-decoder", daemon=True)
        self.path = path
        # A capture of several places: rows say which file (`f`) and place (`at`) they are from.
        self.file_index, self.label = file_index, label
        self.interface_names = interface_names or {}
        self.writer_done = threading.Event()
        self.lock = threading.Lock()
        self.pending: list[dict] = []
        self.packets = 0
        self.warnings = Warnings()
        self.error = ""

    def run(self) -> None:
        try:
            with open(self.path, "rb") as fp:
                _linktypes, frames = read_frames(FollowReader(fp, self.writer_done), 0,
                                                 self.warnings, "live")
                for frame in frames:
                    try:
                        row = describe(frame, decode_frame(frame, self.interface_names))
                    except Exception as exc:  # one odd packet must not end the view
                        row = {"n": frame.frame_number, "t": frame.time, "len": len(frame.data),
                               "src": "", "dst": "", "proto": "?", "info": f"undecodable: {exc}"}
                    if self.label:
                        row["f"], row["at"] = self.file_index, self.label
                    with self.lock:
                        self.packets += 1
                        self.pending.append(row)
        except (CaptureError, OSError) as exc:
            self.error = str(exc)

    def take(self) -> list[dict]:
        with self.lock:
            rows, self.pending = self.pending, []
        return rows

    def finish(self, timeout: float = 10.0) -> None:
        """The writer has closed the file: read to its end and stop."""
        self.writer_done.set()
        self.join(timeout)
