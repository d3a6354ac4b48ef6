"""API tokens for scripts: `kviz token USERNAME` prints one; a wrong one gets 401."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client

from captures.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)


def make_token(username: str) -> str:
    out = io.StringIO()
    call_command("kviz", "token", username, stdout=out)
    return out.getvalue().strip()


def test_it_prints_a_token_that_authenticates(users):
    token = make_token("alice")
    assert len(token) >= 43
    client = Client(enforce_csrf_checks=True)
    response = client.get("/api/captures/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response.json()["captures"] == []
    # Bearer requests need no CSRF token: no browser sends that header by itself.
    response = client.post("/api/captures/", {"name": "Bad Name"},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400


def test_it_stores_only_a_hash(users):
    token = make_token("alice")
    row = ApiToken.objects.get(user=users["alice"])
    assert token not in (row.token_hash, row.prefix * 2)
    assert row.token_hash != token


def test_a_wrong_token_gets_401(users):
    make_token("alice")
    client = Client()
    for header in ("Bearer nope", "Bearer ", "Bearer " + "x" * 5000):
        assert client.get("/api/captures/", HTTP_AUTHORIZATION=header).status_code == 401


def test_a_session_post_still_needs_csrf(users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["alice"])
    response = client.post("/api/captures/", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403


def test_an_unknown_user_gets_no_token(users):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        make_token("mallory")
