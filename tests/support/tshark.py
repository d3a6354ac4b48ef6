"""tshark as the independent reading of a capture in tests."""

from __future__ import annotations

import subprocess


def fields(path, display_filter: str | None, *names: str, options=()) -> list[list[str]]:
    """One row per frame of `path` that matches `display_filter`: the named fields' values,
    each its first occurrence (an ICMP error or a tunnel repeats the fields of the packet it
    carries; the first are the frame's own). `options` go before the file (e.g. "-o", ...)."""
    argv = ["tshark", *options, "-r", str(path), "-n", "-T", "fields", "-E", "separator=/t",
            "-E", "occurrence=f"]
    if display_filter:
        argv += ["-Y", display_filter]
    for name in names:
        argv += ["-e", name]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]
