"""HTTP/1.1 traffic for the analysis benchmark: a keep-alive server and a bounded client.

    traffic_http.py server --port 80 --deadline 300
    traffic_http.py client --port 80 --count 12000 --threads 8 --deadline 120

The server is http.server with protocol_version HTTP/1.1 (keep-alive), listening on 127.0.0.1
and ::1; it prints `READY PORT` when bound. The client makes `--count` requests in total: half
on a new connection each (SYN .. FIN), half on keep-alive connections carrying 2-12 requests.
It prints `DONE requests ok` (also when ended by SIGTERM, which makes it finish early).
Both stop by themselves at `--deadline` seconds.
Standard library only; loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATHS = ("/", "/api/v1/items", "/healthz", "/static/app.js", "/api/v1/users/42", "/metrics")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bench/1"
    sys_version = ""
    timeout = 10
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body

    def do_GET(self) -> None:
        size = 64 + (len(self.path) * 37) % 1200
        body = (b"x" * size) if self.path != "/healthz" else b"ok\n"
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:
        pass


class Server4(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class Server6(Server4):
    address_family = socket.AF_INET6


def start_servers(port: int, handler=Handler, classes=(Server4, Server6)) -> list:
    """Bind on 127.0.0.1 and ::1 (the same port; 0 lets the OS choose) and serve in threads."""
    servers = []
    server4, server6 = classes
    servers.append(server4(("127.0.0.1", port), handler))
    port = servers[0].server_address[1]
    servers.append(server6(("::1", port), handler))
    for server in servers:
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
        ).start()
    return servers


def serve(port: int, deadline: float, **kwargs) -> int:
    servers = start_servers(port, **kwargs)
    print(f"READY {servers[0].server_address[1]}", flush=True)
    time.sleep(deadline)
    for server in servers:
        server.shutdown()
    return 0


def request_plan(i: int) -> tuple[str, str, dict]:
    method = "POST" if i % 11 == 5 else "GET"
    path = PATHS[i % len(PATHS)] if i % 17 else f"/missing/{i % 50}"
    host = f"web{i % 13}.default.svc.cluster.local"
    return method, path, {"Host": host, "User-Agent": "kviz-bench/1"}


def run_clients(port: int, count: int, threads: int, deadline: float, connect) -> tuple[int, int]:
    """Make `count` requests with `threads` workers; `connect(worker, i)` opens a connection.

    Returns (requests made, requests answered). Work is handed out in units: a unit is either
    one request on a new connection or a keep-alive connection carrying several requests.
    """
    end = time.monotonic() + deadline
    lock = threading.Lock()
    state = {"next": 0, "ok": 0}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish, then still print DONE

    def take(n: int) -> tuple[int, int]:
        with lock:
            start = state["next"]  # requests handed out; a unit cut short still counts them
            n = max(0, min(n, count - start))
            state["next"] = start + n
            return start, n

    def worker(w: int) -> None:
        ok = 0
        unit = 0
        while time.monotonic() < end and not stop.is_set():
            keepalive = unit % 2 == 1
            start, n = take(2 + (unit * 5 + w) % 11 if keepalive else 1)
            unit += 1
            if n == 0:
                break
            conn = None
            try:
                conn = connect(w, start)
                for i in range(start, start + n):
                    method, path, headers = request_plan(i)
                    body = b"payload=" + b"y" * (i % 300) if method == "POST" else None
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    ok += 1
            except (OSError, http.client.HTTPException):
                pass
            finally:
                if conn is not None:
                    conn.close()
        with lock:
            state["ok"] += ok

    workers = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(max(0.0, end - time.monotonic()) + 5)
    return min(state["next"], count), state["ok"]


def client(port: int, count: int, threads: int, deadline: float) -> int:
    def connect(w: int, i: int) -> http.client.HTTPConnection:
        host = "::1" if w % 4 == 3 else "127.0.0.1"
        return http.client.HTTPConnection(host, port, timeout=5)

    made, ok = run_clients(port, count, threads, deadline, connect)
    print(f"DONE {made} {ok}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.mode == "server":
        return serve(args.port, args.deadline)
    return client(args.port, args.count, args.threads, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
