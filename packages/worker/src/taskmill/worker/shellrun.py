"""One ``shell`` program, contained: under a supervisor that kills its whole tree, output bounded.

The program runs below ``reaper.py`` (see there why a supervisor of its own, and its limits),
which the worker starts in a new session. The worker reads the program's stdout and stderr as
they come and keeps only the tail of each, so a program writing without end costs the worker a
bounded amount of memory; the supervisor's status pipe says when the program started, and how
it ended.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: ``shell`` keeps the last this many bytes of stdout and of stderr.
MAX_OUTPUT_BYTES = 64 * 1024
_CHUNK = 64 * 1024
_STATUS_BYTES = 1024  # a few short lines
_POLL_SECONDS = 0.1
#: How long the worker waits for the pipes to close once the supervisor is told to kill, or has
#: exited: past it, something the supervisor could not kill holds them, and the worker stops
#: reading rather than hold a slot for it.
_CLOSE_WAIT = 5.0
_REAPER = str(Path(__file__).with_name("reaper.py"))


class Tail:
    """The last ``limit`` bytes written to a stream, and how many bytes came before them."""

    def __init__(self, limit: int = MAX_OUTPUT_BYTES) -> None:
        self.limit = limit
        self.dropped = 0
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        """Appends ``chunk``, dropping what falls out of the bound."""
        self._data += chunk
        extra = len(self._data) - self.limit
        if extra > 0:
            del self._data[:extra]
            self.dropped += extra

    def text(self) -> tuple[str, int]:
        """The tail as UTF-8 text (bad bytes replaced) and the number of bytes dropped before it."""
        data, dropped = bytes(self._data), self.dropped
        if dropped:
            # The cut may fall inside a character: start at the next whole one.
            skip = 0
            while skip < min(3, len(data)) and 0x80 <= data[skip] < 0xC0:
                skip += 1
            data, dropped = data[skip:], dropped + skip
        return data.decode("utf-8", errors="replace"), dropped


@dataclass(frozen=True)
class Finished:
    """How a contained program ended.

    Attributes:
        exit_code: The program's exit code, negative for the signal that ended it; None when
            the supervisor killed it (asked to stop, or sent SIGTERM by someone else).
        stop_requested: Whether ``should_stop`` said so before the end.
        stdout: The tail of its standard output.
        stderr: The tail of its standard error.
    """

    exit_code: int | None
    stop_requested: bool
    stdout: Tail
    stderr: Tail


def run_contained(
    argv: list[str], env: Mapping[str, str], cwd: str | None, should_stop: Callable[[], bool]
) -> Finished:
    """Runs ``argv`` to its end, or until ``should_stop()``, and then kills what it started.

    Raises:
        OSError: The program could not be started (not found, not executable, a bad ``cwd``).
        RuntimeError: The supervisor ended without saying how the program did.
    """
    status_read, status_write = os.pipe()
    lc_ctype = "-" if "LC_CTYPE" not in env else "=" + env["LC_CTYPE"]
    supervisor = [_REAPER, str(status_write), str(os.getpid()), lc_ctype]
    # Started from the handler's thread, which stays in here until the supervisor has exited:
    # the supervisor's parent-death signal follows the thread that started it.
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", *supervisor, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            pass_fds=(status_write,),
            start_new_session=True,
        )
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(status_write)
    stdout, stderr, status = Tail(), Tail(), Tail(_STATUS_BYTES)
    with process, open(status_read, "rb", buffering=0) as status_pipe:
        assert process.stdout is not None and process.stderr is not None
        sinks = {
            process.stdout.fileno(): stdout,
            process.stderr.fileno(): stderr,
            status_pipe.fileno(): status,
        }
        try:
            asked = _pump(process, sinks, status_pipe.fileno(), should_stop)
        except BaseException:
            process.send_signal(signal.SIGTERM)  # the tree must not outlive a failure here
            raise
    return Finished(_exit_code(status, stderr, argv[0], asked), asked, stdout, stderr)


def _pump(
    process: subprocess.Popen[bytes],
    sinks: dict[int, Tail],
    status_fd: int,
    stop: Callable[[], bool],
) -> bool:
    """Reads every pipe to its end into its tail; returns whether ``stop()`` asked for the kill.

    Once the program has exited or the kill is asked, the supervisor should soon be done; past
    ``_CLOSE_WAIT`` something it could not kill holds on, and the worker SIGKILLs the supervisor
    and stops reading rather than hold the slot.
    """
    asked = False
    give_up_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd, sink in sinks.items():
            selector.register(fd, selectors.EVENT_READ, sink)
        while selector.get_map():
            for key, _ in selector.select(_POLL_SECONDS):
                chunk = os.read(key.fd, _CHUNK)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fd)
                if key.fd == status_fd and give_up_at is None and (b"exited" in chunk or not chunk):
                    give_up_at = time.monotonic() + _CLOSE_WAIT
            if give_up_at is None and stop():
                asked = True
                process.send_signal(signal.SIGTERM)  # the supervisor kills the tree, then exits
                give_up_at = time.monotonic() + _CLOSE_WAIT
            elif give_up_at is not None and time.monotonic() > give_up_at:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its session's group: the supervisor
                break
    return asked


def _exit_code(status: Tail, stderr: Tail, program: str, asked: bool) -> int | None:
    """The program's exit code from the supervisor's status lines; None if it was killed."""
    words = status.text()[0].split()
    if "error" in words:
        errno = int(words[words.index("error") + 1])
        raise OSError(errno, os.strerror(errno), program)
    if "exited" in words:
        return int(words[words.index("exited") + 1])
    # No last line after the kill was asked: SIGTERM came before the supervisor could take it
    # (nothing had started yet), or it did not exit in time and was SIGKILLed.
    if "killed" in words or asked:
        return None
    raise RuntimeError(f"the shell supervisor ended without a status: {stderr.text()[0][-500:]}")
