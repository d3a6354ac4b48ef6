"""What every capture source looks like to the runner, and how a requested target is checked.

A live source starts a capture and hands the runner a pcapng byte stream; the runner does the
rest (storage, live view, limits, analysis), so adding a source means writing `open()` and
`stop()`. Targets are validated here before anything is queued: the API answers 400 for a
target that does not exist, a hostile name or a cluster kind that is not configured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import BinaryIO

from captures.access import grants

# Kubernetes' DNS-1123 rules: a label (namespaces, capture names) and a subdomain (pods, nodes).
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Linux interface names: at most 15 bytes, no slash, no whitespace.
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
CLUSTER_KINDS = ("pod", "node", "service")


class TargetError(ValueError):
    """A target that cannot be captured; the message is for the user."""


def is_dns1123_label(value) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(DNS1123_LABEL.fullmatch(value))


def is_dns1123_subdomain(value) -> bool:
    return (isinstance(value, str) and len(value) <= 253
            and bool(DNS1123_SUBDOMAIN.fullmatch(value)))


@dataclass(frozen=True)
class Target:
    """A validated target: what the row stores and what the filter compiles against."""

    kind: str  # local | lab
    spec: dict = field(default_factory=dict)
    linktype: str = "EN10MB"  # tcpdump -y name of what dumpcap will record
    # BPF ANDed to the user's filter, so that what they may not see is never recorded.
    guard_filter: str = ""


class LiveSource:
    """A running capture. `stream` yields pcapng bytes; `preamble` came before it."""

    stream: BinaryIO
    preamble: bytes = b""
    vantage: str | None = None
    interfaces: dict[int, str]

    def open(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the capture to end; `stream` reaches EOF soon after. Must not block."""
        raise NotImplementedError

    def kill(self) -> None:
        """The capture did not end after stop(): end it now."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def inventory(self) -> dict | None:
        return None


def resolve_target(target, user=None) -> Target:
    """Check a requested target (the API's `target` object) for `user`; raise TargetError.

    Cluster targets check the user's namespace grant before anything reaches the cluster."""
    if not isinstance(target, dict):
        raise TargetError("target must be an object such as {\"kind\": \"local\", ...}")
    kind = target.get("kind")
    if kind in CLUSTER_KINDS:
        from captures.sources import kubernetes

        return kubernetes.resolve(target, user)
    if kind in ("local", "lab"):
        try:
            grants.check_host(user)
        except grants.NotGranted as exc:
            raise TargetError(str(exc)) from None
    if kind == "local":
        from captures.sources import local

        return local.resolve(target, user)
    if kind == "lab":
        from captures.sources import labsource

        return labsource.resolve(target)
    if kind == "upload":
        raise TargetError("uploads are sent as multipart/form-data with a `file` field")
    raise TargetError("target kind must be one of local, lab, pod, node, service")


def open_live(kind: str, spec: dict, bpf: str, max_packets: int | None = None,
              capture_id=None) -> LiveSource:
    """A source for a validated target. `max_packets` lets a source stop itself exactly at the
    packet limit where it can; the runner enforces every limit anyway. `capture_id` labels
    what a source creates in a cluster, so orphans can be found after a worker dies."""
    if kind in CLUSTER_KINDS:
        from captures.sources import kubernetes

        return kubernetes.open_source(kind, spec, bpf, capture_id)
    if kind == "local":
        from captures.sources import local

        return local.LocalSource(spec["interface"], bpf, max_packets)
    if kind == "lab":
        from captures.sources import labsource

        return labsource.LabSource(spec["target"], bpf, max_packets)
    raise TargetError(f"no live source for kind {kind!r}")


def list_targets(user=None) -> list[dict]:
    """What `user` may capture: local interfaces and the lab (with the host grant), the
    cluster's granted namespaces, uploads."""
    from captures.sources import kubernetes, labsource, local

    host = [*local.targets(), *labsource.targets()] if grants.may_capture_host(user) else []
    return [*host, *kubernetes.targets(user), {"kind": "upload"}]
