"""A capture's error text can name its target: a redacted link does not show it."""

from __future__ import annotations

import pytest
from django.test import Client

from captures.models import Capture

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "pod payments/card-vault-7f9c is gone"


@pytest.mark.parametrize("redacted", [False, True])
def test_a_redacted_link_does_not_show_the_capture_error(users, alice_client, redacted):
    capture = Capture.objects.create(
        name="failed", owner=users["alice"], target_kind="pod",
        target_spec={"target": "pod/payments/card-vault-7f9c"}, status="failed",
        limit_seconds=60, limit_packets=100, limit_bytes=10**6, error=SECRET)
    token = alice_client.post(f"/api/captures/{capture.id}/share/", {"redacted": redacted},
                              content_type="application/json").json()["token"]
    anonymous = Client()
    doc = anonymous.get(f"/api/share/{token}/").json()
    page = anonymous.get(f"/s/{token}/").content.decode()
    if redacted:
        assert "error" not in doc and SECRET not in page and "card-vault" not in page
    else:
        assert doc["error"] == SECRET and SECRET in page
