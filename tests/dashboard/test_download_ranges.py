"""Downloads of a stored capture file from the local storage (the default): streamed, with HTTP
range requests: 206 and Content-Range for one range, 416 for one that starts past the end, the
whole file for what cannot be honoured (several ranges, a stale If-Range, nonsense)."""

from __future__ import annotations

import struct

import pytest

from captures.adapters import storage
from captures.models import Capture, Status
from captures.web.download import parse_range
from tests.support.stored import store_copy

pytestmark = pytest.mark.django_db


def pcap_of(path, packets: int):
    frames = b"".join(struct.pack("<IIII", 1_700_000_000 + n, 0, 60, 60) + bytes([n % 251]) * 60
                      for n in range(packets))
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + frames)
    return path


@pytest.fixture
def stored(django_user_model, settings, tmp_path, client):
    settings.DATA_DIR = tmp_path / "data"
    owner = django_user_model.objects.create_user("owner")
    client.force_login(owner)
    capture = Capture.objects.create(
        name="ranged", owner=owner, target_kind="upload", status=Status.COMPLETED,
        limit_seconds=60, limit_packets=1000, limit_bytes=10**7)
    source = pcap_of(tmp_path / "source.pcap", 2000)  # ~150 kB: several chunks
    store_copy(capture, source)
    return capture, source.read_bytes()


def _get(client, capture, **headers):
    response = client.get(f"/api/captures/{capture.id}/pcap", headers=headers)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def test_it_streams_the_whole_file_and_says_ranges_are_accepted(stored, client):
    capture, data = stored
    response, body = _get(client, capture)
    assert response.status_code == 200
    assert response.streaming
    assert body == data
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Length"] == str(len(data))
    assert response["Content-Disposition"] == 'attachment; filename="ranged.pcap"'


def test_it_answers_one_range_with_206(stored, client):
    capture, data = stored
    response, body = _get(client, capture, Range="bytes=1000-70000")
    assert response.status_code == 206
    assert body == data[1000:70001]
    assert response["Content-Range"] == f"bytes 1000-70000/{len(data)}"
    assert response["Content-Length"] == str(70001 - 1000)

    response, body = _get(client, capture, Range="bytes=140000-")
    assert (response.status_code, body) == (206, data[140000:])
    response, body = _get(client, capture, Range="bytes=-100")
    assert (response.status_code, body) == (206, data[-100:])
    response, body = _get(client, capture, Range=f"bytes=10-{len(data) * 2}")
    assert (response.status_code, body) == (206, data[10:])  # the end is clamped


def test_it_answers_a_range_past_the_end_with_416(stored, client):
    capture, data = stored
    response, _body = _get(client, capture, Range=f"bytes={len(data)}-")
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(data)}"


def test_it_sends_the_whole_file_for_what_it_does_not_honour(stored, client):
    capture, data = stored
    for header in ("bytes=0-1,5-9", "lines=1-2", "bytes=9-2"):
        response, body = _get(client, capture, Range=header)
        assert (response.status_code, body) == (200, data), header
    first, _ = _get(client, capture, Range="bytes=0-9")
    response, body = _get(client, capture, Range="bytes=0-9", If_Range=first["ETag"])
    assert (response.status_code, body) == (206, data[:10])
    response, body = _get(client, capture, Range="bytes=0-9", If_Range='"stale"')
    assert (response.status_code, body) == (200, data)


def test_a_missing_file_is_404(stored, client):
    capture, _data = stored
    capture.stored_files()[0].file.unlink()
    response, _body = _get(client, capture)
    assert response.status_code == 404


def test_the_local_default_keeps_files_where_they_always_were(stored, settings):
    capture, _data = stored
    row = capture.stored_files()[0]
    assert storage.is_local()
    assert storage.local_path(row.path) == row.file
    assert row.file.parent == settings.DATA_DIR / "captures" / str(capture.id)
    with storage.local_copies([row.path]) as (path,):
        assert path == row.file  # no copy is made


@pytest.mark.parametrize(("header", "size", "expected"), [
    ("bytes=0-0", 10, (0, 0)),
    ("bytes=5-", 10, (5, 9)),
    ("bytes=-3", 10, (7, 9)),
    ("bytes=-30", 10, (0, 9)),
    ("bytes=10-", 10, "unsatisfiable"),
    ("bytes=-0", 10, "unsatisfiable"),
    ("bytes=", 10, None),
    ("bytes=3-1", 10, None),
    ("", 10, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected
