"""Analysis benchmark: `kviz analyze` against tshark and pyshark on a mixed DNS/HTTP/TLS capture.

    .venv/bin/python bench/analyze_bench.py                      # 200k packets
    .venv/bin/python bench/analyze_bench.py --packets 1000000    # 1M (built from the 200k one)
    .venv/bin/python bench/analyze_bench.py --regenerate --repeat 3

The capture is recorded from real traffic on loopback inside a network namespace that this
script creates and deletes (host loopback when not root), and cached under bench/.cache/ keyed
by packet count. Then, in the same run, it times `manage.py kviz analyze FILE --format json`
with each build of the analysis (interpreted, and compiled when scripts/compile_analysis.py
built it from these sources), `tshark -r FILE -T fields` with comparable fields, and pyshark
FileCapture(use_json=True) on a 20k-packet slice. Each build's figures are printed as

    interpreted: ratio_vs_tshark=X ratio_vs_pyshark=Y peak_rss_mb=Z
    compiled: ratio_vs_tshark=X ratio_vs_pyshark=Y peak_rss_mb=Z (xS the interpreted build)

and the last line is the compiled build's (the interpreted one's when there is none), without
its prefix. X and Y are kviz's packets/s divided by tshark's and pyshark's; Z is the peak RSS
of the kviz analyze process. A benchmark, not a test: nothing here asserts on timing. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CACHE = BENCH / ".cache"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
sys.path.insert(0, str(ROOT))
from captures.analysis import build as analysis_build  # noqa: E402  (never compiled itself)

PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))

BASE_PACKETS = 200_000  # larger captures are built by concatenating this one (see --build)
KINDS = ("dns", "http", "tls")
STANDARD_PORTS = {"dns": 53, "http": 80, "tls": 443}
# packets per client unit (a DNS query, an HTTP request, an HTTPS request), measured on loopback
PACKETS_PER_UNIT = {"dns": 2.0, "http": 6.0, "tls": 7.2}
CLIENT_THREADS = 8
MAX_ROUNDS = 20  # top-up rounds of traffic until dumpcap has its packet count
KVIZ_TIMEOUT = 3600.0  # seconds; each timed tool is killed past this
TSHARK_FIELDS = (
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.id",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
    "udp.srcport",
    "udp.dstport",
    "dns.id",
    "dns.flags.response",
    "dns.qry.name",
    "dns.qry.type",
    "dns.a",
    "dns.aaaa",
    "dns.flags.rcode",
    "http.request.method",
    "http.request.uri",
    "http.host",
    "http.response.code",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str",
)
# what the pyshark loop reads from each packet: the same layers as the tshark fields
PYSHARK_FIELDS = {
    "ip": ("src", "dst", "id"),
    "ipv6": ("src", "dst"),
    "tcp": ("srcport", "dstport", "flags", "seq_raw", "ack_raw", "len"),
    "udp": ("srcport", "dstport"),
    "dns": ("id", "flags_tree", "queries", "answers"),
    "http": ("request", "response", "host", "response_code", "request_tree"),
    "tls": ("record", "handshake"),
}


def log(message: str = "") -> None:
    print(message, flush=True)


def run(cmd: list[str], timeout: float = 120.0, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, timeout=timeout, **kwargs)


# --------------------------------------------------------------------------------------------
# The capture: recorded from real traffic, or concatenated from a recorded one
# --------------------------------------------------------------------------------------------


def capture_paths(packets: int) -> tuple[Path, Path]:
    return CACHE / f"mixed-{packets}.pcapng", CACHE / f"mixed-{packets}.info.json"


def ensure_capture(packets: int, build: str, regenerate: bool, gen_timeout: float | None) -> dict:
    """The cached capture of `packets` packets (made if missing or --regenerate) and its info."""
    path, info_path = capture_paths(packets)
    if path.exists() and info_path.exists() and not regenerate:
        info = json.loads(info_path.read_text())
        info["cached"] = True
        return info
    CACHE.mkdir(parents=True, exist_ok=True)
    if build == "concat" or (build == "auto" and packets > BASE_PACKETS):
        base = ensure_capture(BASE_PACKETS, "traffic", False, gen_timeout)
        info = concatenate(base, packets, path)
    else:
        limit = gen_timeout or 60.0 + packets / 2000.0
        info = record_capture(packets, path, limit)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    info["cached"] = False
    return info


class Procs:
    """Every process this benchmark starts, so the finally block can end exactly those."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.stop(proc)


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line from a child's stdout, waiting at most `timeout` seconds."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"no answer from {proc.args!r} in {timeout:.0f} s")
        return proc.stdout.readline().strip()
    finally:
        sel.close()


