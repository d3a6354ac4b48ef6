"""Concurrency benchmark (issue 16): many users' captures and uploads at once.

The jobs: USERS users each start a live capture of SECONDS seconds (a lab pod, HTTP traffic
running), and UPLOADS uploads are analysed. Each job is timed from the row's `created` to its
`finished` (the worker's own timestamps).

1. serial: the jobs one after the other, each started when the previous one finished; the
   serial time is the sum of their durations (what a team waits with one capture at a time);
2. together: all of them started at once (one thread per user); the actual time is from the
   first `created` to the last `finished`.

`parallel_ratio` = serial time / actual time (target ≥ 4 for 5 captures + 3 uploads).

The stack is real and started as scripts/start.sh starts it: a capture worker
(`--pool=threads --concurrency=16` on the capture queue) and an analysis worker
(`--pool=prefork --concurrency=2` on the analysis queue), Redis, PostgreSQL (a database of its
own, created and dropped), and requests through Django's test client in this process (the
whole middleware and API, no daphne). Captures run in a network-namespace lab of its own
(captures.lab, prefix `kcb<pid>`), brought up and always taken down. Run as root from
anywhere:

    .venv/bin/python bench/concurrency_bench.py [--seconds 20] [--users 5] [--uploads 3]
        [--capture-pool threads] [--capture-concurrency 16]
        [--analysis-pool prefork] [--analysis-concurrency 2] [--upload-packets 20000]

`--capture-pool solo --analysis-queue same` is the old deployment (one capture at a time,
analyses on the capture queue), for comparison. Uploads are the first `--upload-packets`
packets of bench/.cache/mixed-200000.pcapng (analyze_bench.py records it) when it exists, cut
with editcap; else the corpus's skydive DNS + HTTP capture.

Last line: `parallel_ratio=X`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIXED = ROOT / "bench" / ".cache" / "mixed-200000.pcapng"
CORPUS_PCAP = (ROOT.parent / "shared" / "corpus" / "dns-http" /
               "skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap")
POD = "pod/default/ubuntu"
FINAL = ("completed", "failed", "interrupted")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument("--upload-packets", type=int, default=20000)
    parser.add_argument("--capture-pool", default="threads")
    parser.add_argument("--capture-concurrency", type=int, default=16)
    parser.add_argument("--analysis-pool", default="prefork")
    parser.add_argument("--analysis-concurrency", type=int, default=2)
    parser.add_argument("--analysis-queue", choices=("own", "same"), default="own",
                        help="'same': analyses on the capture queue, served by the capture "
                             "worker alone (the old deployment)")
    parser.add_argument("--database-url",
                        default=f"postgres://postgres@127.0.0.1:5432/kviz_conc_bench_{os.getpid()}")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--skip-serial", action="store_true",
                        help="only the run together (the ratio is then not printed)")
    return parser.parse_args()


def database(url: str, create: bool) -> None:
    from urllib.parse import urlparse

    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def upload_file(work: Path, packets: int) -> Path:
    if MIXED.exists() and shutil.which("editcap"):
        out = work / f"upload-{packets}.pcapng"
        subprocess.run(["editcap", "-r", str(MIXED), str(out), f"1-{packets}"], check=True)
        return out
    return CORPUS_PCAP


class Workers:
    def __init__(self, env: dict, work: Path, args):
        self.env, self.work, self.args = env, work, args
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        capture_queues = [self.env["KVIZ_QUEUE"]]
        specs = [("capture", self.args.capture_pool, self.args.capture_concurrency)]
        if self.args.analysis_queue == "own":
            specs.append(("analysis", self.args.analysis_pool, self.args.analysis_concurrency))
        for name, pool, concurrency in specs:
            queues = capture_queues if name == "capture" else [self.env["KVIZ_ANALYSIS_QUEUE"]]
            command = [sys.executable, "-m", "celery", "-A", "kviz", "worker", f"--pool={pool}",
                       *([f"--concurrency={concurrency}"] if pool != "solo" else []),
                       "-Q", ",".join(queues), "-n", f"{name}-bench@%h", "-l", "info",
                       "--without-gossip", "--without-mingle", "--without-heartbeat"]
            log = self.work / f"{name}-worker.log"
            with open(log, "ab") as out:
                self.processes.append(subprocess.Popen(command, cwd=ROOT, env=self.env,
                                                       stdout=out, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 60
            while b" ready." not in log.read_bytes():
                if time.monotonic() > deadline or self.processes[-1].poll() is not None:
                    raise RuntimeError(f"the {name} worker did not start:\n"
                                       + log.read_text(errors="replace")[-3000:])
                time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def worker_rss_mb(roots: list[int]) -> float:
    """Resident memory of the worker processes and their Python children (prefork's), not
    counting dumpcap and other programs they start (the same whatever the pool)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid
                 and child not in found]
    total = 0
    for pid in found:
        with contextlib.suppress(OSError):
            if not Path(f"/proc/{pid}/comm").read_text().startswith(("python", "celery")):
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class PeakRss(threading.Thread):
    def __init__(self, roots: list[int]):
        super().__init__(daemon=True)
        self.roots, self.peak, self.done = roots, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, worker_rss_mb(self.roots))


