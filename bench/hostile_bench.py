"""Hostile-capture benchmark: peak memory and CPU of `kviz analyze` on adversarial captures.

    .venv/bin/python bench/hostile_bench.py               # full size (about 1M packets)
    .venv/bin/python bench/hostile_bench.py --scale 0.1   # a tenth of every count, quick
    .venv/bin/python bench/hostile_bench.py --only dns,syn --regenerate

Four captures, each recorded from real traffic on loopback inside a network namespace this
script creates and deletes (bench/traffic_hostile.py makes the traffic; dumpcap records it):

  dns      ~1M one-question DNS queries, each with its own ID, source address:port and name,
           to a UDP port 53 socket that never reads them (so nothing answers);
  syn      ~200k SYN-only TCP flows, each from its own source address (127.2.0.0/14), to a
           port whose SYNs are dropped on input (iptables), so none is answered;
  reorder  one TCP connection of ~200k small data segments, its records then put in reverse
           order with 200 of them (the holes) moved to the end, as retransmissions would
           fill them; recorded records reordered and re-timed, no byte invented;
  idbs     the healthy capture below with its packets spread over ~100k interface description
           blocks (one per two packets, each with its own name).

and, measured in the same run, a healthy capture with as many packets as each (the mixed
DNS/HTTP/TLS capture of analyze_bench.py, cut to that count). Each is analysed by
`manage.py kviz analyze FILE --format json` in a child process; the table shows its wall and CPU
seconds, its peak RSS (ru_maxrss from wait4), both as ratios to the healthy capture's, and what
the result says of itself (partial, warnings). The last line is

    hostile_peak_rss_mb=M worst_rss_ratio=R worst_cpu_ratio=C

Captures are cached in bench/.cache/ (hostile-KIND-COUNT.pcapng). A benchmark, not a test:
nothing here asserts. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import analyze_bench  # noqa: E402  (a sibling script, not a package)
from analyze_bench import CACHE, PYTHON, Procs, read_line  # noqa: E402

from captures.analysis import pcapfile  # noqa: E402
from captures.analysis.packets import decode_frame  # noqa: E402
from captures.analysis.pcapfile import Warnings, read_frames  # noqa: E402
from captures.analysis.pcapmerge import interface_block, packet_block, section_header  # noqa: E402

TRAFFIC = str(BENCH / "traffic_hostile.py")
# Full-size counts; --scale multiplies them.
DNS_QUERIES = 1_000_000
SYN_FLOWS = 200_000
STREAM_SEGMENTS = 200_000
STREAM_HOLES = 200
INTERFACE_BLOCKS = 100_000
PACKETS_PER_INTERFACE = 2
SENDERS = 2  # parallel sender processes for the floods
DNS_PORT, SYN_PORT, STREAM_PORT = 53, 9, 8080
SEGMENT_SIZE = 100  # the MSS of the stream (Linux allows no less than 88)
ANALYZE_TIMEOUT = 3600.0  # seconds; a child past this is killed (--timeout)
HEAD_BYTES = 1 << 20  # of the JSON output kept to read the capture facts from
CASES = ("dns", "syn", "reorder", "idbs")


def log(message: str = "") -> None:
    print(message, flush=True)


def run(cmd: list[str], timeout: float = 60.0) -> None:
    subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)


# --------------------------------------------------------------------------------------------
# Recording inside a namespace
# --------------------------------------------------------------------------------------------


def record(
    out: Path,
    capture_filter: str,
    limit: float,
    setup: list[list[str]],
    servers: list[list[str]],
    senders: list[list[str]],
    packets: int | None = None,
) -> dict:
    """Record `senders`' traffic to `servers` on lo in a namespace of our own, into `out`.

    Bounded: dumpcap stops at `packets` (when given) or `limit` seconds; the servers and
    senders stop by themselves at their deadlines and are ended here in any case."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("hostile_bench.py records inside a network namespace: run it as root")
    namespace = f"kvizhostile{os.getpid()}"
    inside = ["ip", "netns", "exec", namespace]
    procs = Procs()
    started = time.monotonic()
    deadline = started + limit
    done: list[str] = []
    raw = out.with_suffix(".raw.pcapng")
    try:
        run(["ip", "netns", "add", namespace])
        run([*inside, "ip", "link", "set", "lo", "up"])
        for cmd in setup:
            run([*inside, *cmd])
        for cmd in servers:
            server = procs.start(
                [*inside, PYTHON, TRAFFIC, *cmd, "--deadline", f"{limit + 30:.0f}"],
                stdout=subprocess.PIPE, text=True)
            ready = read_line(server, 20.0).split()
            if len(ready) != 2 or ready[0] != "READY":
                raise RuntimeError(f"{cmd[0]} did not start: {ready!r}")
        dumpcap_cmd = [*inside, "dumpcap", "-i", "lo", "-p", "-q", "-B", "512", "-f",
                       capture_filter, "-a", f"duration:{limit:.0f}", "-w", str(raw)]
        if packets:
            dumpcap_cmd[-2:-2] = ["-c", str(packets)]
        dumpcap = procs.start(dumpcap_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        capturing = threading.Event()
        errors: list[str] = []

        def watch() -> None:
            for line in dumpcap.stderr:
                errors.append(line.rstrip())
                if line.startswith("Capturing on"):
                    capturing.set()
            capturing.set()

        threading.Thread(target=watch, daemon=True).start()
        if not capturing.wait(20.0) or dumpcap.poll() is not None:
            raise RuntimeError("dumpcap did not start: " + " | ".join(errors))
        # "Capturing on" comes before the capture filter is in place: without this pause the
        # first packets (at loopback speed, all of a small run) would go unrecorded.
        time.sleep(1.0)
        clients = [
            procs.start([*inside, PYTHON, TRAFFIC, *cmd, "--deadline",
                         f"{max(1.0, deadline - time.monotonic()):.0f}"],
                        stdout=subprocess.PIPE, text=True)
            for cmd in senders
        ]
        while (time.monotonic() < deadline and dumpcap.poll() is None
               and any(c.poll() is None for c in clients)):
            time.sleep(0.1)
        for client in clients:
            procs.stop(client)
            done.append((client.stdout.read() or "").strip())
        # Let dumpcap drain its buffer, then SIGINT: it writes what it holds and exits (on
        # SIGTERM it may exit with packets still unwritten).
        settle = time.monotonic() + 3.0
        while dumpcap.poll() is None and time.monotonic() < settle:
            time.sleep(0.1)
        if dumpcap.poll() is None:
            dumpcap.send_signal(signal.SIGINT)
            try:
                dumpcap.wait(30.0)
            except subprocess.TimeoutExpired:
                procs.stop(dumpcap)
    finally:
        procs.stop_all()
        subprocess.run(["ip", "netns", "del", namespace], check=False, timeout=30,
                       capture_output=True)
    return {"raw": raw, "seconds": round(time.monotonic() - started, 1),
            "namespace": namespace, "senders": done}


def frames_of(path: Path):
    """The recorded frames, read with the analysis' own reader."""
    with open(path, "rb") as fp:
        _linktypes, frames = read_frames(fp, 0, Warnings(), str(path))
        yield from frames


def count_packets(path: Path) -> int:
    # Every packet the file holds, past the analysis' own bound on interfaces too.
    bound, pcapfile.MAX_INTERFACES = pcapfile.MAX_INTERFACES, sys.maxsize
    try:
        return sum(1 for _ in frames_of(path))
    finally:
        pcapfile.MAX_INTERFACES = bound


def make_dns(out: Path, queries: int) -> dict:
    limit = 60.0 + queries / 5000
    senders = [["dns-flood", "--port", str(DNS_PORT), "--count", str(queries),
                "--part", f"{k}/{SENDERS}"] for k in range(SENDERS)]
    made = record(out, f"udp dst port {DNS_PORT}", limit, [],
                  [["udp-sink", "--port", str(DNS_PORT)]], senders, packets=queries)
    made["raw"].rename(out)
    return {"how": f"{queries} DNS queries from distinct 127.1.x.1:port with distinct IDs and "
                   f"names to a UDP port {DNS_PORT} socket that never reads, recorded on lo in "
                   f"namespace {made['namespace']} (deleted) in {made['seconds']} s; "
                   f"senders: {made['senders']}"}


def make_syn(out: Path, flows: int) -> dict:
    limit = 60.0 + flows / 2000
    drop = ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(SYN_PORT), "-j", "DROP"]
    senders = [["syn-flood", "--port", str(SYN_PORT), "--count", str(flows),
                "--part", f"{k}/{SENDERS}"] for k in range(SENDERS)]
    made = record(out, f"tcp dst port {SYN_PORT}", limit, [drop], [], senders, packets=flows)
    made["raw"].rename(out)
    return {"how": f"{flows} connect() calls from distinct source addresses, each closed in "
                   f"SYN_SENT, SYNs dropped on input, recorded on lo in namespace "
                   f"{made['namespace']} (deleted) in {made['seconds']} s; "
                   f"senders: {made['senders']}"}


