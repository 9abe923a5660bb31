"""The ``taskmill`` command line: argument parsing, one function per subcommand, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from taskmill.client._client import Client
from taskmill.client._errors import (
    Conflict,
    NotFound,
    TaskmillClientError,
    ValidationError,
    WaitTimeout,
)
from taskmill.client._models import Task, TaskStatus
from taskmill.client._queue_cli import add_queue_commands, queue_command, queues_command
from taskmill.client._render import (
    outcome_line,
    parse_duration,
    parse_when,
    print_json,
    progress_bar,
    task_detail,
    tasks_table,
    workers_table,
)

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_ERROR = 4


class UsageError(Exception):
    """A problem with the command line that argparse cannot see (bad JSON, bad time...)."""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``taskmill`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="taskmill",
        description="Submit tasks to a taskmill scheduler and follow them.",
        epilog="Exit status: 0 ok, 1 task failed/cancelled/not finished in time, 2 usage, "
        "3 no such task or queue, 4 server, auth or network error.",
    )
    parser.add_argument(
        "--url", help="scheduler URL (default: $TASKMILL_URL, else http://127.0.0.1:8081)"
    )
    parser.add_argument("--token", help="bearer token (default: $TASKMILL_TOKEN)")
    parser.add_argument(
        "--json", action="store_true", dest="global_json", help="print machine-readable JSON"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    _add_submit(commands.add_parser("submit", parents=[common], help="submit a task"))

    status = commands.add_parser("status", parents=[common], help="show a task")
    status.add_argument("task_id", metavar="ID")

    wait = commands.add_parser("wait", parents=[common], help="wait until tasks finish")
    wait.add_argument("task_ids", metavar="ID", nargs="+")
    wait.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="give up after this long (exit status 1)",
    )

    listing = commands.add_parser("list", parents=[common], help="list tasks, newest first")
    listing.add_argument("--status", choices=[s.value for s in TaskStatus])
    listing.add_argument("--command", dest="filter_command", metavar="C")
    listing.add_argument("--queue", metavar="Q")
    listing.add_argument(
        "--limit", type=int, default=20, metavar="N", help="show at most N tasks (default 20)"
    )

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a task")
    cancel.add_argument("task_id", metavar="ID")

    commands.add_parser("workers", parents=[common], help="list the live workers")
    add_queue_commands(commands, common)
    return parser


def _add_submit(submit: argparse.ArgumentParser) -> None:
    submit.add_argument("task_command", metavar="COMMAND", help="the handler name")
    payload = submit.add_mutually_exclusive_group()
    payload.add_argument("--payload", metavar="JSON", help="JSON payload, or - to read stdin")
    payload.add_argument("--payload-file", metavar="FILE", help="file holding the JSON payload")
    when = submit.add_mutually_exclusive_group()
    when.add_argument(
        "--at",
        metavar="TIME",
        help="due time, e.g. 2030-01-31T09:00:00+01:00 (local time without an offset)",
    )
    when.add_argument(
        "--in",
        dest="delay",
        metavar="DURATION",
        type=_duration,
        help="due after this long, e.g. 30s, 5m, 1h30m",
    )
    submit.add_argument("--priority", type=int, default=0, help="higher runs first")
    submit.add_argument(
        "--max-attempts",
        type=int,
        default=1,
        metavar="N",
        help="execution attempts (1-100, default 1)",
    )
    submit.add_argument(
        "--timeout", type=_duration, metavar="DURATION", help="bound on one attempt's run time"
    )
    submit.add_argument("--queue", metavar="Q", help="queue name (default: default)")
    submit.add_argument("--idempotency-key", metavar="KEY", help="makes the submit repeatable")
    submit.add_argument("--wait", action="store_true", help="wait until the task finishes")


def run(argv: Sequence[str] | None, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """Runs the CLI and returns its exit status.

    Args:
        argv: The arguments after the program name; ``None`` means ``sys.argv[1:]``.
        stdin: Where ``--payload -`` reads from.
        stdout: Where results go.
        stderr: Where errors and the progress bar go.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = args.json or args.global_json
    handler = _HANDLERS[args.command_name]
    try:
        client = Client(url=args.url, token=args.token)
    except ValueError as exc:
        return _fail(stderr, f"bad --url: {exc}", EXIT_USAGE)
    try:
        with client:
            return handler(client, args, stdin, stdout, stderr)
    except UsageError as exc:
        return _fail(stderr, str(exc), EXIT_USAGE)
    except ValidationError as exc:
        return _fail(stderr, exc.message, EXIT_USAGE)
    except NotFound as exc:
        return _fail(stderr, exc.message, EXIT_NOT_FOUND)
    except (Conflict, WaitTimeout) as exc:
        return _fail(stderr, exc.message, EXIT_TASK_FAILED)
    except TaskmillClientError as exc:
        return _fail(stderr, exc.message, EXIT_ERROR)