class Traffic(threading.Thread):
    """curl from the lab's client pod to the nginx Service every 0.2 s, until stopped."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab = lab
        self.done = threading.Event()

    def run(self) -> None:
        from captures.lab import scenarios

        while not self.done.is_set():
            with contextlib.suppress(Exception):
                scenarios.curl(self.lab, "-sI")
            self.done.wait(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(15)


def make_jobs(args, upload_path: Path) -> list[tuple[str, str, dict]]:
    """(user, kind, request body) per job: USERS captures, then UPLOADS uploads."""
    jobs = [(f"engineer{n}", "capture",
             {"name": f"bench-{n}", "target": {"kind": "lab", "target": POD},
              "filter": "tcp port 80 or udp port 53", "limits": {"seconds": args.seconds}})
            for n in range(args.users)]
    jobs += [(f"uploader{n}", "upload", {"name": f"upload-{n}", "path": upload_path})
             for n in range(args.uploads)]
    return jobs


def submit(client, kind: str, body: dict) -> str:
    import json

    from django.core.files.uploadedfile import SimpleUploadedFile

    if kind == "capture":
        response = client.post("/api/captures/", json.dumps(body),
                               content_type="application/json")
    else:
        response = client.post("/api/captures/", {"name": body["name"], "file": SimpleUploadedFile(
            body["path"].name, body["path"].read_bytes(), "application/octet-stream")})
    if response.status_code != 201:
        raise RuntimeError(f"{kind} refused: {response.status_code} {response.content[:300]}")
    return response.json()["id"]


def wait_final(ids: list[str], timeout: float) -> list:
    from django.db import connection

    from captures.models import Capture

    deadline = time.monotonic() + timeout
    while True:
        rows = list(Capture.objects.filter(id__in=ids))
        if len(rows) == len(ids) and all(r.status in FINAL for r in rows):
            connection.close()
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish: "
                               + ", ".join(f"{r.name}={r.status}" for r in rows))
        time.sleep(0.2)


def report(rows) -> None:
    for row in sorted(rows, key=lambda r: r.created):
        took = (row.finished - row.created).total_seconds()
        print(f"  {row.name:<12} {row.status:<10} {took:6.1f} s  packets={row.packets}"
              + (f"  error={row.error[:80]}" if row.error else ""))


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("run as root: the bench brings up a network-namespace lab", file=sys.stderr)
        return 2
    tag = f"kcb{os.getpid() % 100000}"
    work = Path(tempfile.mkdtemp(prefix="kviz-conc-bench-"))
    data = work / "data"
    data.mkdir()
    queue = f"{tag}-captures"
    env = {**os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": args.redis,
           "KVIZ_DATA_DIR": str(data), "KVIZ_QUEUE": queue,
           "KVIZ_ANALYSIS_QUEUE": queue if args.analysis_queue == "same" else f"{queue}-analysis",
           "KVIZ_LAB_PREFIX": tag, "KVIZ_CHANNELS_PREFIX": tag, "KVIZ_LIVE_PREFIX": f"{tag}:live:",
           "KVIZ_MAX_CAPTURES_PER_USER": "3", "SECRET_KEY": os.urandom(32).hex(),
           "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
           "DJANGO_SETTINGS_MODULE": "kviz.settings", "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)
    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic here
    database(args.database_url, create=True)
    lab = workers = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db import connection
        from django.test import Client

        from captures.access.grants import HOST_GROUP
        from captures.lab import Lab

        lab = Lab(tag, data / "lab")
        lab.up(sidecar_enabled=False)
        workers = Workers(env, work, args)
        workers.start()
        upload_path = upload_file(work, args.upload_packets)
        print(f"stack: capture worker --pool={args.capture_pool} "
              f"--concurrency={args.capture_concurrency}; "
              + (f"analysis worker --pool={args.analysis_pool} "
                 f"--concurrency={args.analysis_concurrency}" if args.analysis_queue == "own"
                 else "analyses on the capture queue")
              + f"; uploads: {upload_path.name} ({upload_path.stat().st_size} bytes)")

        group = Group.objects.get_or_create(name=HOST_GROUP)[0]
        jobs = make_jobs(args, upload_path)
        clients = {}
        for user_name, _kind, _body in jobs:
            user = get_user_model().objects.create_user(user_name)
            user.groups.add(group)
            clients[user_name] = Client()
            clients[user_name].force_login(user)
        connection.close()

        traffic = Traffic(lab)
        traffic.start()
        try:
            serial = None
            if not args.skip_serial:
                print("serial (one after the other):")
                rows = []
                for user_name, kind, body in jobs:
                    capture_id = submit(clients[user_name], kind, {**body,
                                        "name": f"s-{body['name']}"})
                    rows += wait_final([capture_id], args.seconds + 120)
                report(rows)
                serial = sum((r.finished - r.created).total_seconds() for r in rows)
                print(f"serial_s={serial:.1f}")

            print("together (all started at once):")
            ids: list[str] = []
            errors: list[BaseException] = []

            def one(user_name, kind, body):
                try:
                    ids.append(submit(clients[user_name], kind, body))
                except BaseException as exc:  # reported below
                    errors.append(exc)
                finally:
                    connection.close()

            rss = PeakRss([process.pid for process in workers.processes])
            rss.start()
            threads = [threading.Thread(target=one, args=job) for job in jobs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]
            rows = wait_final(ids, args.seconds * len(jobs) + 300)
            report(rows)
            actual = ((max(r.finished for r in rows) - min(r.created for r in rows))
                      .total_seconds())
            rss.done.set()
            print(f"actual_s={actual:.1f} workers_peak_rss_mb={rss.peak:.0f}")
        finally:
            traffic.stop()
        bad = [r.name for r in rows if r.status != "completed"]
        if bad:
            print(f"not completed: {', '.join(bad)}")
        if serial is not None:
            print(f"parallel_ratio={serial / actual:.2f}")
        return 0
    finally:
        if workers is not None:
            workers.stop()
        if lab is not None:
            with contextlib.suppress(Exception):
                lab.down()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        database(args.database_url, create=False)
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(args.redis)
            for pattern in (f"{tag}*", f"_kombu.binding*.{queue}*"):
                for key in client.scan_iter(pattern):
                    client.delete(key)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
