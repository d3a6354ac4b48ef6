"""An Istio-like sidecar for the kviz lab, small enough to read: `meshproxy.py CONFIG.json`.

The lab starts one process per role inside a pod's network namespace:

- outbound (client pod, 15001): iptables REDIRECTs the pod's outbound TCP here. The proxy reads
  the original destination (SO_ORIGINAL_DST); for a known Service VIP it forwards each HTTP/1.1
  request over a POOLED mutual-TLS connection straight to a backend pod's 15006 (round robin, so
  both backends serve), with Istio's SNI and ALPN. Upstream connections outlive the downstream
  ones and stay open while the lab runs: a capture shows "no FIN, kept open". Any other
  destination is passed through as plain TCP.
- inbound (backend pods, 15006): terminates mTLS (a client certificate is required) and relays
  the bytes to the app on 127.0.0.1:80.
- istiod (15012): a TLS endpoint standing in for the control plane; the outbound proxy keeps one
  long-lived connection to it, as Envoy keeps its xDS stream.

It starts as root, loads its keys and binds, then drops to the proxy uid (1337), the uid that
the REDIRECT rule exempts, so the proxy's own connections are not redirected back to it. Every
module it needs is imported before that: after the drop it may not be able to read the Python
installation (a venv under /root, for one).
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  (imported before dropping privileges)
import contextlib
import encodings.idna  # noqa: F401  (ssl encodes SNI names with it, lazily)
import itertools
import json
import os
import signal
import socket
import ssl
import struct
import sys
import time

SO_ORIGINAL_DST = 80
HEAD_LIMIT = 64 * 1024
TLS_HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
ISTIO_ALPN = ["istio-peer-exchange", "istio-http/1.1", "istio"]
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} meshproxy[{os.getpid()}] {message}", flush=True)


# -- HTTP/1.1, just enough to know where one message ends -------------------------------------


class Head:
    def __init__(self, raw: bytes):
        lines = raw.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.headers = [tuple(part.strip() for part in line.split(":", 1))
                        for line in lines[1:] if ":" in line]

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for k, v in self.headers if k.lower() == name
                for t in v.split(",")}

    def encode(self, drop_hop_by_hop: bool = True, extra: tuple = ()) -> bytes:
        drop = (HOP_BY_HOP | self.tokens("connection")) if drop_hop_by_hop else set()
        kept = [(k, v) for k, v in self.headers if k.lower() not in drop]
        lines = [self.start, *(f"{k}: {v}" for k, v in [*kept, *extra]), "", ""]
        return "\r\n".join(lines).encode("latin-1")


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next message head, or None on a clean EOF between messages."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ConnectionError("connection closed inside a message head") from exc
        return None
    return Head(raw[:-4])


async def relay_body(head: Head, reader, writer, has_body: bool) -> bool:
    """Copy one message body; returns False when its end is the end of the connection."""
    if not has_body:
        return True
    if "chunked" in head.tokens("transfer-encoding"):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        return True
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    length = head.get("content-length")
    if length is not None:
        remaining = int(length)
        while remaining:
            chunk = await reader.read(min(remaining, 65536))
            if not chunk:
                raise ConnectionError("connection closed inside a body")
            writer.write(chunk)
            remaining -= len(chunk)
            await writer.drain()
        return True
    while chunk := await reader.read(65536):  # delimited by close
        writer.write(chunk)
        await writer.drain()
    return False


def request_has_body(head: Head) -> bool:
    return head.get("content-length") not in (None, "0") or bool(
        head.tokens("transfer-encoding"))


def response_has_body(request: Head, response: Head) -> bool:
    status = int(response.start.split()[1])
    return not (request.start.startswith("HEAD ") or status in (204, 304) or status < 200)


def wants_close(head: Head) -> bool:
    if "close" in head.tokens("connection"):
        return True
    return head.start.endswith("HTTP/1.0") and "keep-alive" not in head.tokens("connection")


# -- plumbing ----------------------------------------------------------------------------------


async def pipe(reader, writer) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def splice(r1, w1, r2, w2) -> None:
    try:
        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
    finally:
        for w in (w1, w2):
            w.close()


def original_destination(writer) -> tuple[str, int]:
    raw = writer.get_extra_info("socket").getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(address), port


def split_hostport(value: str) -> tuple[str, int]:
    host, port = value.rsplit(":", 1)
    return host, int(port)


# -- outbound ----------------------------------------------------------------------------------


class Upstream:
    def __init__(self, endpoint: str, reader, writer, number: int):
        self.endpoint, self.reader, self.writer, self.number = endpoint, reader, writer, number
        self.requests = 0

    @property
    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())


class Pool:
    """Idle upstream connections per endpoint; a request borrows one and gives it back."""

    def __init__(self, tls: ssl.SSLContext):
        self.tls = tls
        self.idle: dict[str, list[Upstream]] = {}
        self.counter = itertools.count(1)

    async def acquire(self, endpoint: str, sni: str) -> Upstream:
        idle = self.idle.setdefault(endpoint, [])
        while idle:
            upstream = idle.pop()
            if upstream.usable:
                return upstream
            upstream.writer.close()
        host, port = split_hostport(endpoint)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self.tls, server_hostname=sni,
                                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT),
            CONNECT_TIMEOUT + TLS_HANDSHAKE_TIMEOUT)
        upstream = Upstream(endpoint, reader, writer, next(self.counter))
        ssl_object = writer.get_extra_info("ssl_object")
        log(f"upstream #{upstream.number} to {endpoint}: {ssl_object.version()} "
            f"alpn={ssl_object.selected_alpn_protocol()} sni={sni}")
        return upstream

    def release(self, upstream: Upstream) -> None:
        if upstream.usable:
            self.idle.setdefault(upstream.endpoint, []).append(upstream)
        else:
            upstream.writer.close()


async def exchange(request: Head, reader, writer, upstream: Upstream) -> bool:
    """One request/response; returns whether the upstream connection can be reused."""
    upstream.writer.write(request.encode())
    await relay_body(request, reader, upstream.writer, request_has_body(request))
    await upstream.writer.drain()
    while True:
        response = await read_head(upstream.reader)
        if response is None:
            raise ConnectionError("upstream closed before answering")
        closing = wants_close(response)
        extra = (("Connection", "close"),) if wants_close(request) else ()
        writer.write(response.encode(extra=extra))
        if int(response.start.split()[1]) >= 200:
            break
    delimited = await relay_body(response, upstream.reader, writer,
                                 response_has_body(request, response))
    await writer.drain()
    return delimited and not closing


class Outbound:
    def __init__(self, config: dict, tls: ssl.SSLContext):
        self.services = config["services"]  # "VIP:port" → {"sni", "endpoints"}
        self.pool = Pool(tls)
        self.rotation = {vip: itertools.cycle(svc["endpoints"])
                         for vip, svc in self.services.items()}

    async def handle(self, reader, writer) -> None:
        try:
            ip, port = original_destination(writer)
            service = self.services.get(f"{ip}:{port}")
            if service is None:
                await self.passthrough(reader, writer, ip, port)
            else:
                await self.serve_http(reader, writer, f"{ip}:{port}", service)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            log(f"downstream error: {exc!r}")
        finally:
            writer.close()

    async def passthrough(self, reader, writer, ip: str, port: int) -> None:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(ip, port), CONNECT_TIMEOUT)
        await splice(reader, writer, up_reader, up_writer)

    async def serve_http(self, reader, writer, vip: str, service: dict) -> None:
        while (request := await read_head(reader)) is not None:
            endpoint = next(self.rotation[vip])
            upstream = await self.pool.acquire(endpoint, service["sni"])
            try:
                reusable = await exchange(request, reader, writer, upstream)
            except BaseException:
                upstream.writer.close()
                raise
            upstream.requests += 1
            log(f"{request.start.split(' HTTP/')[0]} → {endpoint} on upstream "
                f"#{upstream.number} (request {upstream.requests} on it)")
            if reusable:
                self.pool.release(upstream)
            else:
                upstream.writer.close()
            if wants_close(request):
                break


async def control_plane_stream(address: str, tls: ssl.SSLContext, node_id: str) -> None:
    """One long-lived connection to istiod, as Envoy keeps its xDS stream (best effort)."""
    host, port = split_hostport(address)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname="istiod.istio-system.svc",
                                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT),
            CONNECT_TIMEOUT + TLS_HANDSHAKE_TIMEOUT)
        writer.write(json.dumps({"node": node_id, "type": "DiscoveryRequest"}).encode() + b"\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)
        log(f"control plane {address}: {reply.decode().strip()}")
        await reader.read()  # keep the stream open until istiod or we go away
    except OSError as exc:  # TimeoutError and ConnectionError included
        log(f"control plane {address} unavailable: {exc!r}")


# -- inbound and istiod ------------------------------------------------------------------------


class Inbound:
    def __init__(self, config: dict):
        self.app = split_hostport(config["app"])

    async def handle(self, reader, writer) -> None:
        try:
            app_reader, app_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.app), CONNECT_TIMEOUT)
        except OSError as exc:
            log(f"app {self.app} unreachable: {exc!r}")
            writer.close()
            return
        await splice(reader, writer, app_reader, app_writer)


async def istiod_handle(reader, writer) -> None:
    try:
        while line := await reader.readline():
            request = json.loads(line)
            answer = {"type": "DiscoveryResponse", "node": request.get("node"), "version": 1}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, OSError, ValueError):
        pass
    finally:
        writer.close()


# -- setup -------------------------------------------------------------------------------------


def tls_contexts(config: dict) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts with the workload identity and the lab CA."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context in (server, client):
        context.load_cert_chain(config["cert"], config["key"])
        context.load_verify_locations(config["ca"])
        # TLS 1.2 keeps the handshake readable on the wire: CertificateRequest and the client's
        # Certificate are encrypted in TLS 1.3.
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    server.verify_mode = ssl.CERT_REQUIRED if config.get("require_client_cert") else \
        ssl.CERT_OPTIONAL
    server.set_alpn_protocols(config.get("alpn", ISTIO_ALPN))
    # Peers are named by SPIFFE URIs, not host names; the CA check still applies.
    client.check_hostname = False
    client.verify_mode = ssl.CERT_REQUIRED
    client.set_alpn_protocols(ISTIO_ALPN)
    return server, client


def listening_socket(address: str) -> socket.socket:
    host, port = split_hostport(address)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def drop_privileges(uid: int) -> None:
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


async def serve(config: dict, sock: socket.socket, server_tls, client_tls) -> None:
    mode = config["mode"]
    background = []
    if mode == "outbound":
        outbound = Outbound(config, client_tls)
        server = await asyncio.start_server(outbound.handle, sock=sock)
        if config.get("istiod"):
            background.append(asyncio.create_task(
                control_plane_stream(config["istiod"], client_tls, config.get("node_id", ""))))
    elif mode == "inbound":
        server = await asyncio.start_server(Inbound(config).handle, sock=sock, ssl=server_tls,
                                            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
    else:
        server = await asyncio.start_server(istiod_handle, sock=sock, ssl=server_tls,
                                            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"{mode} listening on {config['listen']} as uid {os.getuid()}")
    async with server:
        await stop.wait()
    for task in background:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main() -> int:
    with open(sys.argv[1]) as fp:
        config = json.load(fp)
    server_tls, client_tls = tls_contexts(config)
    sock = listening_socket(config["listen"])
    drop_privileges(config.get("uid", 1337))
    asyncio.run(serve(config, sock, server_tls, client_tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