def make_reorder(out: Path, segments: int, holes: int) -> dict:
    limit = 60.0 + segments / 2000
    setup = [["ip", "link", "set", "lo", "gso_max_segs", "1", "gso_max_size", "1500"]]
    server = ["stream-server", "--port", str(STREAM_PORT), "--segments", str(segments),
              "--size", str(SEGMENT_SIZE)]
    made = record(out, f"tcp port {STREAM_PORT}", limit, setup, [server],
                  [["stream-client", "--port", str(STREAM_PORT)]])
    raw = made["raw"]
    frames = list(frames_of(raw))
    records = [decode_frame(frame) for frame in frames]
    data = [i for i, r in enumerate(records)
            if r is not None and r.proto == 6 and r.sport == STREAM_PORT and r.payload_len]
    if len(data) < holes + 2:
        raise RuntimeError(f"the stream has only {len(data)} data segments")
    # 1. Everything before the server's first data segment (handshake, request) stays first.
    # 2. The server's data segments follow last-to-first, but for the holes (never the first
    #    segment), which come after them in stream order, as retransmissions filling them.
    # 3. The rest (the client's ACKs, the FINs) follows in its own order.
    chosen = set(random.Random(3).sample(data[1:], holes))
    in_data = set(data)
    order = [i for i in range(data[0])]
    order += [i for i in reversed(data) if i not in chosen]
    order += sorted(chosen)
    order += [i for i in range(data[0], len(frames)) if i not in in_data]
    times = sorted(frame.time for frame in frames)  # position k keeps the k-th time
    linktype = frames[0].linktype
    with open(out, "wb") as fp:
        fp.write(section_header("kviz hostile_bench (records reordered)"))
        fp.write(interface_block(linktype, "lo"))
        for position, index in enumerate(order):
            fp.write(packet_block(0, times[position], frames[index].data))
    raw.unlink()
    return {"how": f"one HTTP/1.1 response of {segments} segments of {SEGMENT_SIZE} B "
                   "(the MSS set so each carries that much, GSO off on lo) recorded on lo in "
                   f"namespace {made['namespace']} (deleted) in {made['seconds']} s: {len(frames)} "
                   f"records, {len(data)} data segments, written in reverse order with "
                   f"{holes} holes moved to the end (each record keeps its bytes; the k-th "
                   "record gets the k-th timestamp)"}


