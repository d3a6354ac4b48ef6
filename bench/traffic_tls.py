"""TLS traffic for the analysis benchmark: an HTTPS server and a bounded client (ssl module).

    traffic_tls.py server --port 443 --cert CERT --key KEY --deadline 300
    traffic_tls.py client --port 443 --count 6000 --threads 8 --deadline 120

The server is traffic_http's keep-alive HTTP/1.1 server behind TLS (ALPN: http/1.1), on
127.0.0.1 and ::1; it prints `READY PORT` when bound. The client offers ALPN h2,http/1.1, sends
an SNI name per connection, carries one request on half its connections and 2-12 on the other
half (connection reuse), and resumes the previous session on every third connection.
It prints `DONE requests ok` (also when ended by SIGTERM, which makes it finish early).
Both stop by themselves at `--deadline` seconds.
Standard library only; loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import ssl
import sys

from traffic_http import Server4, Server6, run_clients, serve


def tls_server_classes(cert: str, key: str) -> tuple[type, type]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])

    class TLSMixin:
        def finish_request(self, request, client_address):
            # handshake in the connection's own thread, not in the accept loop
            request.settimeout(10)
            try:
                tls = context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
            try:
                super().finish_request(tls, client_address)
            except (OSError, ssl.SSLError):
                pass
            finally:
                tls.close()

    class TLS4(TLSMixin, Server4):
        pass

    class TLS6(TLSMixin, Server6):
        pass

    return TLS4, TLS6


def client(port: int, count: int, threads: int, deadline: float) -> int:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a throwaway self-signed certificate
    context.set_alpn_protocols(["h2", "http/1.1"])
    sessions: dict[int, ssl.SSLSession] = {}
    opened: dict[int, int] = {}

    def connect(w: int, i: int) -> http.client.HTTPConnection:
        host = "::1" if w % 4 == 3 else "127.0.0.1"
        sni = f"api{i % 29}.bench.svc.cluster.local"
        n = opened.get(w, 0)
        opened[w] = n + 1
        session = sessions.get(w) if n % 3 == 2 else None
        raw = socket.create_connection((host, port), timeout=5)
        try:
            tls = context.wrap_socket(raw, server_hostname=sni, session=session)
        except (OSError, ssl.SSLError):
            raw.close()
            raise
        conn = _PresetConnection(host, port, tls, lambda: sessions.__setitem__(w, tls.session))
        return conn

    made, ok = run_clients(port, count, threads, deadline, connect)
    print(f"DONE {made} {ok}", flush=True)
    return 0


class _PresetConnection(http.client.HTTPConnection):
    """An HTTPConnection over an already-connected TLS socket (so SNI is ours, not the IP)."""

    def __init__(self, host: str, port: int, sock: ssl.SSLSocket, on_response) -> None:
        super().__init__(host, port, timeout=5)
        self.sock = sock
        self._on_response = on_response

    def getresponse(self):
        response = super().getresponse()
        self._on_response()  # the session ticket has arrived by now (TLS 1.3)
        return response

    def connect(self) -> None:  # closed by the server: no reconnect, the unit ends
        raise ConnectionError("TLS connection closed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.mode == "server":
        if not (args.cert and args.key):
            parser.error("server needs --cert and --key")
        return serve(args.port, args.deadline, classes=tls_server_classes(args.cert, args.key))
    return client(args.port, args.count, args.threads, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
