"""Fixtures shared by the test modules: the Kafka broker and the S3 server (one each per test session, i.e. per
pytest-xdist worker, started on first use); the hypothesis profiles; the Ray tests kept in one worker.

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

#: modules that start Ray: a local Ray, or a `ray start` cluster, which a `ray.init` elsewhere on the machine
#: would join and whose processes the failure tests count. pytest-xdist runs each group in one worker, so these
#: run one after another while the other worker runs the rest.
RAY_MODULES = {"test_scaleout", "test_scaleout_cluster", "test_scaleout_failures", "test_window_slicing"}
RAY_MODULES |= {"test_benchmarks_smoke"}
#: modules whose tests follow one another through a module-scoped fixture (the console's browser tests: a
#: savepoint made by one test is rolled back to by the next), so each runs whole, in order, in one worker.
ORDERED_MODULES = {"test_console_browser"}


# First: pytest-xdist reads the group markers in its own hook of the same name, so they must be there by then.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if module in RAY_MODULES:
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif module in ORDERED_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


def pytest_configure(config: pytest.Config) -> None:
    """Refuse pytest 9.2 with `--dist loadgroup`: its pytest-xdist workers drop the groups without a word
    (pytest-xdist#1386), so the Ray tests would share the machine's Ray and the ordered modules would run out of
    order, failing later and by chance."""
    if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} ignores xdist_group; install the pytest constraints.txt pins, or run -n 0"
        )


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
