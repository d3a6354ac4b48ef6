"""The network-namespace lab as a suite-wide fixture, where the worker and the web server
look for it (this run's KVIZ_LAB_PREFIX and data directory), and HTTP traffic to drive in it."""

from __future__ import annotations

import contextlib
import threading

import pytest

from tests.support.services import RUN_TAG


@pytest.fixture(scope="session")
def lab(data_dir):
    try:
        from tests.lab.conftest import lab_unavailable_reason
    except ImportError:
        pytest.skip("this checkout has no lab (captures/lab, tests/lab)")
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from captures.lab import Lab

    lab = Lab(RUN_TAG[:10], data_dir / "lab")
    try:
        try:
            lab.up(sidecar_enabled=False)
        except Exception as exc:  # any reason the lab cannot come up
            pytest.skip(f"the lab cannot come up here: {exc}")
        yield lab
    finally:
        lab.down()


class Traffic(threading.Thread):
    """curl from the lab's client pod to the nginx Service, over and over, until stopped."""

    def __init__(self, lab, interval: float = 0.2):
        super().__init__(daemon=True)
        self.lab, self.interval = lab, interval
        self.done = threading.Event()
        self.requests = 0

    def run(self):
        from captures.lab import scenarios

        while not self.done.is_set():
            with contextlib.suppress(Exception):  # a failed request is just fewer packets
                scenarios.curl(self.lab, "-sI")
                self.requests += 1
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join(15)


@pytest.fixture
def lab_traffic(lab):
    """lab_traffic(interval=0.2) starts HTTP traffic in the lab; stopped at teardown."""
    started = []

    def start(interval: float = 0.2) -> Traffic:
        traffic = Traffic(lab, interval)
        traffic.start()
        started.append(traffic)
        return traffic

    yield start
    for traffic in started:
        traffic.stop()
