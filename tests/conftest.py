"""Fixtures shared by the test modules: the Kafka broker and the S3 server (one each per test session, started on
first use); the hypothesis profiles.

Property tests name their thorough example count (`@settings(max_examples=examples(12))`, tests/helpers.py). The
default profile, `ci`, runs at most 5 examples of each (every example is a pipeline run: seconds each on CI's
2-core machine); `TIMELAPSE_HYPOTHESIS=thorough python -m pytest` runs each test's full count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=5)
settings.register_profile("thorough", max_examples=1_000)
settings.load_profile(os.environ.get("TIMELAPSE_HYPOTHESIS", "ci"))

if TYPE_CHECKING:
    from tests.kafka_broker import Broker
    from tests.s3_server import S3Server


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Kafka-protocol broker on 127.0.0.1 (tests/kafka_broker.py); each test creates its own topics."""
    from tests.kafka_broker import running_broker

    with running_broker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 API (moto's server) on 127.0.0.1 (tests/s3_server.py); each test creates its own bucket. Its
    `AWS_*` variables are set in this process for the session (engine.open, the Python API) and are what
    `s3.env()` hands to `timelapse` subprocesses."""
    from tests.s3_server import running_s3

    with running_s3(tmp_path_factory.mktemp("s3")) as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
