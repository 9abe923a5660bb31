"""The CLI's queue commands: ``taskmill queues`` and ``taskmill queue show|pause|resume|limit``.

Kept apart from ``_cli.py`` so each file stays readable; ``_cli.py`` adds these to its parser
and dispatches to the two handlers here.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from taskmill.client._client import Client
from taskmill.client._models import Queue
from taskmill.client._render import print_json, queue_detail, queues_table

EXIT_OK = 0


def _limit(text: str) -> int | None:
    """A ``queue limit`` value: a whole number, or ``none`` to remove the limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a limit: {text!r} (a whole number of tasks, or none)"
        ) from None


def add_queue_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Adds ``queues`` and ``queue`` to the ``taskmill`` subcommands.

    Args:
        commands: The subparsers of ``taskmill`` (``add_subparsers``' action).
        common: The parent parser with the options every command takes (``--json``).
    """
    commands.add_parser(
        "queues", parents=[common], help="list the queues: tasks, workers, pause and limit"
    )
    queue = commands.add_parser("queue", help="show, pause, resume or limit one queue")
    actions = queue.add_subparsers(dest="queue_action", required=True, metavar="ACTION")
    for name, text in (
        ("show", "show the queue"),
        ("pause", "hold the queue's tasks (they stay scheduled; running ones finish)"),
        ("resume", "let the queue's tasks be claimed again"),
    ):
        actions.add_parser(name, parents=[common], help=text).add_argument("name", metavar="NAME")
    limit = actions.add_parser(
        "limit",
        parents=[common],
        help="cap the queue's tasks dispatched or running at once, cluster-wide",
    )
    limit.add_argument("name", metavar="NAME")
    limit.add_argument("limit", metavar="N", type=_limit, help="a whole number, or none")


def queues_command(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    """``taskmill queues``: the table, or ``{"queues": [...]}``."""
    queues = client.queues()
    if args.json:
        print_json({"queues": [queue.raw for queue in queues]}, stdout)
    else:
        stdout.write(queues_table(queues))
    return EXIT_OK


def queue_command(
    client: Client, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    """``taskmill queue ACTION NAME``: does the action and prints the queue after it."""
    queue: Queue
    if args.queue_action == "pause":
        queue = client.pause_queue(args.name)
    elif args.queue_action == "resume":
        queue = client.resume_queue(args.name)
    elif args.queue_action == "limit":
        queue = client.set_queue_limit(args.name, args.limit)
    else:
        queue = client.queue(args.name)
    if args.json:
        print_json(queue.raw, stdout)
    else:
        stdout.write(queue_detail(queue))
    return EXIT_OK
