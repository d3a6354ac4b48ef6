"""Packet streams from the cluster's capture containers: classic pcap read as it arrives, and
several pods' streams merged into one pcapng in time order (a Service's capture).

Bytes in, bytes out, on pipes: no API calls and no Django here. The Kubernetes source
(captures.sources.kubernetes) feeds it the streams it attached to.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import select
import struct
import threading
import time

from captures.analysis.pcapmerge import block, option, section_header

IFINDEX_STRIDE = 1 << 16  # pod k's interface i becomes (k + 1) * stride + i in the merged file
HOLD = 0.3  # seconds a packet waits so packets of several pods leave in time order


SECTION_HEADER = section_header()


class PcapParser:
    """Classic pcap arriving in pieces → (timestamp units, linktype) and whole records."""

    def __init__(self):
        self.buffer = b""
        self.endian = ""
        self.nanoseconds = False
        self.linktype = None

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Records completed by `data`: (seconds, fraction, frame bytes)."""
        self.buffer += data
        if self.linktype is None:
            if len(self.buffer) < 24:
                return []
            magic = self.buffer[:4]
            self.endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            self.nanoseconds = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
            self.linktype = struct.unpack(self.endian + "I", self.buffer[20:24])[0] & 0x0FFFFFFF
            self.buffer = self.buffer[24:]
        records, offset = [], 0
        while len(self.buffer) - offset >= 16:
            sec, frac, caplen, _wire = struct.unpack_from(self.endian + "IIII", self.buffer,
                                                          offset)
            if len(self.buffer) - offset - 16 < caplen:
                break
            records.append((sec, frac, self.buffer[offset + 16:offset + 16 + caplen]))
            offset += 16 + caplen
        self.buffer = self.buffer[offset:]
        return records


class PcapngMerger:
    """Merges several pods' pcap streams into one pcapng written to a pipe, in time order.

    One interface block per pod, named `<pod>:any`. Cooked v2 headers carry an interface index
    that is only unique within one pod (every pod has its eth0 at 2), so the index is renumbered
    per pod; `interfaces` names the new numbers `<pod>:<interface>` for the analysis. The
    header is libpcap's own description of the packet, not bytes from the wire.

    Streams join with add() as their pods start, and are read from that moment: reading never
    waits for the output, which is queued in memory until the pipe takes it (nobody reads the
    output while the other pods are still starting, and a tcpdump whose stream is not read
    blocks, and the kernel drops its packets). seal() says no more streams will come; the
    output ends once every stream has.
    """

    def __init__(self, snaplen: int, named_streams=()):
        self.snaplen = snaplen  # what tcpdump was given (-s): each interface block says it
        self.inputs: list[tuple[str, object, dict[int, str]]] = []
        self.interfaces: dict[int, str] = {}
        self._lock = threading.Lock()
        self._sealed = False
        read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self.stdout = os.fdopen(read_fd, "rb", buffering=0)
        self._thread = threading.Thread(target=self._run, name="kviz-k8s-merge", daemon=True)
        for pod, stream, names in named_streams:
            self.add(pod, stream, names)

    def add(self, pod: str, stream, names: dict[int, str]) -> None:
        with self._lock:
            k = len(self.inputs)
            self.inputs.append((pod, stream, names))
            self.interfaces.update({(k + 1) * IFINDEX_STRIDE + index: f"{pod}:{name}"
                                    for index, name in names.items()})

    def seal(self) -> None:
        self._sealed = True

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        parsers: list[PcapParser] = []
        iface_ids: dict[int, int] = {}
        open_fds: dict[int, int] = {}
        pending: list[tuple] = []
        out = bytearray(SECTION_HEADER)
        seq = 0
        try:
            while True:
                with self._lock:
                    for k in range(len(parsers), len(self.inputs)):
                        parsers.append(PcapParser())
                        open_fds[self.inputs[k][1].fileno()] = k
                    done = self._sealed and len(parsers) == len(self.inputs)
                if done and not open_fds and not pending and not out:
                    break
                ready, writable, _ = select.select(list(open_fds), [self._write_fd] if out
                                                   else [], [], 0.05)
                for fd in ready:
                    k = open_fds[fd]
                    chunk = os.read(fd, 256 * 1024)
                    if not chunk:
                        del open_fds[fd]
                        continue
                    parser = parsers[k]
                    for sec, frac, data in parser.feed(chunk):
                        if k not in iface_ids:
                            iface_ids[k] = len(iface_ids)
                            out += self._idb(k, parser)
                        ts = sec * 1_000_000_000 + frac * (1 if parser.nanoseconds else 1000)
                        heapq.heappush(pending, (ts, seq, time.monotonic(), k, data))
                        seq += 1
                now = time.monotonic()
                # The earliest packet leaves once it has waited HOLD: any packet another pod
                # took earlier has arrived by then (or all streams have ended).
                ended = done and not open_fds
                while pending and (ended or now - pending[0][2] >= HOLD):
                    ts, _seq, _at, k, data = heapq.heappop(pending)
                    out += self._epb(iface_ids[k], ts, self._renumber(k, parsers[k], data))
                if out and (writable or ended):
                    with contextlib.suppress(BlockingIOError):
                        del out[:os.write(self._write_fd, out)]
        except OSError:
            pass  # the reader went away: nothing left to write to
        finally:
            os.close(self._write_fd)

    def _idb(self, k: int, parser: PcapParser) -> bytes:
        pod = self.inputs[k][0]
        return block(1, struct.pack("<HHI", parser.linktype, 0, self.snaplen)
                      + option(2, f"{pod}:any".encode()) + option(9, bytes([9]))
                      + struct.pack("<HH", 0, 0))

    @staticmethod
    def _epb(iface: int, ts_ns: int, data: bytes) -> bytes:
        return block(6, struct.pack("<IIIII", iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF,
                                     len(data), len(data)) + data)

    @staticmethod
    def _renumber(k: int, parser: PcapParser, data: bytes) -> bytes:
        if parser.linktype != 276 or len(data) < 20:
            return data
        index = struct.unpack_from("!I", data, 4)[0]
        return data[:4] + struct.pack("!I", (k + 1) * IFINDEX_STRIDE + index) + data[8:]
