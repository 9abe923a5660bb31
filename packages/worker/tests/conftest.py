"""Fixtures for the worker's tests: a fake coordinator and workers wired to it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

SUPPORT = Path(__file__).parent / "support"
# The test handlers must be importable by name: process=True children import them again.
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

import worker_test_handlers  # noqa: E402, F401 - registers the test handlers
from worker_testkit import FakeCoordinator  # noqa: E402

from taskmill.v1 import worker_pb2_grpc  # noqa: E402
from taskmill.worker.app import Worker, create_worker  # noqa: E402
from taskmill.worker.settings import WorkerSettings  # noqa: E402


@pytest.fixture
def coordinator() -> Iterator[FakeCoordinator]:
    fake = FakeCoordinator().start()
    yield fake
    fake.stop()


@pytest.fixture
def start_worker(coordinator: FakeCoordinator) -> Iterator[Callable[..., Worker]]:
    """Starts a worker connected to the fake coordinator; closes it after the test."""
    workers: list[Worker] = []

    def start(tracer_provider: Any = None, **overrides: Any) -> Worker:
        options: dict[str, Any] = {
            "coordinator": coordinator.address,
            "host": "127.0.0.1",
            "advertise_address": "127.0.0.1",
            "concurrency": 2,
            "max_backoff": 0.2,
            "rpc_timeout": 5.0,
        }
        options.update(overrides)
        worker = create_worker(WorkerSettings(**options), tracer_provider=tracer_provider)
        workers.append(worker)
        worker.start()
        return worker

    yield start
    for worker in workers:
        worker.close()


@pytest.fixture
def worker_stub() -> Iterator[Callable[[Worker], worker_pb2_grpc.WorkerServiceStub]]:
    """Opens a WorkerService client to a worker, as a coordinator would."""
    channels: list[grpc.Channel] = []

    def open_stub(worker: Worker) -> worker_pb2_grpc.WorkerServiceStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{worker.port}")
        channels.append(channel)
        return worker_pb2_grpc.WorkerServiceStub(channel)

    yield open_stub
    for channel in channels:
        channel.close()