def make_idbs(out: Path, source: Path, interfaces: int) -> dict:
    count = 0
    with open(out, "wb") as fp:
        fp.write(section_header("kviz hostile_bench (one interface per two packets)"))
        for count, frame in enumerate(frames_of(source)):
            iface = count % interfaces
            if count < interfaces:
                fp.write(interface_block(frame.linktype, f"{frame.interface or 'if'}.{iface}"))
            fp.write(packet_block(iface, frame.time, frame.data))
    return {"how": f"the {count + 1} recorded packets of {source.name} spread over "
                   f"{min(interfaces, count + 1)} interface description blocks (packet k on "
                   "interface k mod N, each interface named after the original plus its index)"}


def ensure_hostile(kind: str, scale: float, regenerate: bool, healthy: Path) -> tuple[Path, dict]:
    counts = {
        "dns": round(DNS_QUERIES * scale),
        "syn": round(SYN_FLOWS * scale),
        "reorder": round(STREAM_SEGMENTS * scale),
        "idbs": round(INTERFACE_BLOCKS * scale),
    }
    count = counts[kind]
    out = CACHE / f"hostile-{kind}-{count}.pcapng"
    info_path = CACHE / f"hostile-{kind}-{count}.info.json"
    if out.exists() and info_path.exists() and not regenerate:
        return out, {**json.loads(info_path.read_text()), "cached": True}
    CACHE.mkdir(parents=True, exist_ok=True)
    if kind == "dns":
        info = make_dns(out, count)
    elif kind == "syn":
        info = make_syn(out, count)
    elif kind == "reorder":
        info = make_reorder(out, count, max(10, round(STREAM_HOLES * scale)))
    else:
        info = make_idbs(out, healthy, count)
    info["packets"] = count_packets(out)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return out, {**info, "cached": False}


