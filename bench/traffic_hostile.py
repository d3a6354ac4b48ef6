"""Adversarial traffic for the hostile-capture benchmark (hostile_bench.py), loopback only.

    traffic_hostile.py udp-sink --port 53 --deadline 300
    traffic_hostile.py dns-flood --port 53 --count 1000000 --deadline 120 [--part 0/2]
    traffic_hostile.py syn-flood --port 9 --count 200000 --deadline 120 [--part 0/2]
    traffic_hostile.py stream-server --port 8080 --segments 200000 --size 64 --deadline 120
    traffic_hostile.py stream-client --port 8080 --deadline 120

- udp-sink binds 127.0.0.1:PORT and never reads: queries land in its receive queue (then are
  dropped by the kernel once it is full) and no ICMP port unreachable answers them.
- dns-flood sends COUNT one-question DNS queries, each from a new socket bound to its own
  (127.1.x.1, port) pair, with its own ID and its own short name: nothing repeats.
- syn-flood opens COUNT non-blocking TCP connections, each from its own source address in
  127.2.0.0/14, and closes each at once: a socket closed in SYN_SENT sends nothing more, so
  each flow is one SYN (the runner drops them on input, so none is answered).
- stream-server answers one HTTP/1.1 request with a body of SEGMENTS x SIZE bytes over a
  connection whose MSS is SIZE (TCP_MAXSEG; the runner turns GSO off on lo): SEGMENTS segments.
- stream-client sends the request and reads the response to its end.

Each prints `READY PORT` when listening (servers) or `DONE N` when finished, stops by itself
at --deadline seconds and on SIGTERM. Standard library only.
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import time

PORTS_PER_ADDRESS = 50_000  # source ports 10000-59999 on each 127.1.x.1 address


def _stopper(deadline: float):
    """A function telling whether to stop: the deadline passed or SIGTERM came."""
    end = time.monotonic() + deadline
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))

    def done() -> bool:
        return bool(stop) or time.monotonic() > end

    return done


def _part(text: str, count: int) -> range:
    """`--part K/N`: the K-th of N interleaved shares of range(count), for parallel senders."""
    index, parts = (int(x) for x in text.split("/"))
    return range(index, count, parts)


def udp_sink(port: int, deadline: float) -> int:
    done = _stopper(deadline)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        print(f"READY {sock.getsockname()[1]}", flush=True)
        while not done():
            time.sleep(0.2)
    return 0


def _name(i: int) -> bytes:
    """A short, distinct name per query: q<i in base 36>.x"""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    label = ""
    while True:
        i, r = divmod(i, 36)
        label = digits[r] + label
        if not i:
            break
    label = "q" + label
    return bytes([len(label)]) + label.encode() + b"\x01x\x00"


def dns_flood(port: int, count: int, deadline: float, part: str) -> int:
    done = _stopper(deadline)
    sent = 0
    target = ("127.0.0.1", port)
    for i in _part(part, count):
        if i % 1024 == 0 and done():
            break
        address = f"127.1.{i // PORTS_PER_ADDRESS % 250}.1"
        qid = (i * 40503 + 7) & 0xFFFF  # a new ID from one query to the next
        query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _name(i) + b"\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((address, 10_000 + i % PORTS_PER_ADDRESS))
            except OSError:
                continue  # the port is taken (a sender of another part): skip it
            sock.sendto(query, target)
        sent += 1
    print(f"DONE {sent}", flush=True)
    return 0


def syn_flood(port: int, count: int, deadline: float, part: str) -> int:
    done = _stopper(deadline)
    sent = 0
    target = ("127.0.0.1", port)
    for i in _part(part, count):
        if i % 1024 == 0 and done():
            break
        # a distinct source address per flow from 127.2.0.1 on (the last octet never 0 or 255)
        rest, last = divmod(i, 253)
        address = f"127.{2 + rest // 256}.{rest % 256}.{last + 1}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            sock.bind((address, 0))
            sock.connect_ex(target)  # EINPROGRESS: the SYN has left
        sent += 1
    print(f"DONE {sent}", flush=True)
    return 0


def stream_server(port: int, segments: int, size: int, deadline: float) -> int:
    done = _stopper(deadline)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The connection inherits this MSS (less the 12 bytes of the timestamps option): with
        # GSO off on lo (the runner's doing), every segment carries `size` bytes, so the body
        # is `segments` segments however it is written.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, size + 12)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        listener.settimeout(1.0)
        print(f"READY {listener.getsockname()[1]}", flush=True)
        conn = None
        while conn is None and not done():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
        if conn is None:
            return 1
        with conn:
            conn.settimeout(5.0)
            conn.recv(4096)  # the request
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {segments * size}\r\n\r\n".encode()
            conn.sendall(head)
            chunk = (b"kviz-hostile-bench-" * (64 * size // 19 + 1))[: 64 * size]
            written = 0
            while written < segments * size and not done():
                part = chunk[: segments * size - written]
                conn.sendall(part)
                written += len(part)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):  # until the client closes too
                pass
    print(f"DONE {written}", flush=True)
    return 0


def stream_client(port: int, deadline: float) -> int:
    done = _stopper(deadline)
    received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n")
        while not done():
            data = sock.recv(65536)
            if not data:
                break
            received += len(data)
    print(f"DONE {received}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", choices=["udp-sink", "dns-flood", "syn-flood", "stream-server", "stream-client"]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--part", default="0/1")
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.mode == "udp-sink":
        return udp_sink(args.port, args.deadline)
    if args.mode == "dns-flood":
        return dns_flood(args.port, args.count, args.deadline, args.part)
    if args.mode == "syn-flood":
        return syn_flood(args.port, args.count, args.deadline, args.part)
    if args.mode == "stream-server":
        return stream_server(args.port, args.segments, args.size, args.deadline)
    return stream_client(args.port, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
