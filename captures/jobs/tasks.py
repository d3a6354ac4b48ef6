"""Celery entry points, thin: load nothing, decide nothing, call the runner.

Without a broker (REDIS_URL empty: the embedded default) tasks run in a thread of the web
process instead, so a request that starts a capture returns at once.
"""

from __future__ import annotations

import os
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings
from django.db import connection

from captures.jobs import actions, runner


@shared_task(name="captures.run_capture", bind=True)
def run_capture(self, capture_id: str) -> str | None:
    try:
        return runner.run(capture_id, f"{self.request.hostname or 'local'}:{os.getpid()}")
    finally:
        actions.clean_cluster_orphans()


@shared_task(name="captures.analyze_capture")
def analyze_capture(capture_id: str) -> bool:
    return runner.analyse_interrupted(capture_id)


TASKS = {"run_capture": run_capture, "analyze_capture": analyze_capture}


def _in_thread(task, capture_id: str) -> None:
    try:
        task.apply(args=(capture_id,))
    finally:
        connection.close()  # this thread's own connection


def enqueue(task_name: str, capture_id) -> None:
    task = TASKS[task_name]
    if settings.CELERY_TASK_ALWAYS_EAGER:
        threading.Thread(target=_in_thread, args=(task, str(capture_id)), daemon=True,
                         name=f"kviz-{task_name}").start()
    else:
        task.delay(str(capture_id))


# Actions queue through this (they cannot import this module: it imports them). `enqueue` is
# looked up when work is queued, so a test that replaces tasks.enqueue sees it.
actions.queue = lambda task_name, capture_id: enqueue(task_name, capture_id)


@worker_ready.connect
def reap_after_restart(sender=None, **_kwargs) -> None:
    # A worker that starts cannot be running anything: captures it owned died with it.
    actions.reap_stale(restarted_worker=getattr(sender, "hostname", None))
    actions.clean_cluster_orphans()


@worker_shutting_down.connect
def stop_captures_on_shutdown(sender=None, **_kwargs) -> None:
    """A worker asked to stop (SIGTERM: `docker compose stop`, a rollout) first stops the
    captures it runs, as a user would: each runner drains, stores and analyses within about
    two seconds and the capture completes, instead of the worker being killed mid-capture at
    the end of the grace period and the capture read as interrupted. Celery calls this from
    its signal handler, in the thread that may be running the capture itself: the database
    work happens in a thread of its own, with its own connection."""
    hostname = sender if isinstance(sender, str) else getattr(sender, "hostname", None)
    if hostname:
        threading.Thread(target=_stop_own_captures, args=(hostname,), daemon=True,
                         name="kviz-shutdown").start()


def _stop_own_captures(hostname: str) -> None:
    try:
        actions.stop_worker_captures(hostname)
    finally:
        connection.close()
