"""What a worker does when it starts: every worker marks the captures it owned as interrupted
(it cannot be running them), but only a worker of the capture queue cleans up capture pods left
in the cluster. The analysis worker has no right to delete pods (deploy/kubernetes: no cluster
identity at all), and before this it tried, was refused and logged it at every start."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from captures.jobs import actions, tasks


def consumer(*queues: str):
    """What Celery's worker_ready sends: the consumer, whose task consumer lists its queues."""
    return SimpleNamespace(hostname="w@host", task_consumer=SimpleNamespace(
        queues=[SimpleNamespace(name=name) for name in queues]))


@pytest.fixture
def started(monkeypatch):
    done = []
    monkeypatch.setattr(actions, "reap_stale",
                        lambda restarted_worker=None: done.append(("reap", restarted_worker)))
    monkeypatch.setattr(actions, "clean_cluster_orphans", lambda: done.append(("pods", None)))
    return done


def test_the_capture_worker_reaps_and_cleans_up_pods(started, settings):
    tasks.reap_after_restart(sender=consumer(settings.CELERY_TASK_DEFAULT_QUEUE))
    assert started == [("reap", "w@host"), ("pods", None)]


def test_a_worker_of_both_queues_cleans_up_pods_too(started, settings):
    tasks.reap_after_restart(sender=consumer(settings.CELERY_TASK_DEFAULT_QUEUE,
                                             settings.KVIZ_ANALYSIS_QUEUE))
    assert ("pods", None) in started


def test_the_analysis_worker_only_reaps(started, settings):
    tasks.reap_after_restart(sender=consumer(settings.KVIZ_ANALYSIS_QUEUE))
    assert started == [("reap", "w@host")]
