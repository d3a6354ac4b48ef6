"""moto's standalone S3 server on loopback, the accepted stand-in for S3 or MinIO: started as a
process of its own, with an empty bucket, and optionally recording every request that reaches
it (moto's recorder, a JSON line per request), so a test counts real requests on the wire
(what reached the server), not calls to a patched client."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.services import free_port, wait_for

BUCKET = "kviz-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def client_credentials() -> dict:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": CREDENTIALS["AWS_DEFAULT_REGION"]}


@dataclass
class MotoS3:
    url: str
    client: object  # boto3's S3 client, for the test's own look at the bucket
    recording: Path | None

    def requests(self, method: str, key: str) -> int:
        """How many `method` requests for the object `key` of BUCKET reached the server
        (path-style addressing, as kviz's tests configure it). Needs `record=True`."""
        assert self.recording is not None, "started without record=True"
        if not self.recording.exists():
            return 0
        wanted = f"/{BUCKET}/{key}"
        count = 0
        for line in self.recording.read_text().splitlines():
            entry = json.loads(line)
            if entry["method"] == method and urlsplit(entry["url"]).path == wanted:
                count += 1
        return count


@contextlib.contextmanager
def moto_s3(directory: Path, record: bool = False) -> Iterator[MotoS3]:
    import boto3

    port = free_port()
    recording = directory / "requests.jsonl" if record else None
    env = {**os.environ, **CREDENTIALS}
    if recording is not None:
        env.update(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording))
    log = open(directory / "moto.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=directory)

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return process.poll() is not None and pytest.fail("moto server exited")

    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(answers, 30, what="moto's S3 server")
        client = boto3.client("s3", endpoint_url=url, **client_credentials())
        client.create_bucket(Bucket=BUCKET)
        yield MotoS3(url, client, recording)
    finally:
        process.terminate()
        process.wait(10)
        log.close()
