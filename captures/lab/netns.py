"""The lab's only door to the kernel: `ip`, `iptables`, `sysctl` and friends, always inside a
lab namespace.

Every function that changes network state takes a namespace name and runs through
`ip -n NS ...` or `ip netns exec NS ...`, so nothing here can touch the host's own namespace by
accident. Commands run from argv lists with timeouts; a failure raises `CommandFailed` carrying
the command's own error text, because "exit status 2" alone explains nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TIMEOUT = 15.0


class CommandFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        detail = self.stderr.splitlines()[-1] if self.stderr else f"exit status {returncode}"
        super().__init__(f"{' '.join(self.argv)}: {detail}")


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = DEFAULT_TIMEOUT,
        check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, None, f"timed out after {timeout:g}s") from exc
    except FileNotFoundError as exc:
        raise CommandFailed(argv, None, f"{argv[0]} not found") from exc
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stderr or result.stdout)
    return result


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside namespace `ns` (with its /etc/netns/NS files bind-mounted)."""
    return ["ip", "netns", "exec", ns, *argv]


def ns_run(ns: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    return run(in_ns(ns, argv), **kwargs)


def ip(ns: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["ip", "-n", ns, *args], **kwargs)


# -- namespaces ------------------------------------------------------------------------------


def list_namespaces() -> set[str]:
    # `ip netns list` prints "name (id: N)" for namespaces that have an id assigned.
    result = run(["ip", "netns", "list"])
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def add_namespace(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    ip(ns, "link", "set", "lo", "up")
    # No IPv6 in the lab: router solicitations and MLD reports would only add noise to
    # captures that are meant to show one request.
    sysctl(ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})


def delete_namespace(ns: str) -> None:
    run(["ip", "netns", "delete", ns], check=False)


def namespace_pids(ns: str) -> list[int]:
    result = run(["ip", "netns", "pids", ns], check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def kill_namespace_processes(ns: str, grace: float = 3.0) -> None:
    terminate(namespace_pids(ns), grace)


def signal_and_wait(pid: int, grace: float = 3.0) -> None:
    terminate([pid], grace)


def terminate(pids: list[int], grace: float) -> None:
    """SIGTERM `pids`, then SIGKILL what is left after `grace` seconds; waits for both."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            _signal(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    # A zombie still answers kill(0); /proc/PID/stat says whether it is one.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def alive(pid: int | None) -> bool:
    return bool(pid) and _alive(pid)


# -- links, addresses, sysctls, iptables -------------------------------------------------------


def links(ns: str) -> dict[int, str]:
    """Interface index → name, as `tcpdump -i any` (Linux cooked v2) will number them."""
    result = ip(ns, "-j", "link", "show")
    return {link["ifindex"]: link["ifname"] for link in json.loads(result.stdout or "[]")}


def sysctl(ns: str, values: dict[str, str]) -> None:
    # `ip netns exec` remounts /sys and /proc/sys/net follows the caller's namespace, so these
    # writes land in `ns` only.
    ns_run(ns, ["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in values.items())])


def try_sysctl(ns: str, key: str, value: str) -> bool:
    try:
        sysctl(ns, {key: value})
    except CommandFailed:
        return False
    return True


def iptables_restore(ns: str, rules: str) -> None:
    ns_run(ns, ["iptables-restore"], input=rules)


def flush_neighbours(ns: str) -> None:
    ip(ns, "neigh", "flush", "all", check=False)


# -- processes ---------------------------------------------------------------------------------


def spawn(ns: str, argv: Sequence[str], log_path: Path) -> subprocess.Popen:
    """Start a long-running program inside `ns`, detached from our session, logging to a file.

    `ip netns exec` execs the program in place, so the returned pid is the program's own.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            in_ns(ns, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )


def listening(pid: int, port: int, proto: str = "tcp") -> bool:
    """Whether the network namespace of `pid` has a socket bound to `port` (LISTEN for TCP).

    /proc/PID/net/* shows the sockets of that process's namespace, so the check needs no
    process of its own inside the namespace.
    """
    wanted_state = "0A" if proto == "tcp" else "07"
    for table in (proto, f"{proto}6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == wanted_state and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
