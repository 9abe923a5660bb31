"""Output a report cannot carry or the database cannot store fails its task, clearly, once, and
the worker goes on serving (issue 16, point 5)."""

from __future__ import annotations

import json
import threading

import bad_output_handlers
import pytest
from worker_testkit import assign_request, assignment

from taskmill.common.attempts import Report, ReportStatus
from taskmill.common.models import TaskError
from taskmill.v1 import coordinator_pb2
from taskmill.worker.execution import MAX_RESULT_BYTES, encode_result, failure, storable
from taskmill.worker.membership import Membership
from taskmill.worker.reporter import Reporter

LONE = bad_output_handlers.LONE_SURROGATE


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"name": f"a{LONE}"}, "contains a lone surrogate ('\\udcff' at character 10"),
        (["a\x00b"], "contains NUL"),
        ({"a\x00": 1}, "contains NUL"),
        (float("inf"), "is not finite"),
        ([1, float("-inf")], "is not finite"),
        ({"x": float("nan")}, "is not finite"),
        ({1, 2}, "not JSON-serialisable: Object of type set"),
        (_nested(100_000), "nested too deeply"),
    ],
)
def test_a_result_that_cannot_be_sent_or_stored_fails_naming_why(value, reason) -> None:
    outcome = encode_result(value)
    assert outcome.status is ReportStatus.FAILED
    assert outcome.error.type == "result_not_serializable"
    assert reason in outcome.error.message


def test_an_escaped_backslash_before_u0000_is_not_nul() -> None:
    for text in ["\\u0000", "\\\\u0000", "x\\u0000y"]:
        outcome = encode_result({"text": text})
        assert outcome.status is ReportStatus.SUCCEEDED, text
        assert json.loads(outcome.result_json) == {"text": text}
    assert encode_result("\\\x00").error.type == "result_not_serializable"


def test_the_size_limit_counts_utf8_bytes() -> None:
    chars = MAX_RESULT_BYTES // 2  # two bytes each, plus the quotes: just over the limit
    outcome = encode_result("é" * chars)
    assert outcome.error.type == "result_too_large"
    assert outcome.error.message == (
        f"the result is {2 * chars + 2} bytes of JSON, over the limit of {MAX_RESULT_BYTES}"
    )
    assert encode_result("e" * (MAX_RESULT_BYTES - 2)).status is ReportStatus.SUCCEEDED


def test_an_errors_text_is_made_storable() -> None:
    assert storable("plain é") == "plain é"
    assert storable(f"a{LONE}b\x00c") == "a\\udcffb\\x00c"
    try:
        raise OSError(f"cannot open {LONE}\x00")
    except OSError as exc:
        outcome = failure(exc)
    assert outcome.error.type == "OSError"
    assert outcome.error.message == "cannot open \\udcff\\x00"
    assert "cannot open \\udcff\\x00" in outcome.error.traceback
    for text in (outcome.error.type, outcome.error.message, outcome.error.traceback):
        text.encode()  # no lone surrogate left


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_an_exception_whose_str_raises_still_fails_the_task() -> None:
    outcome = failure(_BrokenStr())
    assert (outcome.error.type, outcome.error.message) == (
        "_BrokenStr",
        "<_BrokenStr whose str() raised>",
    )


# -- end to end: a real worker, the fake coordinator, real gRPC -------------------------------


def test_each_bad_output_fails_its_task_once_and_the_worker_goes_on(
    coordinator, start_worker, worker_stub
) -> None:
    worker = start_worker(concurrency=1, queue_size=10)
    worker_id = coordinator.wait_registered()
    expected = {
        "bad.lone_surrogate": ("result_not_serializable", "contains a lone surrogate"),
        "bad.lone_surrogate_in_process": ("result_not_serializable", "contains a lone surrogate"),
        "bad.nul": ("result_not_serializable", "contains NUL"),
        "bad.infinity": ("result_not_serializable", "is not finite"),
        "bad.large": ("result_too_large", f"over the limit of {MAX_RESULT_BYTES}"),
        "bad.raise_lone_surrogate": ("SurrogateError", "cannot open \\udcff.txt\\x00"),
    }
    tasks = [assignment(command, {"chars": MAX_RESULT_BYTES // 2}) for command in expected]
    after = assignment("echo", {"still": "serving"})
    worker_stub(worker).AssignTasks(assign_request(worker_id, *tasks, after))

    assert json.loads(coordinator.wait_final(after.task_id, timeout=60).result_json) == {
        "still": "serving"
    }
    for task in tasks:
        final = coordinator.wait_final(task.task_id)
        assert coordinator.statuses(task.task_id) == ["running", "failed"], task.command
        type_, text = expected[task.command]
        assert final.error.type == type_, (task.command, final.error)
        assert text in final.error.message, (task.command, final.error)


# -- the reporter: one report that cannot be built never holds up the others ------------------


class _Stub:
    def __init__(self) -> None:
        self.reports: list = []
        self.lock = threading.Lock()

    def ReportTaskStatuses(self, request, timeout):
        with self.lock:
            self.reports.extend(request.reports)
        return coordinator_pb2.ReportTaskStatusesResponse(applied=len(request.reports))


def test_a_report_that_cannot_be_built_is_replaced_and_the_batch_goes() -> None:
    stub = _Stub()
    membership = Membership()
    membership.set("w-1")
    reporter = Reporter(stub, membership)  # type: ignore[arg-type]
    reporter.add(
        Report("t-1", 1, ReportStatus.SUCCEEDED, 1.0, json.dumps(LONE, ensure_ascii=False))
    )
    reporter.add(Report("t-2", 1, ReportStatus.FAILED, 1.0, error=TaskError(LONE, LONE, LONE)))
    reporter.add(Report(f"t-{LONE}", 1, ReportStatus.CANCELLED, 1.0))  # can be nothing
    reporter.add(Report("t-4", 1, ReportStatus.SUCCEEDED, 1.0, "4"))
    reporter.start()
    try:
        assert reporter.flush(10.0)
    finally:
        reporter.stop()
    sent = {report.task_id: report for report in stub.reports}
    assert sorted(sent) == ["t-1", "t-2", "t-4"]
    assert sent["t-1"].error.type == "result_not_serializable"
    assert "the result could not be sent" in sent["t-1"].error.message
    assert (sent["t-2"].error.type, sent["t-2"].error.message) == ("\\udcff", "\\udcff")
    assert sent["t-4"].result_json == "4"
