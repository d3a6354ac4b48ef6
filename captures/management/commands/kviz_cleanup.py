"""`python manage.py kviz_cleanup`: one retention pass (captures/jobs/retention.py).

Deletes the captures that finished more than KVIZ_RETENTION_DAYS ago and are not pinned, with
their files; sweeps capture directories left without a row; fills in the finding kinds of
captures analysed before the list could search them. Safe to run at any time and from several
places at once (each deletion is a race-safe, row-locked step). deploy/ runs it as a CronJob;
docker-compose.yml as a service that repeats it (`--every SECONDS`).
"""

import json
import signal
import sys
import time

from django.core.management.base import BaseCommand
from django.db import connection

from captures.jobs import retention

STOP_POLL_S = 0.2  # how soon a stop is seen while waiting for the next pass


class Command(BaseCommand):
    help = "Delete expired captures and their files; fill in missing finding kinds."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true",
                            help="only list the captures that would be deleted")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--every", type=int, default=0, metavar="SECONDS",
                            help="run again every SECONDS until stopped (SIGTERM)")

    def handle(self, *args, **options):
        if options["every"] <= 0:
            self.once(options)
            return
        # As PID 1 of a container, a process without a handler ignores SIGTERM. The handler
        # only sets a flag: one that set a threading.Event would take the Event's lock, and
        # deadlock when the signal lands while this thread holds it (inside Event.wait).
        stopped = []
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopped.append(True))
        while not stopped:
            try:
                self.once(options)
            except Exception as exc:  # the database away for a while: try again next time
                self.stderr.write(f"cleanup failed: {exc}")
            finally:
                connection.close()
            sys.stdout.flush()
            deadline = time.monotonic() + options["every"]
            while not stopped and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, STOP_POLL_S))

    def once(self, options):
        report = retention.cleanup(dry_run=options["dry_run"])
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        if options["dry_run"]:
            self.stdout.write(f"{len(report['expired'])} captures would be deleted")
            for capture_id in report["expired"]:
                self.stdout.write(f"  {capture_id}")
            return
        self.stdout.write(
            f"deleted {len(report['deleted'])} expired captures "
            f"({retention.size(report['freed_bytes'])}), swept {len(report['orphans'])} "
            f"orphaned directories, filled in the findings of {report['findings_filled']} "
            "captures")
