"""The lab's pods and node as live sources (through captures.sources.lab, the lab's adapter).

Targets are addressed as the lab names its vantages: "pod/<namespace>/<pod>" or "node/<name>".
"""

from __future__ import annotations

import inspect
import os
import signal

from captures.adapters import sniffer
from captures.sources.base import (
    LiveSource,
    Target,
    TargetError,
    is_dns1123_label,
    is_dns1123_subdomain,
)

# What dumpcap records at each kind of lab target (see captures/lab/capture.py).
LAB_LINKTYPES = {"pod": "EN10MB", "node": sniffer.ANY_LINKTYPE}
# ImportError: a build without the lab package offers no lab targets.
LAB_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, OSError, ValueError, KeyError,
                                                 ImportError)


def _lab():
    from captures.sources import lab  # imports the lab package: only when a lab is used

    return lab


def targets() -> list[dict]:
    try:
        lab = _lab()
        up = lab.get_lab().is_up()
        return [{"kind": "lab", "target": t.id, "type": t.kind, "up": up}
                for t in lab.list_targets()]
    except LAB_FAILURES:
        return []  # no lab here (not root, no `ip netns`): nothing to offer


def _check_id(target_id) -> None:
    if not isinstance(target_id, str) or len(target_id) > 300:
        raise TargetError("lab target must be \"pod/<namespace>/<pod>\" or \"node/<name>\"")
    parts = target_id.split("/")
    if parts[0] == "pod" and len(parts) == 3:
        if is_dns1123_label(parts[1]) and is_dns1123_subdomain(parts[2]):
            return
        raise TargetError("pod namespace and name must follow Kubernetes' DNS-1123 rules")
    if parts[0] == "node" and len(parts) == 2:
        if is_dns1123_subdomain(parts[1]):
            return
        raise TargetError("node names must follow Kubernetes' DNS-1123 rules")
    raise TargetError("lab target must be \"pod/<namespace>/<pod>\" or \"node/<name>\"")


def resolve(target: dict) -> Target:
    target_id = target.get("target")
    _check_id(target_id)
    try:
        lab = _lab()
        found = lab.find_target(target_id)
        up = lab.get_lab().is_up()
    except LAB_FAILURES as exc:
        raise TargetError(str(exc)) from None
    if not up:
        raise TargetError("the lab is not up (python manage.py kviz lab up)")
    return Target("lab", {"target": found.id}, LAB_LINKTYPES[found.kind])


def _adapter_takes_filter() -> bool:
    return "capture_filter" in inspect.signature(_lab().start_capture).parameters


class LabSource(LiveSource):
    def __init__(self, target_id: str, bpf: str = "", max_packets: int | None = None):
        self.target_id = target_id
        self.bpf = bpf
        self.max_packets = max_packets
        self.vantage = target_id
        self.interfaces = {}
        self.capture = None
        self.sniff = None

    def open(self) -> None:
        from captures.lab import netns

        lab = _lab()
        target = lab.find_target(self.target_id)
        # Cooked v2 (node captures) carries interface indexes; name them as they are now.
        self.interfaces = netns.links(target.netns) if target.kind == "node" else {}
        if self.bpf and not _adapter_takes_filter():
            # The lab adapter cannot filter yet: run dumpcap in the target's namespace here.
            self.sniff = sniffer.start(target.interface, self.bpf, netns.in_ns(target.netns, []),
                                       self.max_packets)
            self.stream, self.preamble = self.sniff.stream, self.sniff.preamble
            return
        extra = {"capture_filter": self.bpf} if self.bpf else {}
        self.capture = lab.start_capture(target, **extra)
        self.stream = self.capture.process.stdout

    def stop(self) -> None:
        if self.sniff:
            self.sniff.stop()
        elif self.capture.process.poll() is None:
            # Not Capture.stop(): that waits, and dumpcap's last blocks need us reading.
            self.capture.process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        process = self.sniff.process if self.sniff else self.capture.process
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.sniff:
            self.sniff.close()
        elif self.capture:
            self.capture.stop()
            if self.capture.process.stdout:
                self.capture.process.stdout.close()

    def inventory(self) -> dict | None:
        return _lab().inventory()
