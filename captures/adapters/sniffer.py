"""The one door to tcpdump, dumpcap and tshark outside the lab: compile filters, list
interfaces, sniff, and dissect one stored frame for the diagram's packet details.

Every command runs from an argv list, never through a shell, with `--` before user text, so a
filter such as `; rm -rf /` or `$(id)` is only ever an (invalid) BPF expression.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import resource
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


DISSECT_TIMEOUT = 30.0  # the default; the web edge passes KVIZ_TSHARK_SECONDS
DISSECT_MEMORY = 1024 ** 3  # address space of one tshark; the web edge passes its setting
DISSECT_MAX_BYTES = 8 * 1024 * 1024  # tshark's JSON for one frame; a jumbo frame is ~2 MB


class FilterError(ValueError):
    pass


class DissectError(RuntimeError):
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


def _bounded(memory_bytes: int, cpu_seconds: int) -> None:
    # In the child, before exec: a dissection of a huge or hostile file cannot take the host's
    # memory (allocations beyond RLIMIT_AS fail and tshark exits) nor a CPU for long.
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))


def dissect_frame(path, frame_number: int, timeout: float = DISSECT_TIMEOUT,
                  memory_bytes: int = DISSECT_MEMORY) -> dict:
    """tshark's full dissection of frame `frame_number` (1-based) of a stored capture.

    Returns `{"frame": n, "protocols": "eth:ethertype:ip:tcp", "layers": {name: tree},
    "details": [{"text", "children"}] (Wireshark's readable lines), "hex": "<the frame's
    bytes>"}`, or None when the file has no such frame. The whole file is
    read (not one cut-out frame) so TCP and TLS dissectors see the frame in its context; tshark
    is stopped as soon as the frame's JSON object is complete, so an early frame of a big file
    is quick. Bounded by `timeout` (wall clock; its CPU time too), `memory_bytes` (RLIMIT_AS)
    and DISSECT_MAX_BYTES of output. Callers bound how many run at once (the web edge:
    captures.web.diagram_api).
    """
    if isinstance(frame_number, bool) or not isinstance(frame_number, int) or frame_number < 1:
        raise ValueError("frame numbers start at 1")
    deadline = time.monotonic() + timeout
    selected = ["tshark", "-n", "-r", str(path), "-Y", f"frame.number=={frame_number}"]

    def json_object_ends(line: bytes, started: bool) -> tuple[bool, bool]:
        # tshark -T json writes one packet as an object indented by two spaces: the closing
        # "  }" ends it, and nothing else can match this filter afterwards.
        started = started or line == b"  {"
        return started, started and line.rstrip(b",") == b"  }"

    lines = _tshark_lines([*selected, "-T", "json", "-x"], json_object_ends, deadline,
                          timeout, memory_bytes)
    if lines is None:
        return None
    try:
        packet = json.loads(b"\n".join(lines).rstrip(b","), object_pairs_hook=_keep_repeats)
    except ValueError:
        raise DissectError("tshark's output could not be read") from None
    layers = packet.get("_source", {}).get("layers", {})
    raw = layers.get("frame_raw") or [""]
    frame = layers.get("frame") or {}

    def text_block_ends(line: bytes, started: bool) -> tuple[bool, bool]:
        # tshark -V writes the packet's tree, then a blank line.
        started = started or bool(line.strip())
        return started, started and not line.strip()

    # What Wireshark's packet details pane shows ("Internet Protocol Version 4, Src: …"),
    # read as its own pass: -T json carries only the fields' names.
    shown = _tshark_lines([*selected, "-V"], text_block_ends, deadline, timeout, memory_bytes)
    return {"frame": frame_number, "protocols": frame.get("frame.protocols", ""),
            "layers": {name: _without_raw(tree) for name, tree in layers.items()
                       if not _is_raw(name)},
            "details": _details_tree(shown or []),
            "hex": raw[0] if isinstance(raw, list) and raw else ""}


def _tshark_lines(argv: list[str], ends, deadline: float, timeout: float,
                  memory_bytes: int) -> list[bytes] | None:
    """The lines of one packet's output of tshark `argv`, from the line `ends` says starts it
    to the line it says ends it; None when tshark ended without one (no such frame). tshark
    is stopped as soon as the packet is complete; bounded as dissect_frame says."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DissectError("tshark took too long to find the frame")
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            preexec_fn=functools.partial(_bounded, memory_bytes, math.ceil(timeout) + 1))
    except FileNotFoundError:
        raise DissectError("cannot dissect frames: tshark is not installed") from None
    lines: list[bytes] = []
    size, started, complete, pending = 0, False, False, b""
    fd = process.stdout.fileno()
    try:
        while not complete:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DissectError("tshark took too long to find the frame")
            if not select.select([fd], [], [], min(left, 0.2))[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > DISSECT_MAX_BYTES:
                raise DissectError("the frame's dissection is too large to show")
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                started, complete = ends(line, started)
                if started:
                    lines.append(line)
                if complete:
                    break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        process.stdout.close()
    if not complete:
        if process.returncode not in (0, -signal.SIGKILL):
            # Not ours to kill and not a clean end: out of memory (beyond RLIMIT_AS tshark
            # aborts, or cannot even load its libraries), out of CPU time, or an unreadable file.
            raise DissectError(f"tshark failed on this capture (exit status "
                               f"{process.returncode}; out of memory or time?)")
        if started and lines:
            return lines  # the text pass of the last frame of a file: its end is the end
        return None
    return lines


def _details_tree(lines: list[bytes]) -> list[dict]:
    """tshark -V's indented lines as a tree: [{"text", "children"}], four spaces a level."""
    root: list[dict] = []
    stack: list[tuple[int, list[dict]]] = [(-1, root)]
    for raw in lines:
        text = raw.decode("utf-8", "replace").rstrip()
        if not text.strip():
            continue
        depth = (len(text) - len(text.lstrip(" "))) // 4
        while stack[-1][0] >= depth:
            stack.pop()
        node = {"text": text.strip(), "children": []}
        stack[-1][1].append(node)
        stack.append((depth, node["children"]))
    return root


def _without_raw(tree):
    """tshark -x puts a `<field>_raw` [hex, offset, length, ...] beside every field; the
    frame's hex is kept once at the top, the rest would triple the size for nothing."""
    if isinstance(tree, dict):
        return {key: _without_raw(value) for key, value in tree.items()
                if not _is_raw(key)}
    if isinstance(tree, list):
        return [_without_raw(value) for value in tree]
    return tree


def _keep_repeats(pairs) -> dict:
    # tshark repeats a key for a repeated layer or field (IP in GRE in IP, two DNS answers);
    # a plain dict would keep only the last one.
    found: dict = {}
    for key, value in pairs:
        name, number = key, 2
        while name in found:
            name, number = f"{key} #{number}", number + 1
        found[name] = value
    return found


def _is_raw(key: str) -> bool:
    return key.split(" #", 1)[0].endswith("_raw")
