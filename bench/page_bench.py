"""The real capture page of a big capture, through the real server: first paint in Chromium.

    .venv/bin/python bench/page_bench.py                           # bench/.cache/mixed-1000000
    .venv/bin/python bench/page_bench.py --capture big.pcapng --repeat 5

render_bench.py times the diagram's modules on the layout cache served as static files; this
times what a user opens: kviz's own daphne (kviz.serve) in embedded mode (SQLite and a data
directory of its own in a temporary directory, no Redis), a signed-in session, the capture's
page (`/captures/<id>/`, its template, the diagram's requests through Django). The capture is
imported as an upload and analysed by the runner as a worker does (its first layout included),
and so is a small corpus capture, the baseline measured in the same run: first paint is from
navigation start until the first screen's rows are drawn (`data-first-paint`), the median of
--repeat page loads each. Prints, last:

    page_first_paint_ms=A small_first_paint_ms=B ratio_vs_small=A/B

The target (issue 14, not asserted): the 1M-packet capture's page in under 2000 ms.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
SMALL = "dns-http/zeek_dns-search-suffix-nxdomain-then-http11-keepalive-8-conns.pcap"
IMPORT = """
import os, sys, django
django.setup()
from django.contrib.auth import get_user_model
from django.core.files import File
from captures.jobs import actions, runner
actions.queue = lambda task, capture_id: None  # analysed below, in this process
owner = get_user_model().objects.create_user("bench", password=sys.argv[1])
for number, path in enumerate(sys.argv[2:]):
    with open(path, "rb") as fp:
        capture = actions.upload_capture(owner, f"bench-{number}",
                                         [File(fp, name=os.path.basename(path))])
    assert runner.run(capture.id, "bench:1") == "completed", path
    print(capture.id, flush=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server ended ({server.returncode})")
        try:
            urllib.request.urlopen(url + "/login/", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not answer within 60 s")


def first_paints(browser, url: str, password: str, capture_ids: list[str],
                 repeat: int) -> list[float]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(url + "/login/")
    page.fill("input[name=username]", "bench")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    medians = []
    for capture_id in capture_ids:
        paints = []
        for _ in range(repeat):
            page.goto(f"{url}/captures/{capture_id}/")
            page.wait_for_selector("#diagram[data-first-paint]", timeout=120_000)
            paints.append(float(page.get_attribute("#diagram", "data-first-paint")))
        print(f"  {capture_id}: first paint {', '.join(f'{p:.0f}' for p in paints)} ms",
              flush=True)
        medians.append(statistics.median(paints))
    context.close()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capture", type=Path, default=CACHE / "mixed-1000000.pcapng")
    parser.add_argument("--small", type=Path, default=ROOT.parent / "shared" / "corpus" / SMALL)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    for path in (args.capture, args.small):
        if not path.exists():
            raise SystemExit(f"{path} is missing (bench/analyze_bench.py --packets 1000000 "
                             "makes the default one)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="kviz-page-bench-") as tmp:
        password = secrets.token_urlsafe(12)
        env = {**os.environ, "KVIZ_DATA_DIR": tmp, "REDIS_URL": "",
               "DJANGO_SETTINGS_MODULE": "kviz.settings",
               "DATABASE_URL": f"sqlite:///{tmp}/kviz.sqlite3",
               "KVIZ_MAX_UPLOAD_BYTES": str(max(args.capture.stat().st_size, 100 << 20) + 1),
               "SECRET_KEY": secrets.token_urlsafe(40)}
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        started = time.monotonic()
        imported = subprocess.run([python, "-c", IMPORT, password, str(args.small),
                                   str(args.capture)], cwd=ROOT, env=env, check=True,
                                  stdout=subprocess.PIPE, text=True)
        small_id, big_id = imported.stdout.split()
        print(f"imported and analysed (the worker's first layout included) in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([python, "-m", "kviz.serve", "-b", "127.0.0.1", "-p",
                                   str(port), "kviz.asgi:application"], cwd=ROOT,
                                  env={**env, "KVIZ_WEB_PORTS": str(port)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(url, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium)
                try:
                    small, big = first_paints(browser, url, password, [small_id, big_id],
                                              args.repeat)
                finally:
                    browser.close()
        finally:
            server.terminate()
            server.wait(10)
    print(f"page {args.capture.name}: first paint {big:.0f} ms (median of {args.repeat}); "
          f"the small capture's {small:.0f} ms; target < 2000 ms", flush=True)
    print(f"page_first_paint_ms={big:.0f} small_first_paint_ms={small:.0f} "
          f"ratio_vs_small={big / small:.2f}")


if __name__ == "__main__":
    main()