def _fail(stderr: TextIO, message: str, code: int) -> int:
    stderr.write(f"taskmill: {message}\n")
    return code


def _payload(args: argparse.Namespace, stdin: TextIO) -> Any:
    if args.payload_file is not None:
        source = "--payload-file"
        try:
            if args.payload_file == "-":
                text = stdin.read()
            else:
                with open(args.payload_file, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.payload_file}: {exc.strerror}") from None
    elif args.payload is not None:
        source = "--payload"
        text = stdin.read() if args.payload == "-" else args.payload
    else:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def _submit(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    try:
        at = None if args.at is None else parse_when(args.at)
    except ValueError as exc:
        raise UsageError(f"--at: {exc}") from None
    task = client.submit(
        args.task_command,
        _payload(args, stdin),
        at=at,
        delay=args.delay,
        priority=args.priority,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        queue=args.queue,
        idempotency_key=args.idempotency_key,
    )
    if not args.wait:
        if args.json:
            print_json(task.raw, stdout)
        else:
            stdout.write(task.id + "\n")
        return EXIT_OK
    task = client.wait(task.id)
    _show_task(task, args.json, stdout)
    return _task_exit(task)


def _status(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    _show_task(client.get(args.task_id), args.json, stdout)
    return EXIT_OK


def _wait(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    show = len(args.task_ids) > 1 and stderr.isatty()

    def progress(done: int, total: int) -> None:
        stderr.write("\r" + progress_bar(done, total))
        stderr.flush()

    try:
        tasks = client.wait_many(
            args.task_ids, timeout=args.timeout, on_progress=progress if show else None
        )
    finally:
        if show:
            stderr.write("\n")
    if args.json:
        print_json({"tasks": [task.raw for task in tasks.values()]}, stdout)
    else:
        stdout.writelines(outcome_line(task) for task in tasks.values())
    return max(_task_exit(task) for task in tasks.values())


def _list(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    tasks: list[Task] = []
    pages = client.list(
        status=args.status,
        command=args.filter_command,
        queue=args.queue,
        page_size=min(args.limit, 1000),
    )
    for task in pages:
        tasks.append(task)
        if len(tasks) >= args.limit:
            break
    if args.json:
        print_json({"tasks": [task.raw for task in tasks]}, stdout)
    else:
        stdout.write(tasks_table(tasks))
    return EXIT_OK


def _cancel(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    task = client.cancel(args.task_id)
    if args.json:
        print_json(task.raw, stdout)
    elif task.status == TaskStatus.CANCELLED:
        stdout.write(f"{task.id} cancelled\n")
    else:
        stdout.write(f"{task.id} {task.status}: cancel requested\n")
    return EXIT_OK


def _workers(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    workers = client.workers()
    if args.json:
        print_json({"workers": [worker.raw for worker in workers]}, stdout)
    else:
        stdout.write(workers_table(workers))
    return EXIT_OK


def _show_task(task: Task, as_json: bool, stdout: TextIO) -> None:
    if as_json:
        print_json(task.raw, stdout)
    else:
        stdout.write(task_detail(task))


def _task_exit(task: Task) -> int:
    return EXIT_OK if task.succeeded else EXIT_TASK_FAILED


_Handler = Callable[[Client, argparse.Namespace, TextIO, TextIO, TextIO], int]

_HANDLERS: dict[str, _Handler] = {
    "submit": _submit,
    "status": _status,
    "wait": _wait,
    "list": _list,
    "cancel": _cancel,
    "workers": _workers,
    "queues": queues_command,
    "queue": queue_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``taskmill`` entry point; returns the exit status."""
    try:
        return run(argv, sys.stdin, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write("taskmill: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not worth a traceback. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