def record_capture(packets: int, out: Path, limit: float) -> dict:
    """Record `packets` packets of DNS, HTTP and TLS traffic on loopback, bounded by `limit` s."""
    root = os.geteuid() == 0 and shutil.which("ip") is not None
    namespace = f"kvizbench{os.getpid()}" if root else None
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    procs = Procs()
    started = time.monotonic()
    deadline = started + limit
    made = {kind: 0 for kind in KINDS}

    def traffic(kind: str, mode: str, port: int) -> list[str]:
        script = str(BENCH / f"traffic_{kind}.py")
        return [*prefix, PYTHON, script, mode, "--port", str(port)]

    with tempfile.TemporaryDirectory(prefix="kvizbench-") as tmp:
        cert, key, raw = Path(tmp, "cert.pem"), Path(tmp, "key.pem"), Path(tmp, "raw.pcapng")
        openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bench"]
        openssl += ["-days", "1", "-keyout", str(key), "-out", str(cert)]
        run(openssl, capture_output=True)
        try:
            if namespace:
                run(["ip", "netns", "add", namespace])
                run([*prefix, "ip", "link", "set", "lo", "up"])
            ports = {}
            for kind in KINDS:
                port = STANDARD_PORTS[kind] if namespace else 0
                extra = ["--cert", str(cert), "--key", str(key)] if kind == "tls" else []
                server = procs.start(
                    [*traffic(kind, "server", port), "--deadline", str(int(limit) + 30), *extra],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                ready = read_line(server, 20.0).split()
                if len(ready) != 2 or ready[0] != "READY":
                    raise RuntimeError(f"{kind} server did not start: {ready!r}")
                ports[kind] = int(ready[1])
            capture_filter = "udp port {dns} or tcp port {http} or tcp port {tls}".format(**ports)
            cmd = [*prefix, "dumpcap", "-i", "lo", "-p", "-q", "-B", "64", "-f", capture_filter]
            cmd += ["-c", str(packets), "-a", f"duration:{int(limit)}", "-w", str(raw)]
            dumpcap = procs.start(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            dumpcap_err: list[str] = []
            ready_event = threading.Event()

            def watch_dumpcap() -> None:
                for line in dumpcap.stderr:
                    dumpcap_err.append(line.rstrip())
                    if line.startswith("Capturing on"):
                        ready_event.set()
                ready_event.set()

            threading.Thread(target=watch_dumpcap, daemon=True).start()
            if not ready_event.wait(20.0) or dumpcap.poll() is not None:
                raise RuntimeError("dumpcap did not start: " + " | ".join(dumpcap_err))

            for round_number in range(MAX_ROUNDS):
                # a third of the packets each, then small top-ups until dumpcap has them all
                share = 1.0 if round_number == 0 else 0.1
                clients = {}
                for kind in KINDS:
                    units = math.ceil(packets / 3 * share / PACKETS_PER_UNIT[kind])
                    remaining = max(1.0, deadline - time.monotonic())
                    cmd = [*traffic(kind, "client", ports[kind]), "--count", str(units)]
                    cmd += ["--threads", str(CLIENT_THREADS), "--deadline", f"{remaining:.0f}"]
                    clients[kind] = procs.start(
                        cmd,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                while (
                    time.monotonic() < deadline
                    and dumpcap.poll() is None
                    and any(c.poll() is None for c in clients.values())
                ):
                    time.sleep(0.1)
                for kind, proc in clients.items():
                    procs.stop(proc)
                    done = (proc.stdout.read() or "").split()
                    if len(done) == 3 and done[0] == "DONE":
                        made[kind] += int(done[1])
                if dumpcap.poll() is not None or time.monotonic() >= deadline:
                    break
            procs.stop(dumpcap, grace=30.0)  # done already at -c; else SIGTERM flushes the file
        finally:
            procs.stop_all()
            if namespace:
                subprocess.run(["ip", "netns", "del", namespace], check=False, timeout=30)
        elapsed = time.monotonic() - started
        stats = count_capture(raw, ports)
        shutil.move(str(raw), out)
    how = (
        f"recorded from real traffic on loopback in {elapsed:.1f} s "
        + (f"(network namespace {namespace}, deleted)" if namespace else "(host loopback)")
        + f": {made['dns']} DNS queries, {made['http']} HTTP requests, "
        f"{made['tls']} HTTPS requests; dumpcap -c {packets}"
    )
    if stats["packets"] < packets:
        how += f"; time limit {limit:.0f} s reached at {stats['packets']} packets"
    return {"method": "traffic", "how": how, "ports": ports, **stats}


def count_capture(path: Path, ports: dict) -> dict:
    """Packets, first/last timestamps and the DNS/HTTP/TLS mix (by server port) of a capture."""
    cmd = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=,"]
    cmd += ["-e", "frame.time_epoch", "-e", "udp.port", "-e", "tcp.port"]
    by_port = {str(port): kind for kind, port in ports.items()}
    mix: Counter[str] = Counter()
    first = last = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as p:
        for line in p.stdout:
            fields = line.rstrip("\n").split(",")
            if fields[0]:
                t = float(fields[0])
                first = t if first is None else first
                last = t
            kind = next((by_port[f] for f in fields[1:] if f in by_port), "other")
            mix[kind] += 1
    total = sum(mix.values())
    return {
        "packets": total,
        "mix": {kind: mix.get(kind, 0) for kind in (*KINDS, "other") if mix.get(kind)},
        "start": first,
        "end": last,
    }


def concatenate(base: dict, packets: int, out: Path) -> dict:
    """A capture of `packets` packets: copies of the base one, each shifted after the previous."""
    base_path = capture_paths(BASE_PACKETS)[0]
    copies = math.ceil(packets / base["packets"])
    shift = math.ceil(base["end"] - base["start"]) + 1
    with tempfile.TemporaryDirectory(prefix="kvizbench-", dir=CACHE) as tmp:
        parts = []
        for i in range(copies):
            part = Path(tmp, f"part{i}.pcapng")
            run(["editcap", "-t", str(i * shift), str(base_path), str(part)], capture_output=True)
            parts.append(str(part))
        merged = Path(tmp, "merged.pcapng")
        run(["mergecap", "-a", "-w", str(merged), *parts], timeout=600, capture_output=True)
        final = Path(tmp, "final.pcapng")
        run(
            ["editcap", "-r", str(merged), str(final), f"1-{packets}"],
            timeout=600,
            capture_output=True,
        )
        stats = count_capture(final, base["ports"])
        shutil.move(str(final), out)
    how = (
        f"NOT recorded directly: {copies} copies of the recorded {base['packets']}-packet capture "
        f"({base['how']}), each shifted by {shift} s with editcap -t, joined with mergecap -a "
        f"and cut to {packets} packets (editcap -r); 5-tuples repeat in each copy"
    )
    return {"method": "concat", "how": how, "ports": base["ports"], **stats}


def ensure_slice(capture: Path, packets: int, size: int, regenerate: bool) -> tuple[Path, int]:
    if packets <= size:
        return capture, packets
    slice_path = capture.with_name(f"{capture.stem}.slice{size}.pcapng")
    stale = not slice_path.exists() or slice_path.stat().st_mtime < capture.stat().st_mtime
    if regenerate or stale:
        run(["editcap", "-r", str(capture), str(slice_path), f"1-{size}"], capture_output=True)
    return slice_path, size


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            todo.append(child)
    return found


def _pss_kb(pid: int) -> int:
    """The process's proportional set size: its own pages, and its share of pages it shares
    (a forked child shares its parent's until either writes them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed_child(
    cmd: list[str], timeout: float, *, sample: bool = True, **kwargs
) -> tuple[float, int, int, str]:
    """Run one child; (wall seconds, exit code, peak RSS in KB, stderr tail). The peak is the
    child's own (ru_maxrss via wait4) or, if larger and `sample`, the most that it and the
    processes it started held at once (kviz reads a large capture ahead in a second process,
    captures/analysis/readahead.py): the sum of their proportional set sizes, so that pages a
    fork shares count once, sampled from /proc every 20 ms."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, **kwargs)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        together = [0]  # KB: the largest sum of one sample
        done = threading.Event()

        def sample_sizes() -> None:
            while not done.wait(0.02):
                tree = [proc.pid, *_descendants(proc.pid)]
                if len(tree) > 1:
                    together[0] = max(together[0], sum(_pss_kb(pid) for pid in tree))

        sampler = threading.Thread(target=sample_sizes, daemon=True)
        if sample:
            sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            if sample:
                sampler.join()
            watchdog.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
    return seconds, proc.returncode, max(usage.ru_maxrss, together[0]), tail


def time_kviz(capture: Path, repeat: int, build: str) -> dict:
    """`build`: which build of the analysis runs (KVIZ_ANALYSIS_BUILD, analysis/build.py)."""
    cmd = [PYTHON, "manage.py", "kviz", "analyze", str(capture), "--format", "json"]
    env = {**os.environ, "KVIZ_ANALYSIS_BUILD": build}
    best, peak_kb = math.inf, 0
    # The timed runs are not sampled: reading two processes' page tables every 20 ms took
    # 5-8% of a run that keeps both cores busy. One more run, sampled, finds the peak.
    for sample in [False] * repeat + [True]:
        seconds, code, rss_kb, tail = timed_child(cmd, KVIZ_TIMEOUT, sample=sample, cwd=ROOT,
                                                  env=env)
        if code != 0:
            raise RuntimeError(f"kviz analyze exited {code}: {tail}")
        if not sample:
            best = min(best, seconds)
        peak_kb = max(peak_kb, rss_kb)
    return {"seconds": best, "rss_kb": peak_kb}


def tshark_command(capture: Path, ports: dict) -> list[str]:
    """`tshark -T fields` with the comparable fields, told the capture's ports."""
    cmd = ["tshark", "-r", str(capture), "-n", "-T", "fields", "-E", "separator=/t"]
    for field in TSHARK_FIELDS:
        cmd += ["-e", field]
    for kind, proto in (("dns", "dns"), ("http", "http"), ("tls", "tls")):
        if ports.get(kind) != STANDARD_PORTS[kind]:  # host-loopback fallback: OS-chosen ports
            cmd += ["-d", f"{'udp' if kind == 'dns' else 'tcp'}.port=={ports[kind]},{proto}"]
    return cmd


def time_tshark(capture: Path, repeat: int, ports: dict) -> dict:
    cmd = tshark_command(capture, ports)
    best, peak_kb = math.inf, 0
    for _ in range(repeat):
        seconds, code, rss_kb, tail = timed_child(cmd, KVIZ_TIMEOUT)
        if code != 0:
            raise RuntimeError(f"tshark exited {code}: {tail}")
        best, peak_kb = min(best, seconds), max(peak_kb, rss_kb)
    return {"seconds": best, "rss_kb": peak_kb}


def time_pyshark(slice_path: Path, repeat: int, time_box: float) -> dict:
    """Run the pyshark loop in a child (its own event loop and tshark), best of `repeat`."""
    cmd = [PYTHON, str(Path(__file__).resolve()), "--pyshark-worker", str(slice_path)]
    cmd += ["--pyshark-timeout", str(time_box)]
    best = None
    for _ in range(repeat):
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=time_box + 120, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pyshark worker exited {result.returncode}: {result.stderr[-2000:]}"
            )
        report = json.loads(result.stdout.strip().splitlines()[-1])
        if best is None or report["seconds"] / max(report["packets"], 1) < best["seconds"] / max(
            best["packets"], 1
        ):
            best = report
    return best


def pyshark_worker(slice_path: str, time_box: float) -> int:
    """Iterate every packet of the slice with pyshark, reading the compared fields."""
    import pyshark  # only here: the benchmark itself needs no pyshark

    start = time.perf_counter()
    capture = pyshark.FileCapture(slice_path, use_json=True, keep_packets=False)
    count = touched = 0
    complete = True
    try:
        for packet in capture:
            count += 1
            touched += packet.frame_info.get_field("time_epoch") is not None
            for layer in packet.layers:
                for field in PYSHARK_FIELDS.get(layer.layer_name, ()):
                    with contextlib.suppress(AttributeError):  # absent in this packet
                        touched += layer.get_field(field) is not None
            if count % 256 == 0 and time.perf_counter() - start > time_box:
                complete = False
                break
    finally:
        with contextlib.suppress(Exception):
            capture.close()
    seconds = time.perf_counter() - start
    print(
        json.dumps({"packets": count, "seconds": seconds, "complete": complete, "fields": touched})
    )
    return 0


# --------------------------------------------------------------------------------------------


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--packets",
        type=int,
        default=BASE_PACKETS,
        help="packets in the capture (default %(default)s; 1000000 for the target)",
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="record the capture again even if bench/.cache/ has one",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool; the best counts")
    parser.add_argument(
        "--build",
        choices=["auto", "traffic", "concat"],
        default="auto",
        help=f"auto: record up to {BASE_PACKETS} packets, concatenate above",
    )
    parser.add_argument("--slice", type=int, default=20_000, help="packets pyshark reads")
    parser.add_argument(
        "--pyshark-timeout",
        type=float,
        default=600.0,
        help="stop pyshark after this many seconds and extrapolate",
    )
    parser.add_argument(
        "--gen-timeout",
        type=float,
        default=None,
        help="time limit for recording traffic (default 60 s + 1 s per 2000 packets)",
    )
    parser.add_argument("--pyshark-worker", metavar="SLICE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pyshark_worker:
        return pyshark_worker(args.pyshark_worker, args.pyshark_timeout)
    if args.packets < 1 or args.repeat < 1 or args.slice < 1:
        parser.error("--packets, --repeat and --slice must be positive")

    # SIGTERM runs the finally blocks too (namespace deleted, children ended)
    signal.signal(signal.SIGTERM, _interrupt)

    info = ensure_capture(args.packets, args.build, args.regenerate, args.gen_timeout)
    capture, _ = capture_paths(args.packets)
    packets = info["packets"]
    mix = ", ".join(f"{k} {v} ({100 * v / packets:.0f}%)" for k, v in info["mix"].items())
    log(
        f"capture: {capture.relative_to(ROOT)} ({packets} packets, "
        f"{capture.stat().st_size / 1e6:.0f} MB, {info['end'] - info['start']:.1f} s of traffic)"
    )
    log(f"  made: {'cached; ' if info['cached'] else ''}{info['how']}")
    log(f"  mix by packets: {mix}")
    slice_path, slice_packets = ensure_slice(capture, packets, args.slice, args.regenerate)

    log(f"timing (best of {args.repeat}) ...")
    builds = {"interpreted": time_kviz(capture, args.repeat, "interpreted")}
    not_compiled = analysis_build.stale_reason()
    if not_compiled is None:
        builds["compiled"] = time_kviz(capture, args.repeat, "compiled")
    tshark = time_tshark(capture, args.repeat, info["ports"])
    pyshark = time_pyshark(slice_path, args.repeat, args.pyshark_timeout)

    tshark_pps = packets / tshark["seconds"]
    pyshark_pps = pyshark["packets"] / pyshark["seconds"]
    rows = [
        (
            f"kviz analyze ({build})",
            packets,
            timing["seconds"],
            packets / timing["seconds"],
            f"{timing['rss_kb'] / 1024:.0f}",
        )
        for build, timing in builds.items()
    ]
    rows += [
        (
            f"tshark -T fields ({len(TSHARK_FIELDS)} fields)",
            packets,
            tshark["seconds"],
            tshark_pps,
            f"{tshark['rss_kb'] / 1024:.0f}",
        ),
        ("pyshark FileCapture(use_json)", pyshark["packets"], pyshark["seconds"], pyshark_pps, "-"),
    ]
    log()
    log(f"{'tool':<34} {'packets':>9} {'seconds':>9} {'packets/s':>11} {'peak RSS MB':>12}")
    for tool, n, seconds, pps, rss in rows:
        log(f"{tool:<34} {n:>9} {seconds:>9.2f} {pps:>11.0f} {rss:>12}")
    log()
    log("notes: wall time of each whole process (kviz and tshark each include their start-up);")
    log(
        f"  pyshark is timed inside its process from FileCapture() on, on the first "
        f"{slice_packets} packets (scaled: its packets/s is that slice's)"
    )
    if not pyshark["complete"]:
        log(
            f"  pyshark was time-boxed at {args.pyshark_timeout:.0f} s after {pyshark['packets']} "
            f"of {slice_packets} packets: its packets/s is extrapolated from those"
        )
    log("  peak RSS: ru_maxrss from os.wait4 of that child or, if larger, the most it and the")
    log("  processes it started (kviz's read-ahead process) held at once: their summed PSS,")
    log("  sampled from /proc every 20 ms (max over --repeat runs; kviz's in one more run of its")
    log("  own, as sampling slows a run that keeps both cores busy)")
    readahead = os.environ.get("KVIZ_ANALYSIS_READAHEAD") or "auto"
    log(f"  kviz: KVIZ_ANALYSIS_READAHEAD={readahead} (captures/analysis/readahead.py)")
    log(
        f"  targets for 1M packets (not asserted): ratio_vs_tshark >= 5, ratio_vs_pyshark >= 30, "
        f"peak RSS <= 300 MB; this run: {packets} packets"
    )
    if not_compiled:
        log(f"  no compiled figures: {not_compiled}")
    figures = {}
    for build, timing in builds.items():
        kviz_pps = packets / timing["seconds"]
        figures[build] = (f"ratio_vs_tshark={kviz_pps / tshark_pps:.2f} "
                          f"ratio_vs_pyshark={kviz_pps / pyshark_pps:.2f} "
                          f"peak_rss_mb={round(timing['rss_kb'] / 1024)}")
    if "compiled" in builds:
        speedup = builds["interpreted"]["seconds"] / builds["compiled"]["seconds"]
        log(f"interpreted: {figures['interpreted']}")
        log(f"compiled: {figures['compiled']} (x{speedup:.2f} the interpreted build)")
    # The last line: the build that runs where setup could compile it.
    log(figures["compiled" if "compiled" in builds else "interpreted"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
