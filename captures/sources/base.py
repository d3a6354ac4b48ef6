"""What every capture source looks like to the runner, and how a requested target is checked.

A live source starts a capture and hands the runner a pcapng byte stream; the runner does the
rest (storage, live view, limits, analysis), so adding a source means writing `open()` and
`stop()`, and registering its kinds (`register`, below). Targets are validated here before
anything is queued: the API answers 400 for a target that does not exist, a hostile name or a
cluster kind that is not configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from captures.access import grants

# Kubernetes' DNS-1123 rules: a label (namespaces, capture names) and a subdomain (pods, nodes).
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Linux interface names: at most 15 bytes, no slash, no whitespace.
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


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

    kind: str  # a registered kind: local, lab, pod, node, service
    spec: dict = field(default_factory=dict)
    linktype: str = "EN10MB"  # tcpdump -y name of what dumpcap will record
    # BPF ANDed to the user's filter, so that what they may not see is never recorded.
    guard_filter: str = ""


@dataclass(frozen=True)
class Part:
    """One place a capture records, as a target of a live kind: the whole capture for most
    kinds, one of several for a path (client pod, its node, each backend and its node).
    `error` says why it will not be captured (found before anything starts: not granted)."""

    kind: str
    spec: dict
    role: str = ""
    vantage: str = ""
    error: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "spec": self.spec, "role": self.role,
                "vantage": self.vantage, "error": self.error}


class LiveSource:
    """A running capture. `stream` yields pcapng bytes; `preamble` came before it."""

    stream: BinaryIO
    preamble: bytes = b""
    vantage: str | None = None
    interfaces: dict[int, str]
    writes_pcap = False  # the stream is classic pcap rather than pcapng (the stored suffix)

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


# -- the registry of kinds ----------------------------------------------------------------------
# Each source module registers the kinds it serves when it is imported (the package's __init__
# imports them all): sources import this module, never the other way round.


@dataclass(frozen=True)
class Kind:
    """How one kind of target is checked and opened. `open` is None for a kind that is never
    captured live (uploads); `host` kinds capture this host or its lab and need the host grant.
    """

    resolve: Callable[[dict, object], Target]  # (target, user) -> Target, or TargetError
    open: Callable[..., LiveSource] | None  # (kind, spec, bpf, max_packets, capture_id)
    host: bool
    live: bool  # started from the API; a composite kind (path) opens its parts' kinds


@dataclass(frozen=True)
class _Lister:
    targets: Callable[[object], list[dict]]  # (user) -> what the picker offers
    host: bool


_KINDS: dict[str, Kind] = {}
_LISTERS: list[_Lister] = []  # in registration order, which is the picker's order


def register(kinds, *, resolve, targets, open=None, host: bool = False,
             live: bool | None = None) -> None:
    """Serve `kinds` with these functions; `targets(user)` lists them all for the picker."""
    for kind in kinds:
        if kind in _KINDS:
            raise ValueError(f"target kind {kind!r} is registered twice")
        _KINDS[kind] = Kind(resolve, open, host, open is not None if live is None else live)
    _LISTERS.append(_Lister(targets, host))


def resolve_target(target, user=None) -> Target:
    """Check a requested target (the API's `target` object) for `user`; raise TargetError.

    Host kinds (local, lab) check the host grant, cluster kinds the user's namespace grant,
    before anything reaches the host or the cluster."""
    if not isinstance(target, dict):
        raise TargetError("target must be an object such as {\"kind\": \"local\", ...}")
    kind = target.get("kind")
    known = _KINDS.get(kind) if isinstance(kind, str) else None
    if known is None:
        live = ", ".join(name for name, entry in _KINDS.items() if entry.live)
        raise TargetError(f"target kind must be one of {live}")
    if known.host:
        try:
            grants.check_host(user)
        except grants.NotGranted as exc:
            raise TargetError(str(exc)) from None
    return known.resolve(target, user)


def open_live(kind: str, spec: dict, bpf: str, max_packets: int | None = None,
              capture_id=None) -> LiveSource:
    """A source for a validated target. `max_packets` lets a source stop itself exactly at the
    packet limit where it can; the runner enforces every limit anyway. `capture_id` labels
    what a source creates in a cluster, so orphans can be found after a worker dies."""
    known = _KINDS.get(kind)
    if known is None or known.open is None:
        raise TargetError(f"no live source for kind {kind!r}")
    return known.open(kind, spec, bpf, max_packets, capture_id)


def parts_of(kind: str, spec: dict) -> list[Part]:
    """The places a validated target records: a path's parts as resolved (kept in its spec),
    else the target itself."""
    if isinstance(spec.get("parts"), list):
        return [Part(p["kind"], p["spec"], p.get("role", ""), p.get("vantage", ""),
                     p.get("error", "")) for p in spec["parts"]]
    return [Part(kind, spec)]


def list_targets(user=None) -> list[dict]:
    """What `user` may capture: local interfaces and the lab (with the host grant), the
    cluster's granted namespaces, uploads."""
    host = grants.may_capture_host(user)
    return [found for lister in _LISTERS if host or not lister.host
            for found in lister.targets(user)]
