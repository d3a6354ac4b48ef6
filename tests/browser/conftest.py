"""Browser fixtures: a running kviz (daphne + Celery worker on real PostgreSQL and Redis) and
headless Chromium driven by Playwright.

- `kviz_server`: the base URL of daphne serving kviz.asgi, sharing the test database, Redis,
  queue and data directory with the suite's worker (tests/support/services.py).
- `browser`: Debian's Chromium (`playwright install` cannot download a browser here).
- `make_user(username=None, password=None, staff=False, host=False)`: a committed user (`host`:
  in the group that may capture this host and its lab); its password is kept as
  `user.raw_password` for tests that sign in through the form.
- `signed_in_page(user)`: a Page in a fresh context holding that user's session.
- `anonymous_page()`: a Page in a fresh context with no session (share links, login).
- `upload_capture(path, user=None, name=None, wait=True)`: the id of a capture uploaded through
  the API, analysed when `wait` (completed).
- `screenshot(page, name)`: `test-artifacts/<name>-light.png` and `-dark.png`.
- `corpus_path(relative)`: a file of the shared capture corpus (skips when there is none).
- `lab`: the network-namespace lab, up for the session (skips without root);
  `lab_traffic(interval)` curls the nginx Service from the ubuntu pod until the test ends.
"""

from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path

import pytest

from tests.support.services import ROOT, WebServer, wait_for

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("KVIZ_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialing out, and this machine's
# closed network refuses it many times a second.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TIMEOUT_MS = 15_000
_names = itertools.count(1)


@pytest.fixture(scope="session")
def kviz_server(worker, worker_env, tmp_path_factory) -> str:
    server = WebServer(worker_env, tmp_path_factory.mktemp("web") / "daphne.log")
    server.start()
    yield server.url
    server.stop()


# Per module, not per session: while it lives, Playwright's loop runs on this thread, and any
# later test (outside tests/browser) that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (./scripts/setup.sh installs Debian's)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; Django would then refuse the
    # tests' own (synchronous) ORM calls. They never run inside that loop, so allow them.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        yield chromium
        chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def make_user(transactional_db):
    from django.contrib.auth import get_user_model

    def make(username: str | None = None, password: str | None = None, staff: bool = False,
             host: bool = False):
        from django.contrib.auth.models import Group

        from captures.access.grants import HOST_GROUP

        username = username or f"user{next(_names)}"
        password = password or secrets.token_urlsafe(12)
        user = get_user_model().objects.create_user(username, password=password,
                                                    is_staff=staff)
        if host:
            user.groups.add(Group.objects.get_or_create(name=HOST_GROUP)[0])
        user.raw_password = password
        return user

    return make


@pytest.fixture
def _contexts(browser):
    opened = []
    yield opened
    for context in opened:
        context.close()


@pytest.fixture
def anonymous_page(browser, kviz_server, _contexts):
    def new_page():
        context = browser.new_context(base_url=kviz_server, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        _contexts.append(context)
        return context.new_page()

    return new_page


@pytest.fixture
def signed_in_page(anonymous_page, kviz_server):
    from django.conf import settings
    from django.test import Client

    def new_page(user):
        # A real session row in the shared database, as the login view would make it.
        client = Client()
        client.force_login(user)
        page = anonymous_page()
        page.context.add_cookies([{
            "name": settings.SESSION_COOKIE_NAME, "url": kviz_server,
            "value": client.cookies[settings.SESSION_COOKIE_NAME].value}])
        return page

    return new_page


@pytest.fixture
def upload_capture(make_user):
    from django.test import Client

    from captures.models import Capture

    def upload(path, user=None, name: str | None = None, wait: bool = True) -> str:
        client = Client()
        client.force_login(user or make_user())
        with open(path, "rb") as fp:
            response = client.post("/api/captures/", {"name": name or f"up-{next(_names)}",
                                                      "file": fp})
        assert response.status_code == 201, response.content
        capture_id = response.json()["id"]
        if wait:
            wait_for(lambda: Capture.objects.get(id=capture_id).is_terminal, 60,
                     what=f"the analysis of {path}")
        return capture_id

    return upload


@pytest.fixture
def screenshot():
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, name: str) -> list[Path]:
        shots = []
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            path = ARTIFACTS / f"{name}-{scheme}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)
        page.emulate_media(color_scheme="light")
        return shots

    return take


@pytest.fixture
def corpus_path():
    from tests.analysis.conftest import corpus_dir

    def find(relative: str) -> Path:
        root = corpus_dir()
        if root is None or not (root / relative).is_file():
            pytest.skip(f"corpus file {relative} not found (shared/corpus or KVIZ_CORPUS)")
        return root / relative

    return find
