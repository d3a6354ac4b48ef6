"""Real faults for tests, each local to the test that makes it: a TCP proxy that cuts a
service away and brings it back, a redis-server of the test's own, a size-limited tmpfs, a
private worker on a queue of its own. Nothing here touches the machine's own services.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.support.services import RUN_TAG, Worker, free_port, wait_for


class TcpProxy(threading.Thread):
    """Forwards 127.0.0.1:<port> to `upstream` until cut().

    cut() resets every connection it carries and from then on resets each new one as soon as
    it is accepted (counted in `refused`), as a server that went away does; restore() forwards
    again. `resets` counts the connections cut mid-way. Bounded: at most MAX_CONNECTIONS open.
    """

    MAX_CONNECTIONS = 200

    def __init__(self, upstream: tuple[str, int]):
        super().__init__(name="fault-proxy", daemon=True)
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.peers: dict[socket.socket, socket.socket] = {}
        self.lock = threading.Lock()
        self.down = False
        self.done = threading.Event()
        self.refused = 0
        self.resets = 0
        self.forwarded = 0

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        # SO_LINGER 0: close() sends RST, as a crashed or firewalled server's peer sees it.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()

    def _drop(self, sock: socket.socket) -> None:
        other = self.peers.pop(sock, None)
        for each in (sock, other):
            if each is None:
                continue
            self.peers.pop(each, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(each)
            self._reset(each)

    def cut(self) -> None:
        with self.lock:
            self.down = True
            clients = [s for s in list(self.peers) if s.getsockname()[1] == self.port]
            for sock in clients:
                self._drop(sock)
                self.resets += 1

    def restore(self) -> None:
        with self.lock:
            self.down = False

    def run(self) -> None:
        while not self.done.is_set():
            for key, _ in self.selector.select(0.1):
                with self.lock:
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj in self.peers:
                        self._pump(key.fileobj)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.down or len(self.peers) >= 2 * self.MAX_CONNECTIONS:
            self.refused += 1
            self._reset(client)
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._reset(client)
            return
        for sock in (client, server):
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, None)
        self.peers[client], self.peers[server] = server, client
        self.forwarded += 1

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        target = self.peers[sock]
        try:
            target.setblocking(True)
            target.settimeout(5)
            target.sendall(data)
            target.setblocking(False)
        except OSError:
            self._drop(sock)

    def stop(self) -> None:
        self.done.set()
        self.join(5)
        with self.lock:
            for sock in list(self.peers):
                self._drop(sock)
        self.listener.close()
        self.selector.close()


class RedisServer:
    """A redis-server of the test's own on a free loopback port; kill() is SIGKILL (nothing
    saved, nothing flushed). `appendonly` makes it persist as kviz tells its broker to
    (scripts/start.sh, docker-compose.yml), in `directory`."""

    def __init__(self, log_path: Path, port: int | None = None, appendonly: bool = False,
                 directory: Path | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self.appendonly = appendonly
        self.directory = directory or log_path.parent
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def missing() -> str | None:
        if not shutil.which("redis-server") or not shutil.which("redis-cli"):
            return "needs redis-server and redis-cli"
        return None

    def ping(self) -> bool:
        return subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                              text=True, timeout=5).stdout.strip() == "PONG"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.directory),
             "--daemonize", "no", "--logfile", str(self.log_path)])
        wait_for(self.ping, 10, what="redis-server to answer")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def keys(self) -> list[str]:
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--scan"], capture_output=True,
                             text=True, timeout=10).stdout
        return [line for line in out.splitlines() if line]


def mount_missing() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if not shutil.which("mount") or not shutil.which("umount"):
        return "needs mount and umount"
    return None


@contextlib.contextmanager
def small_disk(size: str = "8m"):
    """A tmpfs of `size` mounted on a fresh temporary directory, unmounted (lazily, should a
    process still hold a file there) and removed on the way out, whatever happened."""
    missing = mount_missing()
    if missing:
        pytest.skip(missing)
    where = Path(tempfile.mkdtemp(prefix="kviz-small-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(directory: Path, name: str = "filler", chunk: int = 64 * 1024) -> OSError:
    """Write into `directory` until the disk refuses; returns the refusal (ENOSPC), which
    proves the disk is full. Appends to the same file when called again."""
    path = directory / name
    with open(path, "ab", buffering=0) as fp:
        block = b"\xa5" * chunk
        for _ in range(1_000_000):  # bounded: 64 GB at most
            try:
                written = fp.write(block)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    return exc
                raise
            if written < len(block):
                block = block[:max(1, written)] if written else block[:1]
    raise AssertionError(f"{directory} never filled up")


def private_worker(env: dict, log_path: Path, suffix: str) -> Worker:
    """A worker on a queue of its own (its name too), so the suite's worker never takes its
    tasks and it never takes theirs."""
    queue = f"{env.get('KVIZ_QUEUE', 'kviz-test')}-{suffix}"
    return Worker({**env, "KVIZ_QUEUE": queue, "KVIZ_ANALYSIS_QUEUE": f"{queue}-analysis"},
                  log_path, name=f"{RUN_TAG}-{suffix}")


@contextlib.contextmanager
def queued_to(queue: str):
    """Captures this test process queues go to `queue` (a private worker's)."""
    from captures.jobs import actions, tasks

    before = actions.queue

    def send(task_name, capture_id):
        tasks.TASKS[task_name].apply_async(args=(str(capture_id),), queue=queue)

    actions.queue = send
    try:
        yield
    finally:
        actions.queue = before


def syn_times(path: Path, port: int = 80) -> list[float]:
    """When each TCP SYN (without ACK) to `port` was recorded in the capture file."""
    from captures.analysis.packets import decode_frame
    from captures.analysis.pcapfile import Warnings, read_frames
    from captures.analysis.records import ACK, SYN

    times = []
    with open(path, "rb") as fp:
        _linktypes, frames = read_frames(fp, 0, Warnings(), "capture")
        for frame in frames:
            record = decode_frame(frame)
            if (record is not None and record.proto == 6 and record.dport == port
                    and record.tcp_flags & SYN and not record.tcp_flags & ACK):
                times.append(record.time)
    return times


def tiny_pcap() -> bytes:
    """A classic pcap of one Ethernet/IPv4/UDP frame: a valid upload, a few bytes long."""
    payload = b"kviz"
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + udp
    frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame))
    return header + record + frame


@contextlib.contextmanager
def queued_to_broker(broker_url: str, queue: str):
    """Captures this test process queues go to `queue` on the broker at `broker_url` (a
    private Redis), not the suite's."""
    from kombu import Connection

    from captures.jobs import actions, tasks

    before = actions.queue

    def send(task_name, capture_id):
        with Connection(broker_url) as connection:
            tasks.TASKS[task_name].apply_async(args=(str(capture_id),), queue=queue,
                                               connection=connection)

    actions.queue = send
    try:
        yield
    finally:
        actions.queue = before
