"""DNS traffic for the analysis benchmark: a minimal UDP DNS server and a bounded client.

    traffic_dns.py server --port 53 --deadline 300
    traffic_dns.py client --port 53 --count 30000 --threads 8 --deadline 120

The server answers A and AAAA queries for any name (deterministic addresses) and NXDOMAIN for
names starting with "nx". It listens on 127.0.0.1 and ::1 and prints `READY PORT` when bound.
The client sends `--count` queries in total (one outstanding per thread, 1 s timeout, no retry)
and prints `DONE queries answered` (also when ended by SIGTERM, which makes it finish early).
Both stop by themselves at `--deadline` seconds.
Standard library only; loopback only.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import zlib

QTYPE_A, QTYPE_AAAA = 1, 28


def parse_question(data: bytes) -> tuple[int, int, bytes, str, int] | None:
    """(id, flags, raw question, name, qtype) of a query, or None if malformed."""
    if len(data) < 17:
        return None
    qid, flags, qdcount = struct.unpack_from("!HHH", data)
    if qdcount != 1 or flags & 0x8000:
        return None
    labels, pos = [], 12
    for _ in range(64):  # bounded: at most 64 labels
        if pos >= len(data):
            return None
        length = data[pos]
        pos += 1
        if length == 0:
            break
        labels.append(data[pos : pos + length].decode("ascii", "replace"))
        pos += length
    else:
        return None
    if pos + 4 > len(data):
        return None
    qtype = struct.unpack_from("!H", data, pos)[0]
    return qid, flags, data[12 : pos + 4], ".".join(labels), qtype


def answer(query: bytes) -> bytes | None:
    parsed = parse_question(query)
    if parsed is None:
        return None
    qid, flags, question, name, qtype = parsed
    rd = flags & 0x0100
    h = zlib.crc32(name.encode())
    if name.startswith("nx"):
        return struct.pack("!HHHHHH", qid, 0x8080 | rd | 3, 1, 0, 0, 0) + question
    if qtype == QTYPE_A:
        rdata = bytes([10, 96, (h >> 8) & 0xFF, h & 0xFF or 1])
    elif qtype == QTYPE_AAAA:
        rdata = bytes([0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + h.to_bytes(4, "big")
    else:
        return struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 0, 0, 0) + question
    rr = struct.pack("!HHHIH", 0xC00C, qtype, 1, 30, len(rdata)) + rdata
    return struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 1, 0, 0) + question + rr


def serve(port: int, deadline: float) -> int:
    sel = selectors.DefaultSelector()
    bound = port
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((host, bound))
        bound = sock.getsockname()[1]  # port 0: the OS picks one, ::1 gets the same
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    print(f"READY {bound}", flush=True)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            for _ in range(256):  # drain a bounded batch per wake-up
                try:
                    data, addr = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                reply = answer(data)
                if reply is not None:
                    sock.sendto(reply, addr)
    return 0


def build_query(qid: int, name: str, qtype: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def query_name(i: int) -> tuple[str, int]:
    if i % 20 == 19:
        return f"nx{i % 997}.example.invalid", QTYPE_A
    qtype = QTYPE_AAAA if i % 3 == 2 else QTYPE_A
    if i % 2:
        return f"svc{i % 211}.default.svc.cluster.local", qtype
    return f"api{i % 97}.bench.example", qtype


def client(port: int, count: int, threads: int, deadline: float) -> int:
    end = time.monotonic() + deadline
    lock = threading.Lock()
    state = {"next": 0, "answered": 0}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish, then still print DONE

    def worker(n: int) -> None:
        # one socket per worker; 1 in 4 workers speaks IPv6
        family, host = (socket.AF_INET6, "::1") if n % 4 == 3 else (socket.AF_INET, "127.0.0.1")
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        answered = 0
        try:
            while time.monotonic() < end and not stop.is_set():
                with lock:
                    i = state["next"]
                    if i >= count:
                        break
                    state["next"] = i + 1
                name, qtype = query_name(i)
                qid = (i * 7919) & 0xFFFF
                sock.sendto(build_query(qid, name, qtype), (host, port))
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    continue
                if len(data) >= 2 and struct.unpack_from("!H", data)[0] == qid:
                    answered += 1
        finally:
            sock.close()
            with lock:
                state["answered"] += answered

    workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(max(0.0, end - time.monotonic()) + 2)
    print(f"DONE {min(state['next'], count)} {state['answered']}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.mode == "server":
        return serve(args.port, args.deadline)
    return client(args.port, args.count, args.threads, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
