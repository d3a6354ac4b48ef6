"""Stand-in programs for the kviz lab's faults: `faultkit.py COMMAND ARGS...`.

Each is small enough to read, runs inside one lab pod's network namespace (`ip netns exec`),
is bounded in time, and prints what it saw as one JSON line, which the fault puts into its
truth.json: what really happened, told by the programs at both ends rather than the captures.

Servers (run until the fault stops them):
- backlog-server HOST PORT BACKLOG ACCEPT_AFTER: listens with a tiny backlog and does not
  accept(), except one connection ACCEPT_AFTER seconds after the first one arrived (an
  overloaded server that falls behind): the accept queue stays full, and the kernel drops
  handshakes that complete while it is (ListenOverflows).
- banner-server HOST PORT: a server-first protocol (SMTP): it greets every client first.
- sniffing-proxy HOST PORT UPSTREAM_HOST UPSTREAM_PORT: a proxy that detects the protocol
  from the client's first bytes before it connects upstream, as a sidecar's protocol
  sniffing does; a client waiting for a server's greeting and this proxy wait for each other.

Clients (exit by themselves):
- burst-client HOST PORT COUNT WAIT: COUNT connections opened at once (their SYNs leave
  together), each sends one line; waits up to WAIT seconds for the replies.
- keepalive-client HOST PORT IDLE TIMEOUT: two HTTP/1.1 requests on one connection, IDLE
  seconds apart, each waited for up to TIMEOUT seconds; a request left unanswered ends the
  connection with a reset (SO_LINGER 0), so nothing of it lingers in the kernel afterwards.
- greeting-client HOST PORT TIMEOUT: connects and waits up to TIMEOUT seconds for the
  server's greeting before it says anything, then closes.
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import time

READ_SIZE = 4096
SERVER_LIFETIME = 120.0  # seconds: a stand-in the fault failed to stop still ends by itself
GREETING = b"220 mail.default.svc.cluster.local ESMTP kviz-lab\r\n"


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def listener(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


# -- servers ---------------------------------------------------------------------------------


def backlog_server(host: str, port: str, backlog: str, accept_after: str) -> None:
    sock = listener(host, int(port), int(backlog))
    say(event="listening", port=int(port), backlog=int(backlog))
    deadline = time.monotonic() + SERVER_LIFETIME
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    if not selector.select(timeout=SERVER_LIFETIME):
        return
    # The queue holds a connection now: fall behind for a while, then take exactly one.
    time.sleep(float(accept_after))
    conn, peer = sock.accept()
    conn.sendall(b"hello\n")
    say(event="accepted", peer=f"{peer[0]}:{peer[1]}")
    while time.monotonic() < deadline:  # never accept again; keep the queue full
        time.sleep(1.0)


def connections(host: str, port: str):
    """(connection, peer, deadline) for each client, until the server's lifetime is over."""
    sock = listener(host, int(port), 16)
    sock.settimeout(1.0)
    say(event="listening", port=int(port))
    deadline = time.monotonic() + SERVER_LIFETIME
    while time.monotonic() < deadline:
        try:
            conn, peer = sock.accept()
        except TimeoutError:
            continue
        yield conn, peer, deadline


def banner_server(host: str, port: str) -> None:
    for conn, peer, _deadline in connections(host, port):
        with conn:
            conn.sendall(GREETING)
            say(event="greeted", peer=f"{peer[0]}:{peer[1]}")


def sniffing_proxy(host: str, port: str, upstream_host: str, upstream_port: str) -> None:
    """One client at a time: wait for its first bytes (to tell HTTP from TLS from the rest),
    only then connect upstream. A client that waits for the server to speak first never
    sends any, and the upstream server's greeting is never asked for."""
    for conn, peer, deadline in connections(host, port):
        started = time.monotonic()
        say(event="waiting for the client's first bytes", peer=f"{peer[0]}:{peer[1]}")
        conn.settimeout(max(deadline - started, 0.1))
        try:
            first = conn.recv(READ_SIZE)
        except (TimeoutError, ConnectionError):
            first = b""
        waited = round(time.monotonic() - started, 3)
        if not first:
            say(event="client closed before speaking", peer=f"{peer[0]}:{peer[1]}",
                waited_s=waited, upstream_connected=False)
            conn.close()
            continue
        with conn, socket.create_connection((upstream_host, int(upstream_port)), 5) as up:
            up.sendall(first)
            say(event="relayed", peer=f"{peer[0]}:{peer[1]}", waited_s=waited,
                upstream_connected=True)
            conn.sendall(up.recv(READ_SIZE))


# -- clients ---------------------------------------------------------------------------------


def burst_client(host: str, port: str, count: str, wait: str) -> None:
    address = (host, int(port))
    socks = []
    for _ in range(int(count)):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(address)  # the SYN leaves now; completion is awaited below
        socks.append(sock)
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_WRITE)
    outcome: dict[int, str] = {}
    deadline = time.monotonic() + float(wait)
    while len(outcome) < len(socks) and (left := deadline - time.monotonic()) > 0:
        for key, events in selector.select(timeout=min(left, 0.1)):
            sock = key.fileobj
            local = sock.getsockname()[1]
            if events & selectors.EVENT_WRITE:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    outcome[local] = f"connect error {error}"
                    selector.unregister(sock)
                    continue
                sock.send(b"HELLO\r\n")
                selector.modify(sock, selectors.EVENT_READ)
            else:
                try:
                    reply = sock.recv(READ_SIZE).decode(errors="replace").strip()
                except ConnectionError as exc:
                    reply = f"error {exc}"
                outcome[local] = f"answered {reply!r}"
                selector.unregister(sock)
    for sock in socks:
        outcome.setdefault(sock.getsockname()[1], "no answer")
        sock.close()
    say(connections={str(port): result for port, result in sorted(outcome.items())})


def _reset_on_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def keepalive_client(host: str, port: str, idle: str, timeout: str) -> None:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sock = socket.create_connection((host, int(port)), timeout=float(timeout))
    local = sock.getsockname()[1]
    answers = []
    for number in (1, 2):
        if number == 2:
            time.sleep(float(idle))
        sent = time.monotonic()
        sock.sendall(request)
        try:
            reply = sock.recv(READ_SIZE).decode(errors="replace")
            answer = reply.splitlines()[0] if reply else "closed by the server"
        except TimeoutError:
            answer = "no answer"
        except ConnectionError as exc:
            answer = f"error {exc}"
        answers.append({"request": number, "answer": answer,
                        "waited_s": round(time.monotonic() - sent, 3)})
        if not answer.startswith("HTTP/"):
            _reset_on_close(sock)
            break
    sock.close()
    say(local_port=local, idle_s=float(idle), requests=answers)


def greeting_client(host: str, port: str, timeout: str) -> None:
    started = time.monotonic()
    sock = socket.create_connection((host, int(port)), timeout=float(timeout))
    local = sock.getsockname()[1]
    try:
        greeting = sock.recv(READ_SIZE).decode(errors="replace").strip() or None
    except TimeoutError:
        greeting = None
    waited = round(time.monotonic() - started, 3)
    sock.close()
    say(local_port=local, greeting=greeting, waited_s=waited)


COMMANDS = {
    "backlog-server": backlog_server, "banner-server": banner_server,
    "sniffing-proxy": sniffing_proxy, "burst-client": burst_client,
    "keepalive-client": keepalive_client, "greeting-client": greeting_client,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
