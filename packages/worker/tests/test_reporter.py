"""The reporter folds a still-queued ``running`` report into the attempt's final report."""

from __future__ import annotations

import threading
from typing import Any

from taskmill.common.attempts import Report, ReportStatus
from taskmill.v1 import common_pb2, coordinator_pb2
from taskmill.worker.membership import Membership
from taskmill.worker.reporter import Reporter


class _Stub:
    """Records each ReportTaskStatuses request; ``hold`` makes calls wait until it is cleared."""

    def __init__(self) -> None:
        self.requests: list[coordinator_pb2.ReportTaskStatusesRequest] = []
        self.lock = threading.Lock()
        self.hold: threading.Event | None = None
        self.in_call = threading.Event()

    def ReportTaskStatuses(self, request: Any, timeout: float) -> Any:
        self.in_call.set()
        if self.hold is not None:
            self.hold.wait(30)
        with self.lock:
            self.requests.append(request)
        return coordinator_pb2.ReportTaskStatusesResponse(applied=len(request.reports))

    def sent(self) -> list[common_pb2.StatusReport]:
        with self.lock:
            return [report for request in self.requests for report in request.reports]


def _reporter() -> tuple[Reporter, _Stub]:
    stub = _Stub()
    membership = Membership()
    membership.set("w-1")
    return Reporter(stub, membership), stub  # type: ignore[arg-type]


def test_an_unsent_running_report_is_folded_into_the_final_one() -> None:
    reporter, stub = _reporter()
    reporter.add(Report("t-1", 1, ReportStatus.RUNNING, occurred_at=1000.25))
    reporter.add(Report("t-2", 1, ReportStatus.RUNNING, occurred_at=1000.5))
    reporter.add(Report("t-1", 1, ReportStatus.SUCCEEDED, occurred_at=1001.0, result_json="1"))
    reporter.start()
    try:
        assert reporter.flush(10.0)
    finally:
        reporter.stop()
    sent = [(r.task_id, r.status) for r in stub.sent()]
    assert sent == [
        ("t-2", common_pb2.TASK_STATUS_RUNNING),
        ("t-1", common_pb2.TASK_STATUS_SUCCEEDED),
    ]
    final = stub.sent()[1]
    assert final.HasField("started_at")
    assert final.started_at.ToNanoseconds() == 1000_250_000_000
    assert not stub.sent()[0].HasField("started_at")


def test_a_running_report_of_another_attempt_is_not_folded() -> None:
    reporter, stub = _reporter()
    reporter.add(Report("t-1", 1, ReportStatus.RUNNING, occurred_at=1000.0))
    reporter.add(Report("t-1", 2, ReportStatus.FAILED, occurred_at=1001.0))
    reporter.start()
    try:
        assert reporter.flush(10.0)
    finally:
        reporter.stop()
    assert [r.status for r in stub.sent()] == [
        common_pb2.TASK_STATUS_RUNNING,
        common_pb2.TASK_STATUS_FAILED,
    ]
    assert not stub.sent()[1].HasField("started_at")


def test_only_folded_places_are_acknowledged_without_a_call() -> None:
    reporter, stub = _reporter()
    reporter.add(Report("t-1", 1, ReportStatus.RUNNING, occurred_at=1000.0))
    reporter.add(Report("t-1", 1, ReportStatus.CANCELLED, occurred_at=1001.0))
    reporter.start()
    try:
        assert reporter.flush(10.0)
        assert reporter.pending() == set()
    finally:
        reporter.stop()
    assert [r.status for r in stub.sent()] == [common_pb2.TASK_STATUS_CANCELLED]
    assert stub.sent()[0].started_at.ToNanoseconds() == 1000_000_000_000


def test_reports_added_while_a_call_is_in_flight_are_sent_after_it() -> None:
    reporter, stub = _reporter()
    stub.hold = threading.Event()
    reporter.start()
    try:
        reporter.add(Report("t-1", 1, ReportStatus.RUNNING, occurred_at=1000.0))
        assert stub.in_call.wait(30)  # the first call is in flight, held by the stub
        reporter.add(Report("t-1", 1, ReportStatus.SUCCEEDED, occurred_at=1001.0))
        reporter.add(Report("t-2", 1, ReportStatus.RUNNING, occurred_at=1001.5))
        reporter.add(Report("t-2", 1, ReportStatus.FAILED, occurred_at=1002.0))
        flushed: list[bool] = []
        flusher = threading.Thread(target=lambda: flushed.append(reporter.flush(30)))
        flusher.start()
        stub.hold.set()
        flusher.join(30)
        assert flushed == [True]
        # Idle again: a report added now wakes the sending thread.
        reporter.add(Report("t-3", 1, ReportStatus.RUNNING, occurred_at=1003.0))
        assert reporter.flush(30)
    finally:
        reporter.stop()
    sent = [(r.task_id, r.status) for r in stub.sent()]
    assert sent == [
        ("t-1", common_pb2.TASK_STATUS_RUNNING),
        ("t-1", common_pb2.TASK_STATUS_SUCCEEDED),
        ("t-2", common_pb2.TASK_STATUS_FAILED),
        ("t-3", common_pb2.TASK_STATUS_RUNNING),
    ]
    # t-1's running report had been sent, so its final one carries no start of its own.
    assert not stub.sent()[1].HasField("started_at")
    assert stub.sent()[2].started_at.ToNanoseconds() == 1001_500_000_000
    assert stub.sent()[2].occurred_at.ToNanoseconds() == 1002_000_000_000
