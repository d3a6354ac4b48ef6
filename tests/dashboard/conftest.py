"""Dashboard fixtures: users and the corpus. The real services (PostgreSQL, Redis, a Celery
worker) are suite-wide fixtures in tests/support/services.py, shared with the browser tests.
"""

from __future__ import annotations

import pytest

from tests.support.corpus import corpus_dir
from tests.support.services import (  # noqa: F401 - re-exported for the dashboard tests
    HEARTBEAT_TIMEOUT,
    QUEUE,
    REDIS_URL,
    ROOT,
    RUN_TAG,
    Worker,
    services_missing,
    wait_for,
)


@pytest.fixture
def users(transactional_db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from captures.access.grants import HOST_GROUP

    model = get_user_model()
    alice = model.objects.create_user("alice")  # may capture this host and its lab
    alice.groups.add(Group.objects.get_or_create(name=HOST_GROUP)[0])
    return {
        "alice": alice,
        "bob": model.objects.create_user("bob"),  # granted nothing
        "root": model.objects.create_user("root", is_staff=True),
    }


@pytest.fixture
def alice_client(users, client):
    client.force_login(users["alice"])
    return client


@pytest.fixture
def corpus():
    root = corpus_dir()
    if root is None:
        pytest.skip("no capture corpus found (shared/corpus beside the checkout, or KVIZ_CORPUS)")
    return root


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test's sockets get a channel layer of their own: channels_redis binds its locks to
    the event loop that first used them, and every test runs its sockets in a loop of its own
    (asyncio.run), so a lock left held by one test's closed loop must not reach the next."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()
