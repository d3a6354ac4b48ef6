"""A worker asked to stop (SIGTERM, as `docker compose stop` or a rollout sends it) stops the
captures it runs first: they complete with their packets and analysis, and the worker exits
within a few seconds instead of being killed at the end of the grace period."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.lab import Traffic

from .conftest import wait_for
from .test_lab_capture import detail, start_lab, wait_running

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_stopping_completes_its_capture_and_exits_quickly(worker, lab, alice_client):
    capture_id = start_lab(alice_client, "lab-shutdown")
    wait_running(alice_client, capture_id)
    traffic = Traffic(lab)
    traffic.start()
    try:
        wait_for(lambda: detail(alice_client, capture_id)["counters"]["packets"] >= 10, 15,
                 what="packets before the shutdown")
        asked = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(15)
        took = time.monotonic() - asked
    finally:
        traffic.stop()
        worker.start()  # the suite's worker, for the tests after this one
    done = detail(alice_client, capture_id)
    assert done["status"] == "completed", done
    assert done["analysis"] and done["counters"]["packets"] >= 10
    assert any("stopping: its worker is shutting down" in line for line in done["log"])
    assert took < 5, f"the worker took {took:.1f} s to stop"
