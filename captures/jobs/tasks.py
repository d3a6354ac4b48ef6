"""Celery entry points, thin: load nothing, decide nothing, call the runner.

Without a broker (REDIS_URL empty: the embedded default) tasks run in a thread of the web
process instead, so a request that starts a capture returns at once.
"""

from __future__ import annotations

import functools
import logging
import os
import threading

from celery import bootsteps, current_app, shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings
from django.db import connection

from captures.jobs import actions, runner
from captures.models import Capture, TargetKind

log = logging.getLogger(__name__)


def _closing_connection(run):
    """A task's database connection is closed when it ends. A worker runs several tasks at
    once in threads (--pool=threads), each with a connection of its own (Django's are per
    thread); one left open would idle in PostgreSQL until the thread's next task."""

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            connection.close()

    return wrapper


@shared_task(name="captures.run_capture", bind=True)
@_closing_connection
def run_capture(self, capture_id: str) -> str | None:
    try:
        return runner.run(capture_id, f"{self.request.hostname or 'local'}:{os.getpid()}")
    finally:
        actions.clean_cluster_orphans()


@shared_task(name="captures.analyse_upload", bind=True)
@_closing_connection
def analyse_upload(self, capture_id: str) -> str | None:
    # An upload is a run without recording: the runner goes straight to the analysis.
    return runner.run(capture_id, f"{self.request.hostname or 'local'}:{os.getpid()}")


@shared_task(name="captures.analyze_capture")
@_closing_connection
def analyze_capture(capture_id: str) -> bool:
    return runner.analyse_interrupted(capture_id)


@shared_task(name="captures.reanalyse_capture")
@_closing_connection
def reanalyse_capture(capture_id: str) -> bool:
    return runner.reanalyse(capture_id)


TASKS = {"run_capture": run_capture, "analyse_upload": analyse_upload,
         "analyze_capture": analyze_capture, "reanalyse_capture": reanalyse_capture}


def _in_thread(task, capture_id: str) -> None:
    try:
        task.apply(args=(capture_id,))
    finally:
        connection.close()  # this thread's own connection


def _route(task_name: str, capture_id) -> tuple[str, str]:
    """The task and queue for a piece of work. Live captures go to the capture queue
    (KVIZ_QUEUE), everything that only analyses to KVIZ_ANALYSIS_QUEUE, so an upload never
    waits behind live captures. Settings are read here, at send time."""
    if task_name == "run_capture" and Capture.objects.filter(
            id=capture_id, target_kind=TargetKind.UPLOAD).exists():
        task_name = "analyse_upload"
    if task_name == "run_capture":
        return task_name, settings.CELERY_TASK_DEFAULT_QUEUE
    return task_name, settings.KVIZ_ANALYSIS_QUEUE


def enqueue(task_name: str, capture_id) -> None:
    task_name, queue = _route(task_name, capture_id)
    task = TASKS[task_name]
    if settings.CELERY_TASK_ALWAYS_EAGER:
        threading.Thread(target=_in_thread, args=(task, str(capture_id)), daemon=True,
                         name=f"kviz-{task_name}").start()
    else:
        task.apply_async(args=(str(capture_id),), queue=queue)


# Actions queue through this (they cannot import this module: it imports them). `enqueue` is
# looked up when work is queued, so a test that replaces tasks.enqueue sees it.
actions.queue = lambda task_name, capture_id: enqueue(task_name, capture_id)


@worker_ready.connect
def reap_after_restart(sender=None, **_kwargs) -> None:
    # A worker that starts cannot be running anything: captures it owned died with it.
    actions.reap_stale(restarted_worker=getattr(sender, "hostname", None))
    if runs_captures(sender):
        actions.clean_cluster_orphans()


def runs_captures(consumer) -> bool:
    """Whether this worker takes live captures (the capture queue). Only such a worker cleans
    up capture pods in the cluster: the analysis worker has no right to delete pods (in
    deploy/kubernetes it has no cluster identity at all) and no capture that could leave one."""
    try:
        queues = {queue.name for queue in consumer.task_consumer.queues}
    except AttributeError:  # not a consumer we know: clean up, as every worker did before
        return True
    return settings.CELERY_TASK_DEFAULT_QUEUE in queues


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


class RequeueOnConnect(bootsteps.StartStopStep):
    """Each time the worker's consumer (re)connects to the broker (the worker starts, or Redis
    came back after a restart), captures still `queued` are queued again: a broker that lost
    its queue would otherwise leave them queued forever (actions.requeue_queued)."""

    def start(self, consumer) -> None:
        try:
            actions.requeue_queued()
        except Exception:  # the database may be away; the next (re)connect tries again
            log.warning("could not queue again the captures left queued", exc_info=True)
        finally:
            connection.close()


current_app.steps["consumer"].add(RequeueOnConnect)
