"""dumpcap inside a lab namespace: start, know it is really capturing, stop it cleanly.

Why these flags:
- `-p` (no promiscuous mode): a bridge in promiscuous mode makes br_netfilter hand bridged
  frames to the IP layer a second time, and the capture shows copies no real node would.
- `-y LINUX_SLL2` with `-i any`: cooked v2 keeps each packet's interface index, which is how a
  node capture tells veth from bridge from uplink (the meta file maps indexes to names).
- pcapng output; `-w -` streams it to stdout for live viewers.
`start` waits (bounded) until dumpcap really holds its capture socket; `stop` lets the kernel's
last ring block reach dumpcap, then SIGINT makes it flush and close the file.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from captures.lab import netns

META_SCHEMA = "kviz.capture-meta/1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# libpcap's TPACKET_V3 ring hands packets to dumpcap a block at a time, when a block fills or
# its timeout (dumpcap: 250 ms) expires; SIGINT before that drops the block's packets unseen.
DRAIN_BEFORE_STOP = 0.4


class CaptureFailed(RuntimeError):
    pass


def dumpcap_argv(interface: str, output: str, capture_filter: str = "") -> list[str]:
    # -n: pcapng (dumpcap's default, said anyway); -q: no packet counts on stderr.
    link_type = ["-y", "LINUX_SLL2"] if interface == "any" else []
    # The filter is one argv element, never shell text; dumpcap compiles (and rejects) it.
    bpf = ["-f", capture_filter] if capture_filter else []
    return ["dumpcap", "-p", "-q", "-n", "-i", interface, *link_type, *bpf, "-w", output]



def _die_with_parent() -> None:
    # Its own session keeps a Ctrl-C to the caller from cutting the capture short, but a
    # caller killed with SIGKILL could not stop it: the kernel then does (PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)

@dataclass
class DumpcapRun:
    """A running dumpcap. `process.stdout` carries pcapng bytes when `path` is None.

    (Not a capture in the dashboard's sense: that is captures.models.Capture, a row.)"""

    ns: str
    interface: str
    path: Path | None
    process: subprocess.Popen
    stderr_lines: list[str] = field(default_factory=list)
    _stderr: bytes = b""

    @classmethod
    def start(cls, ns: str, interface: str, path: Path | None = None,
              capture_filter: str = "") -> DumpcapRun:
        output = "-" if path is None else str(path)
        process = subprocess.Popen(
            netns.in_ns(ns, dumpcap_argv(interface, output, capture_filter)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if path is None else subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent,
        )
        capture = cls(ns, interface, path, process)
        try:
            capture._wait_capturing()
        except BaseException:
            capture.process.kill()
            capture.process.wait(timeout=STOP_TIMEOUT)
            raise
        return capture

    def _wait_capturing(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._read_stderr()
            if self.process.poll() is not None:
                break
            if self._capturing():
                return
            time.sleep(0.02)
        self._read_stderr()
        detail = " | ".join(self.stderr_lines[-3:]) or "no output"
        raise CaptureFailed(f"dumpcap on {self.ns}:{self.interface} did not start: {detail}")

    def _read_stderr(self) -> None:
        stderr = self.process.stderr
        while select.select([stderr], [], [], 0)[0]:
            chunk = os.read(stderr.fileno(), 4096)
            if not chunk:
                return
            self._stderr += chunk
            self.stderr_lines = self._stderr.decode(errors="replace").splitlines()

    def _capturing(self) -> bool:
        # "Capturing on ..." comes before the capture socket exists, so it proves nothing.
        # Ready means: dumpcap holds a packet socket (listed in its namespace's
        # /proc/PID/net/packet) and, when writing a file, has written the file header, which
        # it does only once the capture is open.
        if self.path is not None and (not self.path.exists() or self.path.stat().st_size == 0):
            return False
        return bool(packet_socket_inodes(self.process.pid))

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Stop cleanly (SIGINT flushes the file); returns dumpcap's exit code."""
        if self.process.poll() is None:
            time.sleep(DRAIN_BEFORE_STOP)
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.process.stderr and not self.process.stderr.closed:
            self._read_stderr()  # dumpcap's closing statistics, for the caller's log
            self.process.stderr.close()
        return self.process.returncode


def packet_socket_inodes(pid: int) -> set[str]:
    """Inodes of the AF_PACKET sockets that process `pid` holds open."""
    try:
        table = Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return set()
    packet_inodes = {line.split()[-1] for line in table if line.strip()}
    held = set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(target[8:-1])
    return held & packet_inodes


def write_meta(path: Path, vantage: str, interfaces: dict[int, str]) -> Path:
    meta_path = path.with_name(path.name + ".meta.json")
    meta = {"schema": META_SCHEMA, "vantage": vantage,
            "interfaces": {str(index): name for index, name in sorted(interfaces.items())}}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta_path
