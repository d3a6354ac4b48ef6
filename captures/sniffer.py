"""The one door to tcpdump and dumpcap outside the lab: compile filters, list interfaces, sniff.

Every command runs from an argv list, never through a shell, with `--` before user text, so a
filter such as `; rm -rf /` or `$(id)` is only ever an (invalid) BPF expression.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SYS_CLASS_NET = Path("/sys/class/net")
COMPILE_TIMEOUT = 5.0
START_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0
# ARPHRD_* (linux/if_arp.h) → the DLT name tcpdump -y takes. dumpcap captures Linux loopback as
# Ethernet with zero addresses, so lo compiles as EN10MB too.
ARPHRD_LINKTYPES = {1: "EN10MB", 772: "EN10MB", 65534: "RAW", 776: "RAW", 778: "RAW"}
ANY_LINKTYPE = "LINUX_SLL2"  # `-i any` keeps interface indexes only in cooked v2


class FilterError(ValueError):
    pass


class SniffError(RuntimeError):
    pass


def compile_filter(expression: str, linktype: str) -> None:
    """Raise FilterError (with tcpdump's own words) unless `expression` compiles."""
    argv = ["tcpdump", "-d", "-y", linktype, "--", expression]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=COMPILE_TIMEOUT,
                                stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise FilterError("cannot check filters: tcpdump is not installed") from None
    except subprocess.TimeoutExpired:
        raise FilterError("the filter took too long to compile") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        detail = lines[-1].removeprefix("tcpdump: ") if lines else "invalid filter"
        raise FilterError(f"invalid BPF filter: {detail}")


def local_interfaces() -> list[str]:
    """Interfaces of this host's network namespace, plus `any`."""
    try:
        names = sorted(p.name for p in SYS_CLASS_NET.iterdir())
    except OSError:
        names = []
    return ["any", *names]


def interface_linktype(interface: str) -> str:
    if interface == "any":
        return ANY_LINKTYPE
    try:
        arphrd = int((SYS_CLASS_NET / interface / "type").read_text())
    except (OSError, ValueError):
        return "EN10MB"
    return ARPHRD_LINKTYPES.get(arphrd, "EN10MB")


def dumpcap_argv(interface: str, bpf: str = "", max_packets: int | None = None) -> list[str]:
    # -p: no promiscuous mode (see captures/lab/capture.py: bridges would show extra copies);
    # -n: pcapng, written block by block, so a killed capture is readable up to its last block.
    argv = ["dumpcap", "-p", "-q", "-n", "-i", interface]
    if interface == "any":
        argv += ["-y", ANY_LINKTYPE]
    if bpf:
        argv += ["-f", bpf]
    if max_packets:
        argv += ["-c", str(max_packets)]  # exact: dumpcap stops itself after that many
    return [*argv, "-w", "-"]


def _die_with_parent() -> None:
    # A worker killed with SIGKILL cannot stop its dumpcap; the kernel does it for us.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Sniff:
    """A running dumpcap streaming pcapng on `process.stdout`; `preamble` was read already."""

    process: subprocess.Popen
    preamble: bytes

    @property
    def stream(self):
        return self.process.stdout

    def stop(self) -> None:
        """SIGINT: dumpcap writes its last blocks and exits; the reader sees EOF."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def close(self) -> None:
        self.stop()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe:
                pipe.close()


def start(interface: str, bpf: str = "", wrap: list[str] | None = None,
          max_packets: int | None = None) -> Sniff:
    """Start dumpcap; returns once it is capturing (its pcapng header has arrived).

    `wrap` prefixes the argv (e.g. `ip netns exec NS`).
    """
    argv = [*(wrap or []), *dumpcap_argv(interface, bpf, max_packets)]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + START_TIMEOUT
    fd = process.stdout.fileno()
    while time.monotonic() < deadline:
        # dumpcap writes the section header only once its capture socket is open.
        if select.select([fd], [], [], 0.05)[0]:
            chunk = os.read(fd, 65536)
            if chunk:
                return Sniff(process, chunk)
        if process.poll() is not None:
            break
    process.kill()
    stderr = process.communicate(timeout=STOP_TIMEOUT)[1].decode(errors="replace")
    detail = " | ".join(line for line in stderr.splitlines()[-3:] if line.strip())
    raise SniffError(f"dumpcap on {interface} did not start: {detail or 'no output'}")