def healthy_capture(packets: int, root: Path, root_packets: int, regenerate: bool) -> Path:
    """The mixed DNS/HTTP/TLS capture cut to `packets` packets (cached beside it)."""
    return analyze_bench.ensure_slice(root, root_packets, packets, regenerate)[0]


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def analyze(path: Path, packets: int, timeout: float, extra: list[str] = ()) -> dict:
    """`kviz analyze FILE --format json` in a child: wall and CPU seconds, peak RSS, and the
    capture facts from the head of its output (the rest is read and thrown away). Past
    `timeout` seconds the child is killed: its figures are then those until the kill."""
    cmd = [PYTHON, "manage.py", "kviz", "analyze", str(path), "--format", "json", *extra]
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        head = bytearray()
        try:
            while chunk := proc.stdout.read(1 << 20):
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
            proc.stdout.close()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if killed.is_set():
            return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
                    "rss_mb": usage.ru_maxrss / 1024, "packets": packets,
                    "partial": "killed", "warnings": [f"killed after {timeout:.0f} s"]}
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"kviz analyze {path.name} exited {proc.returncode}: "
                               + err.read()[-2000:].decode("utf-8", "replace"))
    text = head.decode("utf-8", "replace")
    at = text.index('"capture":') + len('"capture":')
    capture, _end = json.JSONDecoder().raw_decode(text, at)
    return {
        "seconds": seconds,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,  # KB on Linux
        "packets": packets,  # in the file (the analysis may skip some: see its warnings)
        "partial": capture["partial"],
        "warnings": capture["warnings"],
    }


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every count (0.1 for a quick run)")
    parser.add_argument("--only", default=",".join(CASES),
                        help=f"comma-separated cases among {', '.join(CASES)}")
    parser.add_argument("--regenerate", action="store_true",
                        help="record the hostile captures again even if cached")
    parser.add_argument("--timeout", type=float, default=ANALYZE_TIMEOUT,
                        help="kill an analysis after this many seconds; its row then shows "
                             "the figures until then (default %(default)s)")
    args = parser.parse_args(argv)
    cases = [c for c in args.only.split(",") if c]
    if not 0 < args.scale <= 1 or any(c not in CASES for c in cases):
        parser.error(f"--scale must be in (0, 1]; --only among {', '.join(CASES)}")
    signal.signal(signal.SIGTERM, _interrupt)  # the finally blocks run: namespace deleted

    # The healthy root: the recorded mixed capture (concatenated copies above 200k packets).
    needed = {
        "dns": round(DNS_QUERIES * args.scale),
        "syn": round(SYN_FLOWS * args.scale),
        "reorder": round(STREAM_SEGMENTS * args.scale * 1.6),  # data segments and ACKs
        "idbs": round(INTERFACE_BLOCKS * args.scale * PACKETS_PER_INTERFACE),
    }
    root_packets = max(analyze_bench.BASE_PACKETS, *(needed[c] for c in cases))
    root_info = analyze_bench.ensure_capture(root_packets, "auto", False, None)
    root, _ = analyze_bench.capture_paths(root_packets)
    log(f"healthy: {root.relative_to(ROOT)} ({root_info['packets']} packets; "
        f"{'cached; ' if root_info['cached'] else ''}{root_info['how']})")

    rows = []
    for kind in cases:
        source = None
        if kind == "idbs":
            source = healthy_capture(needed["idbs"], root, root_info["packets"], False)
        path, info = ensure_hostile(kind, args.scale, args.regenerate, source)
        log(f"{kind}: {path.relative_to(ROOT)} ({info['packets']} packets, "
            f"{path.stat().st_size / 1e6:.0f} MB; {'cached; ' if info['cached'] else ''}"
            f"{info['how']})")
        baseline_path = source or healthy_capture(info["packets"], root, root_info["packets"],
                                                  False)
        baseline = analyze(baseline_path, info["packets"], args.timeout)
        rows.append((f"healthy {baseline['packets']}", baseline, None))
        rows.append((kind, analyze(path, info["packets"], args.timeout), baseline))
        if kind == "syn":
            rows.append((f"{kind} --max-flows 1000",
                         analyze(path, info["packets"], args.timeout, ["--max-flows", "1000"]),
                         baseline))

    log()
    log(f"{'case':<24} {'packets':>8} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>11} "
        f"{'RSS ×':>6} {'CPU ×':>6} {'partial':>7}")
    for name, r, base in rows:
        rss_ratio = f"{r['rss_mb'] / base['rss_mb']:.2f}" if base else "1"
        cpu_ratio = f"{r['cpu'] / base['cpu']:.2f}" if base else "1"
        log(f"{name:<24} {r['packets']:>8} {r['seconds']:>7.1f} {r['cpu']:>7.1f} "
            f"{r['rss_mb']:>11.0f} {rss_ratio:>6} {cpu_ratio:>6} {r['partial']!s:>7}")
    log()
    log("warnings:")
    for name, r, _base in rows:
        for warning in r["warnings"][:6]:
            log(f"  {name}: {warning}")
    log()
    log("notes: peak RSS is ru_maxrss of that child alone; CPU s is its user + system time;")
    log("  × is the ratio to the healthy capture of the same packet count, measured in this run;")
    log("  partial 'killed': past --timeout, so its figures are those until the kill (a floor)")
    log("  the target (not asserted): peak RSS <= 300 MB for any capture up to 1M packets")
    hostile = [(r, base) for _name, r, base in rows if base is not None]
    peak = max(r["rss_mb"] for r, _ in hostile)
    worst_rss = max(r["rss_mb"] / base["rss_mb"] for r, base in hostile)
    worst_cpu = max(r["cpu"] / base["cpu"] for r, base in hostile)
    log(f"hostile_peak_rss_mb={peak:.0f} worst_rss_ratio={worst_rss:.2f} "
        f"worst_cpu_ratio={worst_cpu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
