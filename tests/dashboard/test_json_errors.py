"""Every error answer of the API is the documented JSON (`{"error": ...}`), never an HTML page:
for a database that cannot be reached, an endpoint that does not exist, and a failure nothing
caught; the pages keep Django's HTML."""

from __future__ import annotations

import contextlib
import socket

import pytest
from django.db import OperationalError, connection
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def database_unreachable():
    """Point this process' connection at a loopback port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # bound, never listening: connections are refused
        saved = dict(connection.settings_dict)
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(dead_port))
        try:
            with pytest.raises(OperationalError):  # the fault really is there
                connection.ensure_connection()
            yield
        finally:
            connection.close()
            connection.settings_dict.clear()
            connection.settings_dict.update(saved)


def test_an_unreachable_database_is_a_json_503_for_the_api_and_a_page_for_people(users):
    if connection.vendor != "postgresql":
        pytest.skip("a connection refused needs a network database")
    api, page = Client(raise_request_exception=False), Client(raise_request_exception=False)
    api.force_login(users["alice"])
    page.force_login(users["alice"])
    with database_unreachable():
        answer = api.get("/api/captures/")
        shown = page.get("/")
    assert answer.status_code == 503
    assert answer["Content-Type"] == "application/json"
    assert answer.json() == {"error": "the database cannot be reached; try again in a moment"}
    assert answer["Retry-After"] == "5"
    assert shown.status_code == 503 and shown["Content-Type"].startswith("text/html")
    assert Client().get("/api/captures/").status_code == 401  # and back once it is reachable


def test_an_unknown_api_path_is_a_json_404(alice_client):
    answer = alice_client.get("/api/no-such-thing/")
    assert answer.status_code == 404
    assert answer.json()["error"].startswith("no such API endpoint")


def test_the_favicon_is_found_where_browsers_ask_for_it(client):
    answer = client.get("/favicon.ico")
    assert answer.status_code == 301 and answer["Location"].endswith("/favicon.ico")
    assert answer["Location"] != "/favicon.ico"  # the static file, not a loop
