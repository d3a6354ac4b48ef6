"""Who may capture where in a cluster: namespaces granted through Django groups.

A group named `k8s-ns:<namespace>` grants that namespace to its members; a group per person
makes a per-user grant. `k8s-nodes` grants node captures, which see every pod on the node and
so are granted apart. Superusers may capture anywhere. Groups are managed in the admin, so no
model or migration is needed, and the check runs before anything reaches the cluster.
"""

from __future__ import annotations

NAMESPACE_GROUP_PREFIX = "k8s-ns:"
NODES_GROUP = "k8s-nodes"
HOST_GROUP = "host-capture"


class NotGranted(PermissionError):
    """The user may not capture there; the message is for the user."""


def _group_names(user) -> set[str]:
    if not (user and user.is_authenticated and user.is_active):
        return set()
    return set(user.groups.values_list("name", flat=True))


def granted_namespaces(user) -> set[str] | None:
    """The namespaces `user` may capture in; None means every namespace."""
    if user is not None and user.is_active and user.is_superuser:
        return None
    return {name[len(NAMESPACE_GROUP_PREFIX):] for name in _group_names(user)
            if name.startswith(NAMESPACE_GROUP_PREFIX)}


def namespaces_granted_to_anyone() -> set[str]:
    """Every namespace some group grants: where the cluster must let the worker capture (one
    RoleBinding each, captures.sources.kubernetes.capture_bindings)."""
    from django.contrib.auth.models import Group

    names = Group.objects.filter(name__startswith=NAMESPACE_GROUP_PREFIX).values_list(
        "name", flat=True)
    return {name[len(NAMESPACE_GROUP_PREFIX):] for name in names}


def may_capture_nodes(user) -> bool:
    if user is not None and user.is_active and user.is_superuser:
        return True
    return NODES_GROUP in _group_names(user)


def is_staff(user) -> bool:
    return bool(user is not None and user.is_active and (user.is_staff or user.is_superuser))


def may_capture_host(user) -> bool:
    """May `user` capture this host's interfaces or its lab? (None: kviz itself, the CLI.)"""
    return user is None or is_staff(user) or HOST_GROUP in _group_names(user)


def check_host(user) -> None:
    if not may_capture_host(user):
        raise NotGranted(f"captures of this host and its lab are not granted to you (an "
                         f"administrator adds you to the group {HOST_GROUP!r})")


def host_guard_filter(user, protected_ports) -> str:
    """The BPF that keeps kviz's own traffic out of `user`'s host capture ("" for staff)."""
    if user is None or is_staff(user) or not protected_ports:
        return ""
    ports = " or ".join(f"port {int(port)}" for port in sorted(set(protected_ports)))
    return f"not (tcp and ({ports}))"


def check(user, kind: str, namespace: str | None) -> None:
    """Raise NotGranted unless `user` may start a `kind` capture in `namespace`."""
    if kind == "node":
        if not may_capture_nodes(user):
            raise NotGranted(f"node captures are not granted to you (an administrator adds "
                             f"you to the group {NODES_GROUP!r})")
        return
    allowed = granted_namespaces(user)
    if allowed is not None and namespace not in allowed:
        raise NotGranted(f"namespace {namespace!r} is not granted to you (an administrator "
                         f"adds you to the group '{NAMESPACE_GROUP_PREFIX}{namespace}')")
