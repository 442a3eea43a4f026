"""A real S3 API for the tests: moto's server on 127.0.0.1, started and stopped here.

moto (`moto[server]`, a test dependency) implements what the engine relies on: conditional puts (`If-None-Match`,
`If-Match`, answered 412), SSE-S3 and SSE-KMS metadata, KMS keys, byte ranges and paged listings; delta-rs
commits through conditional puts against it with no lock configuration. The server logs one line per request,
which `requests()` counts.

Set TIMELAPSE_TEST_S3=http://host:port to run the same tests against another S3-compatible endpoint; buckets are
then created with unique names and left behind. The credentials come from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY then (moto accepts any).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3


class S3Server:
    def __init__(self, endpoint: str, log: Path | None = None, process: subprocess.Popen[bytes] | None = None):
        self.endpoint = endpoint
        self.log = log
        self.process = process
        self.key_id = os.environ.get("TIMELAPSE_TEST_S3_KEY", "testing")
        self.secret = os.environ.get("TIMELAPSE_TEST_S3_SECRET", "testing")
        self.client = self.boto("s3")

    def env(self) -> dict[str, str]:
        """The standard variables a `timelapse` process (or this one) needs to reach the server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
        }

    def boto(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
        )

    def bucket(self, name: str | None = None) -> str:
        """A new, empty bucket."""
        name = name or f"b-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix`."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        return dict(self.client.head_object(Bucket=bucket, Key=key))

    def kms_key(self) -> str:
        """A new KMS key id (moto's KMS, on the same port)."""
        return str(self.boto("kms").create_key(Description="timelapse test")["KeyMetadata"]["KeyId"])

    def requests(self) -> int:
        """How many requests the server has answered so far (from its log; 0 for an external endpoint)."""
        if self.log is None or not self.log.exists():
            return 0
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if '" ' in line and "HTTP/1" in line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_s3(workdir: Path) -> Iterator[S3Server]:
    """moto's S3 server on a free port of 127.0.0.1 for the duration (or TIMELAPSE_TEST_S3)."""
    external = os.environ.get("TIMELAPSE_TEST_S3")
    if external:
        yield S3Server(external)
        return
    port = _free_port()
    log = workdir / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended below whatever it started
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield S3Server(endpoint, log, process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
