"""A capture on one of this host's interfaces: dumpcap streaming pcapng to stdout.

The interface list is the one the web process sees; a worker on another host (or in another
container) sees its own, and the capture fails with dumpcap's message if it lacks the name.
"""

from __future__ import annotations

import os

from django.conf import settings

from captures.access import grants
from captures.adapters import sniffer
from captures.sources.base import INTERFACE_NAME, LiveSource, Target, TargetError, register


def targets(user=None) -> list[dict]:
    """This host's interfaces (base offers them only to users with the host grant)."""
    return [{"kind": "local", "interface": name} for name in sniffer.local_interfaces()]


def resolve(target: dict, user=None) -> Target:
    interface = target.get("interface")
    if not isinstance(interface, str) or not INTERFACE_NAME.fullmatch(interface) or interface in (
            ".", ".."):
        raise TargetError("interface must be a Linux interface name (at most 15 characters)")
    if interface not in sniffer.local_interfaces():
        raise TargetError(f"no local interface {interface!r}")
    return Target("local", {"interface": interface}, sniffer.interface_linktype(interface),
                  grants.host_guard_filter(user, settings.KVIZ_PROTECTED_PORTS))


class LocalSource(LiveSource):
    def __init__(self, interface: str, bpf: str = "", max_packets: int | None = None):
        self.interface = interface
        self.bpf = bpf
        self.max_packets = max_packets
        self.vantage = f"host/{os.uname().nodename}:{interface}"
        self.interfaces = {}
        self.sniff = None

    def open(self) -> None:
        self.sniff = sniffer.start(self.interface, self.bpf, max_packets=self.max_packets)
        self.stream = self.sniff.stream
        self.preamble = self.sniff.preamble

    def stop(self) -> None:
        self.sniff.stop()

    def kill(self) -> None:
        self.sniff.process.kill()

    def close(self) -> None:
        if self.sniff:
            self.sniff.close()


def open_source(kind: str, spec: dict, bpf: str, max_packets: int | None = None,
                capture_id=None) -> LocalSource:
    return LocalSource(spec["interface"], bpf, max_packets)


register(["local"], resolve=resolve, targets=targets, open=open_source, host=True)
